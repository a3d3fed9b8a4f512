#![no_main]
//! `udpring::fuzzing::cmsg`: see its documentation.
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| udpring::fuzzing::cmsg(data));
