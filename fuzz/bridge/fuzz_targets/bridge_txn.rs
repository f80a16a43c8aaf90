#![no_main]
//! Fuzz target `bridge_txn`; the body lives in `meshlite_bridge::fuzz` (needs `DATABASE_URL`).

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_bridge::fuzz::fuzz(data);
});
