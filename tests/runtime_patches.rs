//! The runtime patches (vendor/glommio, listed in docs/architecture.md), each
//! checked against a real server: the patch has its effect, and nothing it
//! touches lost its guarantee.

mod common;

use std::io::Read;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// `strace -f -c -e trace=SYSCALLS` attached to `pid` while `load` runs; the
/// count of each syscall in the summary. `None` when strace is missing or
/// cannot attach (no ptrace permission): the caller skips, saying so.
fn count_syscalls(pid: i32, syscalls: &str, load: impl FnOnce()) -> Option<Vec<(String, u64)>> {
    let mut strace = match Command::new("strace")
        .args(["-f", "-qq", "-c", "-e", &format!("trace={syscalls}")])
        .args(["-p", &pid.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("SKIPPED: strace is not available ({e}); CI installs it");
            return None;
        }
    };
    // strace attaches to every thread before it reports anything; give it
    // time on a loaded machine, then check it is still there.
    std::thread::sleep(Duration::from_millis(500));
    if let Ok(Some(status)) = strace.try_wait() {
        let mut err = String::new();
        let _ = strace.stderr.take().map(|mut e| e.read_to_string(&mut err));
        eprintln!("SKIPPED: strace could not attach ({status}): {err}");
        return None;
    }
    load();
    // SIGINT detaches and prints the summary table.
    unsafe { libc::kill(strace.id() as i32, libc::SIGINT) };
    let mut summary = String::new();
    strace
        .stderr
        .take()
        .expect("stderr piped")
        .read_to_string(&mut summary)
        .expect("read strace's summary");
    let _ = strace.wait();
    // Rows: "% time  seconds  usecs/call  calls  [errors]  syscall".
    Some(
        summary
            .lines()
            .filter_map(|l| {
                let f: Vec<&str> = l.split_whitespace().collect();
                let name = f.last()?;
                let calls = f.get(3)?.parse().ok()?;
                (f.len() >= 5 && *name != "total").then(|| (name.to_string(), calls))
            })
            .collect(),
    )
}

/// Patch 1: a shard no longer calls membarrier() each time it parks. Each
/// unpipelined request below parks a shard at least once; before the patch
/// strace counted one membarrier per park (about 2 per request here).
#[test]
fn parking_a_shard_issues_no_membarrier() {
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2", "--durability", "async"]);
    let mut c = server.client();
    c.put(b"warm", b"up").unwrap();
    const REQUESTS: u64 = 500;
    let counted = count_syscalls(server.pid(), "membarrier,io_uring_enter", || {
        for i in 0..REQUESTS {
            c.ping().unwrap();
            c.put(format!("key-{i}").as_bytes(), b"v").unwrap();
            // Let the shards go idle so that every request wakes a parked one.
            std::thread::sleep(Duration::from_micros(200));
        }
    });
    let Some(counted) = counted else { return };
    let calls = |name: &str| {
        counted
            .iter()
            .find(|(n, _)| n == name)
            .map_or(0, |(_, c)| *c)
    };
    // The run was traced: the shards entered the ring for these requests.
    assert!(
        calls("io_uring_enter") >= REQUESTS,
        "strace saw too little to judge: {counted:?}"
    );
    assert!(
        calls("membarrier") < 10,
        "{} membarrier calls for {REQUESTS} requests: the park path issues one again ({counted:?})",
        calls("membarrier")
    );
}

/// Patch 1 replaced a process-wide barrier with fences on both sides of the
/// sleep handshake. A missed wake-up would show as a request that never
/// completes: a message sent to a shard just as it decides to park. Cross-shard
/// requests with pauses of random length between them hit that moment often;
/// each must complete, and promptly.
#[test]
fn cross_shard_messages_wake_a_parking_shard() {
    use rand::{Rng, SeedableRng};
    let dir = tempfile::tempdir().unwrap();
    let server = common::start_server(dir.path(), &["--shards", "2", "--durability", "async"]);
    let mut clients: Vec<_> = (0..4).map(|_| server.client()).collect();
    for c in &clients {
        c.set_timeout(Some(Duration::from_secs(20))).unwrap();
    }
    let mut rng = rand::rngs::StdRng::seed_from_u64(7);
    let mut slowest = Duration::ZERO;
    for round in 0..3_000u32 {
        let c = &mut clients[(round % 4) as usize];
        // MGET over several keys: always spans both shards (the keys hash to
        // both), so each request is a forward and a reply between cores.
        let keys: Vec<Vec<u8>> = (0..4)
            .map(|k| format!("k{}-{k}", round % 97).into_bytes())
            .collect();
        let refs: Vec<&[u8]> = keys.iter().map(|k| k.as_slice()).collect();
        let started = Instant::now();
        if round % 3 == 0 {
            let pairs: Vec<(&[u8], &[u8])> = refs.iter().map(|k| (*k, &b"v"[..])).collect();
            c.mput(&pairs).expect("MPUT across shards completes");
        } else {
            c.mget(&refs).expect("MGET across shards completes");
        }
        slowest = slowest.max(started.elapsed());
        let pause = rng.gen_range(0..60u64);
        if pause > 0 {
            std::thread::sleep(Duration::from_micros(pause));
        }
    }
    // A missed wake-up is found late, at the shard's next timer or message;
    // 5 s is far above any scheduling delay of a loaded 2-core machine.
    assert!(
        slowest < Duration::from_secs(5),
        "a cross-shard request took {slowest:?}: a wake-up was missed"
    );
}
