#![no_main]
//! See corekv::fuzzing::frames; inputs that matter are copied to
//! fuzz/regressions/frames/ and replayed by tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::fuzzing::frames(data));
