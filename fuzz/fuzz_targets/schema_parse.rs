#![no_main]
//! Fuzz target `schema_parse`; the body lives in `meshlite_core::schema::fuzz::schema_parse`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_core::schema::fuzz::schema_parse(data);
});
