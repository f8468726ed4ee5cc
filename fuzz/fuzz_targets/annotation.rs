#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| winipam_fuzz::annotation(data));
