#![no_main]
//! Fuzz target `txn_decode`; the body lives in `meshlite_core::protocol::fuzz_bodies::txn_decode`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::protocol::fuzz_bodies::txn_decode(data);
});
