#![no_main]
//! `udpring::fuzzing::frame`: see its documentation.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| udpring::fuzzing::frame(data));
