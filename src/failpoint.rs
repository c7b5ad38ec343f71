//! Crash points for tests of two-phase commit and recovery.
//!
//! `failpoint!("name")` aborts the process (no destructors, no flushes: what a
//! SIGKILL or power cut leaves) when the environment variable
//! `COREKV_FAILPOINT` is `name` or `name@N` (the Nth time the point is reached).
//! Compiled into debug builds only (which is what `cargo test` runs); in release
//! builds the macro expands to nothing, so production binaries cannot be made
//! to crash through the environment.

#[cfg(debug_assertions)]
pub fn hit(name: &str) {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static ARMED: OnceLock<Option<(String, u64)>> = OnceLock::new();
    static HITS: AtomicU64 = AtomicU64::new(0);
    let armed = ARMED.get_or_init(|| {
        let v = std::env::var("COREKV_FAILPOINT").ok()?;
        Some(match v.split_once('@') {
            Some((n, at)) => (n.to_string(), at.parse().unwrap_or(1)),
            None => (v, 1),
        })
    });
    if let Some((point, at)) = armed {
        if point == name && HITS.fetch_add(1, Ordering::SeqCst) + 1 == *at {
            #[allow(
                clippy::print_stderr,
                reason = "the process aborts on the next line: no logger would get to flush, \
                          and the test that armed the point reads the child's stderr"
            )]
            {
                eprintln!("failpoint {name} reached: aborting");
            }
            std::process::abort();
        }
    }
}

#[macro_export]
macro_rules! failpoint {
    ($name:literal) => {
        #[cfg(debug_assertions)]
        $crate::failpoint::hit($name);
    };
}
