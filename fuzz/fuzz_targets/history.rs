#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| foundation_testkit::linearizability::fuzzing::history(data));
