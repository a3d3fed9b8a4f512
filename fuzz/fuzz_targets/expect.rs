#![no_main]
//! `udpring_cli::fuzz::expect`: see its documentation.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| udpring_cli::fuzz::expect(data));
