#![no_main]
//! Fuzz target `frame_decode`; the body lives in `meshlite_core::protocol::fuzz_bodies::frame_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::protocol::fuzz_bodies::frame_decode(data);
});
