#![no_main]
//! See corekv::fuzzing::wal; inputs that matter are copied to
//! fuzz/regressions/wal/ and replayed by tests/fuzz_replay.rs.
libfuzzer_sys::fuzz_target!(|data: &[u8]| corekv::fuzzing::wal(data));
