//! Fuzz target `epoch_history`: runs `weir_storage::fuzz_checks::check_epoch_history` (the parser and its
//! properties; see that function's docs) on every input libFuzzer generates.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    weir_storage::fuzz_checks::check_epoch_history(data);
});
