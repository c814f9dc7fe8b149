#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| foundation_cluster::fuzzing::handshake_dialer(data));
