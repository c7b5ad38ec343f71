#![no_main]
//! See corekv::fuzzing::recovery; inputs that matter are copied to
//! fuzz/regressions/recovery/ and replayed by tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::fuzzing::recovery(data));
