#![no_main]
//! Fuzz target `record_merge`: the merge rules alone, in memory; the body lives in
//! `meshlite_core::convergence::record::fuzz`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::convergence::record::fuzz(data);
});
