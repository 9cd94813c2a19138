//! Fuzz target `batch`: runs `weir_proto::fuzz_checks::check_batch` (the parser and its properties;
//! see that function's docs) on every input libFuzzer generates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_proto::fuzz_checks::check_batch(data);
});
