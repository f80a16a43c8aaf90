#![no_main]
//! Fuzz target `rest_query`; the body lives in `meshlite_node::rest::fuzz::rest_query`.

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    meshlite_node::rest::fuzz::rest_query(data);
});
