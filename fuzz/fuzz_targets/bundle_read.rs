#![no_main]
//! Fuzz target `bundle_read`; the body lives in `meshlite_core::protocol::fuzz_bodies::bundle_read`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::protocol::fuzz_bodies::bundle_read(data);
});
