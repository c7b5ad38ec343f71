//! `corekv config check`, `corekv config show` and `corekv config doc`:
//! validate the effective configuration against this host, print it with the
//! source of each value, and print the settings table as docs/settings.md.
//!
//! Exit codes of `check`: 0 when `serve` would start and keep data safe (warnings
//! allowed), 1 when a problem would stop it or make its writes not durable.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::process::ExitCode;

use clap::{ArgMatches, Args, Subcommand};

use corekv::io::data_dir::{check_creatable, check_direct_io, recorded_shard_count, DataDirError};
use corekv::net::server::resolve_listen;

use super::settings::{markdown, resolve, ServeArgs, SETTINGS};

#[derive(Subcommand, Debug)]
pub enum ConfigCommand {
    /// Validate the configuration (file, environment, flags) against this host.
    Check(ConfigArgs),
    /// Print the effective configuration as TOML, with where each value came from.
    Show(ConfigArgs),
    /// Print the table of every setting (name, flag, variable, default,
    /// meaning) as Markdown: docs/settings.md is this output.
    Doc,
}

#[derive(Args, Debug)]
pub struct ConfigArgs {
    #[command(flatten)]
    pub serve: ServeArgs,
}

pub fn run(cmd: ConfigCommand, matches: &ArgMatches) -> ExitCode {
    let args = match &cmd {
        ConfigCommand::Check(args) | ConfigCommand::Show(args) => args,
        ConfigCommand::Doc => {
            print!("{}", markdown());
            return ExitCode::SUCCESS;
        }
    };
    let settings = match resolve(args.serve.clone(), matches) {
        Ok(s) => s,
        Err(problems) => {
            for p in problems {
                println!("problem: {p}");
            }
            return ExitCode::from(1);
        }
    };
    match cmd {
        ConfigCommand::Doc => ExitCode::SUCCESS,
        ConfigCommand::Show(_) => {
            // stderr: stdout stays a valid TOML file.
            for w in &settings.warnings {
                eprintln!("warning: {w}");
            }
            for s in SETTINGS {
                let source = settings.sources[s.name].name();
                match (s.access.get)(&settings.args) {
                    Some(value) => println!("{} = {value}  # {source}", s.name),
                    None => println!(
                        "# {} unset: {}  # {source}",
                        s.name,
                        s.default.unset_meaning()
                    ),
                }
            }
            ExitCode::SUCCESS
        }
        ConfigCommand::Check(_) => {
            let (problems, mut warnings) = check(&settings.args);
            warnings.splice(0..0, settings.warnings);
            for w in &warnings {
                println!("warning: {w}");
            }
            for p in &problems {
                println!("problem: {p}");
            }
            if problems.is_empty() {
                println!("ok: corekv serve would start with this configuration");
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
    }
}

/// Problems that would stop `serve`, and warnings about things that work but
/// cost performance.
pub fn check(args: &ServeArgs) -> (Vec<String>, Vec<String>) {
    let mut problems = args.validate().err().unwrap_or_default();
    let mut warnings = Vec::new();
    for (key, addr) in [
        ("listen", &args.listen),
        ("admin_listen", &args.admin_listen),
        ("resp_listen", &args.resp_listen),
    ] {
        if key != "listen" && addr == "off" {
            continue;
        }
        if let Err(e) = resolve_listen(addr) {
            problems.push(format!("{key} = {addr:?}: {} ({e}); {}", e.name(), e.fix()));
        }
    }
    if let Ok(listen) = resolve_listen(&args.listen) {
        let resp = match args.resp_listen.as_str() {
            "off" => None,
            addr => resolve_listen(addr).ok(),
        };
        if let Err(exposed) = protected_mode(args, listen, resp) {
            problems.push(format!(
                "{exposed}: INSECURE_LISTEN (not loopback, and no users_file); set --users-file, bind to 127.0.0.1, or pass --insecure-no-auth (docs/security.md)"
            ));
        }
    }
    if let Some(path) = &args.users_file {
        match corekv::io::users_file::load(path) {
            Err(e) => problems.push(format!("users_file: {} ({e})", e.name())),
            Ok(_) => {
                if let Some(mode) = corekv::io::users_file::loose_permissions(path) {
                    warnings.push(format!(
                        "users_file {} has mode {mode:o}: other local users may read its hashes; chmod 600 it",
                        path.display()
                    ));
                }
            }
        }
    }
    if let Some(files) = args.tls_files() {
        if let Err(e) = corekv::net::tls::server_config(&files) {
            problems.push(format!("{}: {e}", e.name()));
        }
    }
    check_data_dir(args, &mut problems, &mut warnings);
    problems.extend(args.connection_shards_at_start());
    if let Some(f) = &args.log_file {
        if let Err(e) = probe_log_file(f) {
            problems.push(format!(
                "log_file = {:?}: LOG_FILE_UNUSABLE ({e}); check the --log-file path and its permissions",
                f.display()
            ));
        }
    }
    check_io_uring(&mut problems, &mut warnings);
    check_memlock(args, &mut warnings);
    (problems, warnings)
}

/// Protected mode: `Err(address)` when a listener would be reachable from
/// other hosts without authentication and the operator did not say that is
/// intended (`insecure_no_auth`).
pub fn protected_mode(
    args: &ServeArgs,
    listen: SocketAddr,
    resp_listen: Option<SocketAddr>,
) -> Result<(), String> {
    if args.users_file.is_some() || args.insecure_no_auth {
        return Ok(());
    }
    let loopback = |a: &SocketAddr| a.ip().to_canonical().is_loopback();
    if !loopback(&listen) {
        return Err(format!("--listen {listen}"));
    }
    if let Some(resp) = resp_listen.filter(|a| !loopback(a)) {
        return Err(format!("--resp-listen {resp}"));
    }
    if args.admin_listen != "off" {
        // Unresolvable: AdminServer::start reports it with its own name.
        let resolved = args
            .admin_listen
            .to_socket_addrs()
            .map(|a| a.collect::<Vec<_>>());
        if let Ok(addrs) = resolved {
            if let Some(a) = addrs.iter().find(|a| !loopback(a)) {
                return Err(format!("--admin-listen {a}"));
            }
        }
    }
    Ok(())
}

/// Whether `serve` could open `path` for appending, found without creating
/// anything: an existing file must open for appending; a new one needs its
/// directory to exist and be writable.
pub fn probe_log_file(path: &Path) -> Result<(), String> {
    if path.exists() {
        return std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map(|_| ())
            .map_err(|e| e.to_string());
    }
    let parent = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(format!("directory {} does not exist", parent.display()));
    }
    let c =
        std::ffi::CString::new(parent.as_os_str().as_encoded_bytes()).map_err(|e| e.to_string())?;
    // SAFETY: access reads the NUL-terminated path only.
    if unsafe { libc::access(c.as_ptr(), libc::W_OK) } != 0 {
        return Err(format!(
            "directory {} is not writable: {}",
            parent.display(),
            std::io::Error::last_os_error()
        ));
    }
    Ok(())
}

/// The warning `serve` logs and `config check` prints when the data directory
/// is on tmpfs: it works, and nothing survives a reboot.
pub fn tmpfs_warning(dir: &Path) -> Option<String> {
    let probe_in = std::iter::successors(Some(dir), |p| p.parent())
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("."));
    is_tmpfs(probe_in).then(|| {
        format!(
            "data_dir = {:?} is on tmpfs: its contents vanish at reboot, so no acknowledged write \
             survives one; use a disk-backed filesystem for anything but tests",
            dir.display()
        )
    })
}

fn check_data_dir(args: &ServeArgs, problems: &mut Vec<String>, warnings: &mut Vec<String>) {
    let dir = &args.data_dir;
    // Probe where the data will live without creating anything.
    let probe_in = std::iter::successors(Some(dir.as_path()), |p| p.parent())
        .find(|p| p.is_dir())
        .unwrap_or(Path::new("."));
    // serve starts on tmpfs (with the same warning): so does check's "ok".
    warnings.extend(tmpfs_warning(dir));
    if let Err(e) = check_creatable(dir) {
        problems.push(format!(
            "data_dir = {:?}: {}: {}; {}",
            dir.display(),
            e.name(),
            e,
            e.fix()
        ));
    }
    if let Err(e) = check_direct_io(probe_in) {
        problems.push(format!(
            "data_dir = {:?}: {} ({e}); {}",
            dir.display(),
            e.name(),
            e.fix()
        ));
    }
    match recorded_shard_count(dir) {
        Ok(Some(stored)) => {
            if let Some(requested) = args.shards {
                if requested != stored {
                    problems.push(format!(
                        "shards = {requested}: SHARD_COUNT_MISMATCH, the data directory was created with {stored} shards"
                    ));
                }
            }
        }
        Ok(None) => {}
        Err(DataDirError::MetaCorrupt { detail, .. }) => {
            problems.push(format!("data_dir: DATA_DIR_META_CORRUPT: {detail}"))
        }
        // A meta file that cannot be read: the start says so, naming it;
        // check probed what it can above.
        Err(_) => {}
    }
}

fn check_io_uring(problems: &mut Vec<String>, warnings: &mut Vec<String>) {
    match std::fs::read_to_string("/proc/sys/kernel/io_uring_disabled").map(|s| s.trim().to_string()) {
        Ok(v) if v == "2" => problems.push("io_uring is disabled (kernel.io_uring_disabled = 2); corekv needs it: sysctl -w kernel.io_uring_disabled=0".into()),
        Ok(v) if v == "1" => warnings.push("kernel.io_uring_disabled = 1: only processes in the io_uring group (or root) may use io_uring".into()),
        _ => {}
    }
}

fn check_memlock(args: &ServeArgs, warnings: &mut Vec<String>) {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_MEMLOCK, &mut lim) } != 0
        || lim.rlim_cur == libc::RLIM_INFINITY
    {
        return;
    }
    let shards = args
        .shards
        .map_or_else(|| corekv::shard::runtime::usable_cpus().len(), usize::from);
    let config = args.engine_config();
    // Registered DMA buffers per shard, plus a margin for the rings themselves.
    let needed = (shards * (config.io_memory_bytes + 1024 * 1024)) as u64;
    if lim.rlim_cur < needed {
        warnings.push(format!(
            "memlock limit is {} KiB; {shards} shards want {} KiB for registered I/O buffers. corekv still runs \
             (glommio falls back to unregistered buffers) but each I/O costs more. Raise it: ulimit -l unlimited, \
             or LimitMEMLOCK=infinity in the systemd unit",
            lim.rlim_cur / 1024,
            needed / 1024
        ));
    }
}

fn is_tmpfs(path: &Path) -> bool {
    const TMPFS_MAGIC: i64 = 0x0102_1994;
    let Ok(c) = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()) else {
        return false;
    };
    // SAFETY: statfs reads the NUL-terminated path and writes only into `buf`.
    let mut buf: libc::statfs = unsafe { std::mem::zeroed() };
    unsafe { libc::statfs(c.as_ptr(), &mut buf) == 0 && buf.f_type as i64 == TMPFS_MAGIC }
}
