//! Reads the host the way an operator tuning a bare-metal NVMe machine would:
//! io_uring, the data directory's filesystem and device queue, CPUs, IRQs,
//! limits, memory settings. Each fact comes with the value corekv wants and why.
//!
//! Read-only: it never changes the host (tuning/apply.sh does that, on request).
//! A fact this machine does not expose is reported as "not available here",
//! never guessed.

use std::fs;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// How a fact compares with the recommendation.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but costs latency or throughput.
    Warn,
    /// corekv cannot run (or cannot be durable) like this.
    Fail,
    /// The host does not expose this fact (VM, container, missing driver).
    Unavailable,
}

impl Verdict {
    pub fn name(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::Warn => "warn",
            Verdict::Fail => "FAIL",
            Verdict::Unavailable => "n/a",
        }
    }
}

pub struct Fact {
    pub item: String,
    pub current: String,
    pub recommended: String,
    pub verdict: Verdict,
    pub why: String,
}

fn fact(
    item: &str,
    current: impl Into<String>,
    recommended: &str,
    verdict: Verdict,
    why: &str,
) -> Fact {
    Fact {
        item: item.into(),
        current: current.into(),
        recommended: recommended.into(),
        verdict,
        why: why.into(),
    }
}

fn read(path: impl AsRef<Path>) -> Option<String> {
    fs::read_to_string(path).ok().map(|s| s.trim().to_string())
}

const NA: &str = "not available here";

pub fn gather(data_dir: &Path) -> Vec<Fact> {
    let mut facts = Vec::new();
    io_uring_facts(&mut facts);
    data_dir_facts(data_dir, &mut facts);
    cpu_facts(&mut facts);
    irq_facts(&mut facts);
    limit_facts(&mut facts);
    memory_facts(&mut facts);
    facts
}

fn io_uring_facts(out: &mut Vec<Fact>) {
    let disabled = read("/proc/sys/kernel/io_uring_disabled");
    out.push(match disabled.as_deref() {
        Some("0") | None => fact(
            "kernel.io_uring_disabled",
            disabled.unwrap_or_else(|| "absent (enabled)".into()),
            "0",
            Verdict::Ok,
            "every shard runs its own io_uring ring",
        ),
        Some(v) => fact(
            "kernel.io_uring_disabled",
            v,
            "0",
            if v == "2" {
                Verdict::Fail
            } else {
                Verdict::Warn
            },
            "corekv needs io_uring; 1 restricts it to the io_uring group",
        ),
    });
    match io_uring::IoUring::new(8) {
        Ok(ring) => {
            let mut probe = io_uring::Probe::new();
            let probed = ring.submitter().register_probe(&mut probe);
            let ops: [(&str, u8); 6] = [
                ("Read", io_uring::opcode::Read::CODE),
                ("Write", io_uring::opcode::Write::CODE),
                ("Fsync", io_uring::opcode::Fsync::CODE),
                ("Fallocate", io_uring::opcode::Fallocate::CODE),
                ("Accept", io_uring::opcode::Accept::CODE),
                ("Send", io_uring::opcode::Send::CODE),
            ];
            match probed {
                Ok(()) => {
                    let missing: Vec<_> = ops
                        .iter()
                        .filter(|(_, c)| !probe.is_supported(*c))
                        .map(|(n, _)| *n)
                        .collect();
                    let current = if missing.is_empty() {
                        "all supported".to_string()
                    } else {
                        format!("missing: {}", missing.join(", "))
                    };
                    let verdict = if missing.is_empty() {
                        Verdict::Ok
                    } else {
                        Verdict::Fail
                    };
                    out.push(fact(
                        "io_uring opcodes (read, write, fsync, fallocate, accept, send)",
                        current,
                        "all supported",
                        verdict,
                        "the shard's disk and socket I/O go through these",
                    ));
                }
                Err(e) => out.push(fact(
                    "io_uring opcode probe",
                    format!("probe failed: {e}"),
                    "kernel >= 5.8",
                    Verdict::Warn,
                    "cannot tell which operations the kernel supports",
                )),
            }
        }
        Err(e) => out.push(fact(
            "io_uring ring setup",
            format!("failed: {e}"),
            "works",
            Verdict::Fail,
            "seccomp, a container profile or an old kernel blocks io_uring",
        )),
    }
}

/// The block device holding `path`, as its /sys/block/<dev> directory (the whole
/// disk, not a partition).
fn block_device(path: &Path) -> Option<PathBuf> {
    let existing = std::iter::successors(Some(path), |p| p.parent()).find(|p| p.exists())?;
    let dev = fs::metadata(existing).ok()?.dev();
    let (major, minor) = (libc::major(dev), libc::minor(dev));
    let sys = fs::canonicalize(format!("/sys/dev/block/{major}:{minor}")).ok()?;
    if sys.join("partition").exists() {
        sys.parent().map(Path::to_path_buf)
    } else {
        Some(sys)
    }
}

fn data_dir_facts(dir: &Path, out: &mut Vec<Fact>) {
    let existing = std::iter::successors(Some(dir), |p| p.parent())
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("."));
    match corekv::io::data_dir::check_direct_io(existing) {
        Ok(()) => out.push(fact(
            "O_DIRECT on the data directory",
            format!("supported ({})", existing.display()),
            "supported",
            Verdict::Ok,
            "data files bypass the page cache",
        )),
        Err(e) => out.push(fact(
            "O_DIRECT on the data directory",
            e.to_string(),
            "supported",
            Verdict::Fail,
            "corekv's files are O_DIRECT",
        )),
    }
    let Some(dev) = block_device(dir) else {
        out.push(fact(
            "data device",
            NA,
            "a local NVMe device",
            Verdict::Unavailable,
            "could not map the data directory to a block device",
        ));
        return;
    };
    let name = dev
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let q = dev.join("queue");
    let rotational = read(q.join("rotational"));
    out.push(fact(
        &format!("{name}: rotational"),
        rotational.clone().unwrap_or(NA.into()),
        "0",
        if rotational.as_deref() == Some("0") {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        "corekv's latency targets assume flash",
    ));
    let sched = read(q.join("scheduler"));
    let active = sched
        .as_deref()
        .and_then(|s| s.split('[').nth(1))
        .and_then(|s| s.split(']').next())
        .map(str::to_string);
    out.push(match active {
        Some(a) => fact(
            &format!("{name}: I/O scheduler"),
            a.clone(),
            "none",
            if a == "none" {
                Verdict::Ok
            } else {
                Verdict::Warn
            },
            "NVMe needs no reordering; a scheduler adds latency and a lock",
        ),
        None => fact(
            &format!("{name}: I/O scheduler"),
            NA,
            "none",
            Verdict::Unavailable,
            "",
        ),
    });
    let nr = read(q.join("nr_requests"));
    out.push(fact(
        &format!("{name}: nr_requests"),
        nr.clone().unwrap_or(NA.into()),
        ">= 1023",
        match nr.and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if n >= 1023 => Verdict::Ok,
            Some(_) => Verdict::Warn,
            None => Verdict::Unavailable,
        },
        "deep queues let many shards keep the device busy",
    ));
    let ra = read(q.join("read_ahead_kb"));
    out.push(fact(
        &format!("{name}: read_ahead_kb"),
        ra.clone().unwrap_or(NA.into()),
        "0-128",
        match ra.and_then(|n| n.parse::<u64>().ok()) {
            Some(n) if n <= 128 => Verdict::Ok,
            Some(_) => Verdict::Warn,
            None => Verdict::Unavailable,
        },
        "O_DIRECT reads skip read-ahead; large values waste memory for other files",
    ));
    let wc = read(q.join("write_cache"));
    let fua = read(q.join("fua"));
    out.push(fact(&format!("{name}: write cache / FUA"), format!("{} / fua={}", wc.as_deref().unwrap_or(NA), fua.as_deref().unwrap_or(NA)), "write through, or write back with a power-loss-protected cache", match wc.as_deref() { Some("write through") => Verdict::Ok, Some(_) => Verdict::Warn, None => Verdict::Unavailable }, "with a volatile write-back cache every fdatasync must flush it; enterprise NVMe with PLP reports write through"));
    let poll = read(q.join("io_poll"));
    out.push(fact(
        &format!("{name}: io_poll"),
        poll.clone().unwrap_or(NA.into()),
        "1 (nvme poll_queues > 0)",
        match poll.as_deref() {
            Some("1") => Verdict::Ok,
            Some(_) => Verdict::Warn,
            None => Verdict::Unavailable,
        },
        "polled completions cut interrupt latency for reads",
    ));
}

fn cpu_facts(out: &mut Vec<Fact>) {
    let govs: Vec<String> = fs::read_dir("/sys/devices/system/cpu")
        .map(|d| {
            d.flatten()
                .filter_map(|e| read(e.path().join("cpufreq/scaling_governor")))
                .collect()
        })
        .unwrap_or_default();
    out.push(if govs.is_empty() {
        fact(
            "CPU frequency governor",
            NA,
            "performance",
            Verdict::Unavailable,
            "no cpufreq driver (common in VMs)",
        )
    } else {
        let all_perf = govs.iter().all(|g| g == "performance");
        let mut distinct = govs.clone();
        distinct.sort();
        distinct.dedup();
        fact(
            "CPU frequency governor",
            distinct.join(","),
            "performance",
            if all_perf { Verdict::Ok } else { Verdict::Warn },
            "frequency ramps add tail latency",
        )
    });
    let smt = read("/sys/devices/system/cpu/smt/active");
    out.push(fact(
        "SMT (hyper-threading) active",
        smt.clone().unwrap_or(NA.into()),
        "0, or shards on one sibling per core",
        match smt.as_deref() {
            Some("0") => Verdict::Ok,
            Some(_) => Verdict::Warn,
            None => Verdict::Unavailable,
        },
        "two shards on sibling threads share a core's caches and ports",
    ));
    let isolated = read("/sys/devices/system/cpu/isolated").unwrap_or_default();
    out.push(fact(
        "isolated CPUs (isolcpus/nohz_full)",
        if isolated.is_empty() {
            "none".into()
        } else {
            isolated
        },
        "the shard CPUs",
        Verdict::Warn,
        "keeps the scheduler and other tasks off shard cores; pass them with --cpus",
    ));
}

fn irq_facts(out: &mut Vec<Fact>) {
    let Some(text) = read("/proc/interrupts") else {
        out.push(fact(
            "IRQ affinity",
            NA,
            "NIC and NVMe queues off shard CPUs or one queue per shard",
            Verdict::Unavailable,
            "",
        ));
        return;
    };
    let mut lines = Vec::new();
    for line in text.lines() {
        let lower = line.to_lowercase();
        if !(lower.contains("nvme")
            || lower.contains("eth")
            || lower.contains("mlx")
            || lower.contains("virtio") && lower.contains("input"))
        {
            continue;
        }
        let Some(irq) = line.split(':').next().map(str::trim) else {
            continue;
        };
        if irq.parse::<u32>().is_err() {
            continue;
        }
        let name = line.split_whitespace().last().unwrap_or("?");
        let aff = read(format!("/proc/irq/{irq}/smp_affinity_list")).unwrap_or(NA.into());
        lines.push(format!("{name}->{aff}"));
    }
    out.push(if lines.is_empty() {
        fact("IRQ affinity (NIC, NVMe queues)", "no NVMe or NIC queue IRQs found", "spread over non-shard CPUs", Verdict::Unavailable, "")
    } else {
        fact("IRQ affinity (NIC, NVMe queues)", lines.join(" "), "spread over non-shard CPUs, or one queue per shard CPU", Verdict::Warn, "interrupts landing on a shard core steal its time; check against --cpus (tuning/apply.sh --irq-cpus LIST --shard-cpus LIST moves them)")
    });
}

fn limit_facts(out: &mut Vec<Fact>) {
    let get = |res| {
        let mut l = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        // SAFETY: getrlimit writes only into `l`.
        (unsafe { libc::getrlimit(res, &mut l) } == 0).then_some(l.rlim_cur)
    };
    let show = |v: u64| {
        if v == libc::RLIM_INFINITY {
            "unlimited".to_string()
        } else {
            v.to_string()
        }
    };
    if let Some(v) = get(libc::RLIMIT_MEMLOCK) {
        let ok = v == libc::RLIM_INFINITY || v >= 512 << 20;
        out.push(fact("memlock limit (bytes)", show(v), "unlimited (LimitMEMLOCK=infinity)", if ok { Verdict::Ok } else { Verdict::Warn }, "io_uring registered buffers are locked memory; too little makes glommio fall back to slower I/O"));
    }
    if let Some(v) = get(libc::RLIMIT_NOFILE) {
        let ok = v == libc::RLIM_INFINITY || v >= 65536;
        out.push(fact(
            "open files limit",
            show(v),
            ">= 65536",
            if ok { Verdict::Ok } else { Verdict::Warn },
            "one descriptor per connection plus data files",
        ));
    }
}

fn memory_facts(out: &mut Vec<Fact>) {
    let thp = read("/sys/kernel/mm/transparent_hugepage/enabled");
    let active = thp
        .as_deref()
        .and_then(|s| s.split('[').nth(1))
        .and_then(|s| s.split(']').next())
        .map(str::to_string);
    out.push(fact(
        "transparent huge pages",
        active.clone().unwrap_or(NA.into()),
        "madvise or never",
        match active.as_deref() {
            Some("always") => Verdict::Warn,
            Some(_) => Verdict::Ok,
            None => Verdict::Unavailable,
        },
        "khugepaged compaction stalls show up as tail latency",
    ));
    let swaps = read("/proc/swaps")
        .map(|s| s.lines().count().saturating_sub(1))
        .unwrap_or(0);
    let swappiness = read("/proc/sys/vm/swappiness").unwrap_or(NA.into());
    out.push(fact(
        "swap",
        format!("{swaps} device(s), vm.swappiness={swappiness}"),
        "no swap, or swappiness <= 1",
        if swaps == 0 || swappiness.parse::<u32>().is_ok_and(|s| s <= 1) {
            Verdict::Ok
        } else {
            Verdict::Warn
        },
        "a swapped-out shard page turns a microsecond into milliseconds",
    ));
}
