#![no_main]
//! Fuzz target `merge_convergence`; the body lives in `meshlite_core::convergence::fuzz`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::convergence::fuzz(data);
});
