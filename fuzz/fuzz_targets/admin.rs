#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| foundation_cluster::fuzzing::admin(data));
