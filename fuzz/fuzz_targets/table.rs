#![no_main]
//! See corekv::fuzzing::table; inputs that matter are copied to
//! fuzz/regressions/table/ and replayed by tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::fuzzing::table(data));
