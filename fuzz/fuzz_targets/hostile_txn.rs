#![no_main]
//! Fuzz target `hostile_txn`; the body lives in `meshlite_core::hostile::fuzz`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::hostile::fuzz(data);
});
