#![no_main]
//! Fuzz target `session`; the body lives in `meshlite_core::protocol::fuzz_bodies::session`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::protocol::fuzz_bodies::session(data);
});
