//! `corekv diagnose`: one archive with what a support engineer asks for first.
//!
//! Collected (each file says how it was obtained, or why it could not be):
//! version.txt, config.toml (effective settings, secrets redacted), health.json
//! and metrics.txt (from the admin endpoint), server.txt (HELLO over the native
//! protocol), logs.txt (tail of --log-file), data_dir.txt (every file with its
//! size), system.txt (kernel, CPU, memory, disks, limits, io_uring, and the full
//! `tune check` table). Works against a stopped server too: what cannot be
//! reached is noted, never fatal.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{ArgMatches, Args};

use corekv::net::client::{Client, TlsOptions};

use super::hostfacts::gather;
use super::settings::{resolve, ServeArgs, SETTINGS};

#[derive(Args, Debug)]
pub struct DiagnoseArgs {
    /// Deprecated: the protocol address now comes from the server's own
    /// settings (`--listen`, COREKV_LISTEN or `listen` in --config); this
    /// overrides it, with a warning.
    #[arg(long, hide = true)]
    pub addr: Option<String>,
    /// Deprecated: as --addr, for `--admin-listen`.
    #[arg(long, hide = true)]
    pub admin_addr: Option<String>,
    /// Where to write the archive.
    #[arg(long)]
    pub out: PathBuf,
    /// The server's settings, exactly as given to `serve` (flags, COREKV_*
    /// variables, --config): the archive records them, and diagnose reaches
    /// the server at their `listen` and `admin_listen`.
    #[command(flatten)]
    pub serve: ServeArgs,
    /// With a users file: an admin user, to read /metrics (and /health when
    /// it is closed). The password never enters the archive.
    #[command(flatten)]
    pub credentials: super::user::Credentials,
    /// The server speaks TLS (its tls_cert_file is set): reach the admin
    /// endpoint (HTTPS) and the native listener trusting the CA
    /// certificate(s) in this PEM file, as `corekv cli --tls-ca-file`.
    /// (`--tls-cert-file` here is the server's own setting, so diagnose
    /// cannot present a client certificate to a server with
    /// tls_client_ca_file.)
    #[arg(long, env = "COREKV_TLS_CA_FILE")]
    pub tls_ca_file: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host part
    /// of the address).
    #[arg(long, env = "COREKV_TLS_SERVER_NAME", requires = "tls_ca_file")]
    pub tls_server_name: Option<String>,
}

/// Keys whose values must never leave the machine.
fn is_secret(key: &str) -> bool {
    ["password", "secret", "token", "credential", "private"]
        .iter()
        .any(|s| key.contains(s))
}

pub fn run(args: DiagnoseArgs, matches: &ArgMatches) -> ExitCode {
    let mut files: Vec<(String, String)> = Vec::new();
    files.push((
        "version.txt".into(),
        format!("corekv {}\n", env!("CARGO_PKG_VERSION")),
    ));

    let settings = resolve(args.serve.clone(), matches);
    let mut config =
        String::from("# effective settings as given to `corekv diagnose` (secrets redacted)\n");
    let serve = match &settings {
        Ok(s) => {
            for w in &s.warnings {
                let _ = writeln!(config, "# warning: {w}");
            }
            for row in SETTINGS {
                let key = row.name;
                let value = (row.access.get)(&s.args).map_or_else(
                    || format!("# unset: {}", row.default.unset_meaning()),
                    |v| v.to_string(),
                );
                let value = if is_secret(key) {
                    "\"<redacted>\"".to_string()
                } else {
                    value
                };
                let _ = writeln!(config, "{key} = {value}  # {}", s.sources[key].name());
            }
            s.args.clone()
        }
        Err(problems) => {
            let _ = writeln!(
                config,
                "# configuration problems:\n# {}",
                problems.join("\n# ")
            );
            args.serve.clone()
        }
    };
    files.push(("config.toml".into(), config));

    for (flag, given) in [("--addr", &args.addr), ("--admin-addr", &args.admin_addr)] {
        if given.is_some() {
            eprintln!(
                "warning: diagnose {flag} is deprecated: pass the server's own --listen / --admin-listen or --config"
            );
        }
    }
    let addr = args.addr.clone().unwrap_or_else(|| serve.listen.clone());
    let admin = args
        .admin_addr
        .clone()
        .unwrap_or_else(|| serve.admin_listen.clone());
    let mut missing = Vec::new();
    let health = if admin == "off" {
        missing.push("health.json and metrics.txt (admin_listen is off)".to_string());
        ("admin endpoint is off\n".to_string(), None)
    } else {
        let basic = match args.credentials.resolve() {
            Ok(c) => c,
            Err(e) => {
                eprintln!("CREDENTIALS_MISSING: {e}");
                return ExitCode::from(2);
            }
        };
        let tls = tls_options(&args, &admin);
        let (h, m) = (
            http_get(&admin, "/health", basic.as_ref(), tls.as_ref()),
            http_get(&admin, "/metrics", basic.as_ref(), tls.as_ref()),
        );
        if h.starts_with("could not fetch") {
            missing.push(format!(
                "health.json and metrics.txt (no admin endpoint at {admin})"
            ));
        }
        (h, Some(m))
    };
    files.push(("health.json".into(), health.0));
    if let Some(m) = health.1 {
        files.push(("metrics.txt".into(), m));
    }
    let server = hello(&addr, tls_options(&args, &addr).as_ref());
    if server.starts_with("could not reach") {
        missing.push(format!("server.txt (no corekv answered at {addr})"));
    }
    files.push(("server.txt".into(), server));
    files.push(("logs.txt".into(), log_tail(serve.log_file.as_deref())));
    files.push(("data_dir.txt".into(), listing(&serve.data_dir)));
    files.push(("system.txt".into(), system(&serve.data_dir)));
    let mut summary = format!(
        "corekv diagnostics bundle\nserver: listen={addr} admin={admin} data_dir={}\nfiles:\n",
        serve.data_dir.display()
    );
    for (name, body) in &files {
        let _ = writeln!(summary, "  {name} ({} bytes)", body.len());
    }
    if missing.is_empty() {
        summary.push_str("complete: the server answered on both addresses\n");
    } else {
        let _ = writeln!(summary, "INCOMPLETE, lacks:\n  {}", missing.join("\n  "));
    }
    files.insert(0, ("SUMMARY.txt".into(), summary));

    match write_archive(&args.out, &files) {
        Ok(()) if missing.is_empty() => {
            println!("wrote {} ({} files)", args.out.display(), files.len());
            ExitCode::SUCCESS
        }
        Ok(()) => {
            let tls_hint = if serve.tls_cert_file.is_some() && args.tls_ca_file.is_none() {
                " The server speaks TLS (tls_cert_file): pass --tls-ca-file with the CA that signed its certificate."
            } else {
                ""
            };
            eprintln!(
                "DIAGNOSE_INCOMPLETE: wrote {}, but it lacks: {}. Is the server running with these \
                 settings? Pass the same --config / --listen / --admin-listen as serve.{tls_hint}",
                args.out.display(),
                missing.join("; ")
            );
            ExitCode::from(1)
        }
        Err(e) => {
            eprintln!("DIAGNOSE_FAILED: cannot write {}: {e}", args.out.display());
            ExitCode::from(2)
        }
    }
}

/// The TLS options for reaching `addr`, as `corekv cli` builds them.
fn tls_options(args: &DiagnoseArgs, addr: &str) -> Option<TlsOptions> {
    super::cli::TlsClientArgs {
        tls_ca_file: args.tls_ca_file.clone(),
        tls_server_name: args.tls_server_name.clone(),
        ..Default::default()
    }
    .options(addr)
}

fn http_get(
    addr: &str,
    path: &str,
    basic: Option<&(String, Vec<u8>)>,
    tls: Option<&TlsOptions>,
) -> String {
    let authorization = basic.map_or(String::new(), |(user, password)| {
        let mut pair = format!("{user}:").into_bytes();
        pair.extend_from_slice(password);
        format!(
            "Authorization: Basic {}\r\n",
            corekv::net::auth::base64_encode(&pair)
        )
    });
    let request = format!("GET {path} HTTP/1.0\r\nHost: corekv\r\n{authorization}\r\n");
    let attempt = || -> std::io::Result<String> {
        let s = TcpStream::connect(addr)?;
        s.set_read_timeout(Some(Duration::from_secs(5)))?;
        s.set_write_timeout(Some(Duration::from_secs(5)))?;
        let mut raw = String::new();
        match tls {
            None => {
                let mut s = s;
                s.write_all(request.as_bytes())?;
                s.read_to_string(&mut raw)?;
            }
            Some(tls) => {
                // The same client configuration as the Rust client's.
                let config = corekv::net::tls::client_config(&tls.ca_file, None)
                    .map_err(std::io::Error::other)?;
                let name = corekv::net::tls::server_name(&tls.server_name)
                    .map_err(std::io::Error::other)?;
                let conn =
                    rustls::ClientConnection::new(config, name).map_err(std::io::Error::other)?;
                let mut s = rustls::StreamOwned::new(conn, s);
                s.write_all(request.as_bytes())?;
                s.flush()?;
                s.read_to_string(&mut raw)?;
            }
        }
        Ok(raw)
    };
    match attempt() {
        Ok(raw) => raw,
        Err(e) => {
            let scheme = if tls.is_some() { "https" } else { "http" };
            format!("could not fetch {scheme}://{addr}{path}: {e}\n")
        }
    }
}

fn hello(addr: &str, tls: Option<&TlsOptions>) -> String {
    let connected = match tls {
        None => Client::connect(addr),
        Some(tls) => Client::connect_tls_timeout(addr, tls, Duration::from_secs(5)),
    };
    let result = connected.and_then(|mut c| {
        c.set_timeout(Some(Duration::from_secs(5)))?;
        c.hello()
    });
    match result {
        Ok(h) => format!(
            "address: {addr}\nprotocol_version: {}\nshard_count: {}\nkey_bytes_max: {}\nvalue_bytes_max: {}\nserver_version: {}\n",
            h.protocol_version, h.shard_count, h.key_bytes_max, h.value_bytes_max, h.server_version
        ),
        Err(e) => format!("could not reach the server at {addr}: {}: {e}\n", e.name()),
    }
}

/// The last 4 MiB of the log file.
fn log_tail(path: Option<&Path>) -> String {
    let Some(path) = path else {
        return "no --log-file configured; server logs went to stderr (journalctl -u corekv)\n"
            .into();
    };
    match std::fs::read(path) {
        Ok(bytes) => {
            let start = bytes.len().saturating_sub(4 << 20);
            String::from_utf8_lossy(&bytes[start..]).into_owned()
        }
        Err(e) => format!("could not read {}: {e}\n", path.display()),
    }
}

fn listing(dir: &Path) -> String {
    fn walk(dir: &Path, out: &mut String, total: &mut u64) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            let _ = writeln!(out, "(cannot read {})", dir.display());
            return;
        };
        let mut entries: Vec<_> = entries.flatten().collect();
        entries.sort_by_key(|e| e.path());
        for e in entries {
            let path = e.path();
            match e.metadata() {
                Ok(m) if m.is_dir() => walk(&path, out, total),
                Ok(m) => {
                    *total += m.len();
                    let _ = writeln!(out, "{:>14} {}", m.len(), path.display());
                }
                Err(err) => {
                    let _ = writeln!(out, "{:>14} {} ({err})", "?", path.display());
                }
            }
        }
    }
    let mut out = format!("# files under {}\n", dir.display());
    let mut total = 0;
    walk(dir, &mut out, &mut total);
    let _ = writeln!(out, "# total {total} bytes");
    out
}

fn system(data_dir: &Path) -> String {
    let mut out = String::new();
    let cmd = |out: &mut String, program: &str, args: &[&str]| {
        let _ = writeln!(out, "$ {program} {}", args.join(" "));
        match std::process::Command::new(program).args(args).output() {
            Ok(o) => {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
            Err(e) => {
                let _ = writeln!(out, "(not available: {e})");
            }
        }
        out.push('\n');
    };
    cmd(&mut out, "uname", &["-a"]);
    cmd(&mut out, "nproc", &[]);
    cmd(&mut out, "df", &["-h", &data_dir.display().to_string()]);
    cmd(
        &mut out,
        "lsblk",
        &["-o", "NAME,SIZE,ROTA,SCHED,MODEL,MOUNTPOINT"],
    );
    for f in [
        "/proc/cpuinfo",
        "/proc/meminfo",
        "/proc/mounts",
        "/proc/sys/kernel/io_uring_disabled",
    ] {
        let _ = writeln!(out, "$ cat {f}");
        let text = std::fs::read_to_string(f).unwrap_or_else(|e| format!("(not available: {e})\n"));
        // One CPU's block is enough to identify it.
        let text = if f == "/proc/cpuinfo" {
            text.split("\n\n").next().unwrap_or("").to_string() + "\n"
        } else {
            text
        };
        out.push_str(&text);
        out.push('\n');
    }
    let _ = writeln!(out, "$ corekv tune check --data-dir {}", data_dir.display());
    for f in gather(data_dir) {
        let _ = writeln!(
            out,
            "{:<5} {} = {} (recommended {}) {}",
            f.verdict.name(),
            f.item,
            f.current,
            f.recommended,
            f.why
        );
    }
    out
}

fn write_archive(out: &Path, files: &[(String, String)]) -> std::io::Result<()> {
    let file = std::fs::File::create(out)?;
    let gz = flate2::write::GzEncoder::new(file, flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    for (name, body) in files {
        let mut header = tar::Header::new_gnu();
        header.set_size(body.len() as u64);
        header.set_mode(0o644);
        header.set_mtime(stamp);
        header.set_cksum();
        tar.append_data(
            &mut header,
            format!("corekv-diagnose/{name}"),
            body.as_bytes(),
        )?;
    }
    tar.into_inner()?.finish()?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::is_secret;

    #[test]
    fn secrets_are_recognised() {
        assert!(is_secret("tls_private_key"));
        assert!(is_secret("admin_token"));
        assert!(!is_secret("data_dir"));
        for key in super::SETTINGS.iter().map(|s| s.name) {
            // No current setting is secret; a new one that is must be caught here.
            assert!(!is_secret(key), "{key} would be redacted");
        }
    }
}
