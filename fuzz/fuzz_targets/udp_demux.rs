#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| ringsfu::fuzzing::udp_demux(data));
