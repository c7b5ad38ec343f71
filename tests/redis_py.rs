//! A maintained Redis client library against corekv and redis-server in the
//! same run (issue 20, "Tests"): starts a real corekv (2 shards) and a real
//! redis-server, then runs redis-py's test module tests/redis_py/test_compat.py,
//! which makes the same calls on both and asserts equal results.
//!
//! Needs python3 with redis-py (Debian's python3-redis) and redis-server.
//! When one is missing the test fails on CI (env CI set: .ci/run installs
//! them, so a missing one is a broken install step) and is SKIPPED with the
//! reason elsewhere. `COREKV_PYTHON` names the interpreter to use. A
//! difference between the servers fails the test with python's output.

use crate::common;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::resp::{start_redis, which};
use corekv::core::hash::shard_for_key;

/// Fail on CI, skip (with the reason) on a developer machine.
fn missing(what: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{what}; CI must install it (.ci/run's apt-get line)");
    }
    eprintln!("SKIPPED: {what} (CI installs it)");
}

/// A python3 that can `import redis`: `COREKV_PYTHON` if set (only that one),
/// else the one on PATH, else the system's (Debian's python3-redis installs
/// for /usr/bin/python3, which a pyenv or venv python3 earlier on PATH does
/// not see).
fn python_with_redis() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = match std::env::var_os("COREKV_PYTHON") {
        Some(p) => vec![PathBuf::from(p)],
        None => which("python3")
            .into_iter()
            .chain([PathBuf::from("/usr/bin/python3")])
            .collect(),
    };
    candidates.into_iter().find(|py| {
        Command::new(py)
            .args(["-c", "import redis"])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    })
}

/// Two keys that a 2-shard corekv places on different shards, so the
/// module's MULTI/EXEC transfer test crosses shards.
fn keys_on_two_shards() -> (String, String) {
    let first = "acct-0".to_string();
    let home = shard_for_key(first.as_bytes(), 2);
    let other = (1..1000)
        .map(|i| format!("acct-{i}"))
        .find(|k| shard_for_key(k.as_bytes(), 2) != home)
        .expect("some key of 1000 lands on the other shard");
    (first, other)
}

#[test]
fn redis_py_sees_the_same_replies_from_corekv_and_redis() {
    let Some(python) = python_with_redis() else {
        missing("python3 with the redis module (Debian: python3-redis) is not installed");
        return;
    };
    if which("redis-server").is_none() {
        missing("redis-server is not installed");
        return;
    }
    // DEBUG SLEEP is one of the compared commands; Redis 7 refuses DEBUG
    // unless enabled.
    let Some(redis) = start_redis(&["--enable-debug-command", "local"]) else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    // Async durability: the module compares replies, and one fdatasync per
    // write on a loaded 2-core machine would only make it slow.
    let server = common::start_server(dir.path(), &["--shards", "2", "--durability", "async"]);
    let resp = server.resp.expect("the RESP listener is on");
    let (a, b) = keys_on_two_shards();

    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new(&python)
        .current_dir(root)
        .args(["-m", "unittest", "-v", "tests/redis_py/test_compat.py"])
        .env("COREKV_PORT", resp.port().to_string())
        .env("REDIS_PORT", redis.addr.port().to_string())
        .env("COREKV_SHARD_KEYS", format!("{a},{b}"))
        // The module's own switches come from the caller only.
        .env_remove("COREKV_PY_SELF_CHECK")
        .env("PYTHONDONTWRITEBYTECODE", "1")
        .output()
        .expect("run python3 -m unittest");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    eprintln!("{text}");
    assert!(
        out.status.success(),
        "redis-py's test module failed against corekv (COREKV_PORT) and redis-server:\n{text}"
    );
    // unittest prints "OK" (or "OK (skipped=N)") last: the run happened.
    assert!(text.contains("\nOK"), "{text}");
    assert!(
        !text.contains("Ran 0 tests"),
        "no test ran (module not found?):\n{text}"
    );
    let (_, stderr) = server.stop();
    assert!(
        !stderr.contains("panicked"),
        "corekv panicked during the run:\n{stderr}"
    );
}
