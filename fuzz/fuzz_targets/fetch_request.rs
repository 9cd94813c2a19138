//! Fuzz target `fetch_request`: runs `weir_proto::fuzz_checks::check_fetch_request` (the parser and its properties;
//! see that function's docs) on every input libFuzzer generates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_proto::fuzz_checks::check_fetch_request(data);
});
