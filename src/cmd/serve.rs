//! `corekv serve`: start the engine and the network server on every shard.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::ArgMatches;

use corekv::net::admin::{AdminServer, AdminTls};
use corekv::net::auth::{AdminAuth, UsersHandle};
use corekv::net::server::{reserve_listen, serve_shard, ServerConfig};
use corekv::shard::runtime::telemetry::Telemetry;
use corekv::shard::{Engine, ShardExit};

use super::settings::{resolve, ServeArgs};

pub fn run(args: ServeArgs, matches: &ArgMatches) -> ExitCode {
    let (args, deprecated) = match resolve(args, matches)
        .and_then(|s| s.args.validate().map(|()| (s.args, s.warnings)))
    {
        Ok(a) => a,
        Err(problems) => {
            return startup_failed(
                "CONFIG_INVALID",
                &problems.join("\n  "),
                "correct the settings named above",
            )
        }
    };
    if let Err(e) = init_logging(&args.log_format, args.log_file.as_deref()) {
        return startup_failed(
            "LOG_FILE_UNUSABLE",
            &e,
            "check the --log-file path and its permissions",
        );
    }
    for w in deprecated {
        tracing::warn!("{w}");
    }
    if let Some(w) = super::config::tmpfs_warning(&args.data_dir) {
        tracing::warn!("{w}");
    }
    // Held until every shard listens, so nobody takes the port during recovery.
    let reservation = match reserve_listen(&args.listen) {
        Ok(r) => r,
        Err(e) => return startup_failed(e.name(), &e.to_string(), e.fix()),
    };
    let listen = reservation.addr;
    let users = match &args.users_file {
        None => None,
        Some(path) => match corekv::io::users_file::load(path) {
            Ok(u) => {
                if let Some(mode) = corekv::io::users_file::loose_permissions(path) {
                    tracing::warn!(
                        "users file {} has mode {mode:o}: other local users may read its hashes; chmod 600 it",
                        path.display()
                    );
                }
                if u.users.is_empty() {
                    tracing::warn!(
                        "users file {} has no users: nobody can authenticate (add one with `corekv user add`)",
                        path.display()
                    );
                }
                Some(Arc::new(UsersHandle::new(u)))
            }
            Err(e) => {
                return startup_failed(
                    e.name(),
                    &e.to_string(),
                    "create it with `corekv user add --users-file PATH NAME --role admin`, or fix the line named",
                )
            }
        },
    };
    // The RESP port is held like the native one (see `ListenReservation`).
    let resp_reservation = if args.resp_listen == "off" {
        None
    } else {
        match reserve_listen(&args.resp_listen) {
            Ok(r) => Some(r),
            Err(e) => return startup_failed(e.name(), &format!("RESP listener: {e}"), e.fix()),
        }
    };
    let resp_listen = resp_reservation.as_ref().map(|r| r.addr);
    if let Err(exposed) = super::config::protected_mode(&args, listen, resp_listen) {
        return startup_failed(
            "INSECURE_LISTEN",
            &format!("{exposed} is not a loopback address and no users_file is set: anyone who can reach it could read, write and back up everything"),
            "set --users-file (see docs/security.md), bind to 127.0.0.1, or pass --insecure-no-auth if the network itself is trusted",
        );
    }
    // Built once here and shared by every shard; a file that does not load
    // stops the start (never a silent fallback to plaintext).
    let tls = match args.tls_files() {
        None => None,
        Some(files) => match corekv::net::tls::TlsHandle::load(files) {
            Ok(handle) => {
                let files = handle.files();
                if let Some(mode) = corekv::io::users_file::loose_permissions(&files.key) {
                    tracing::warn!(
                        "TLS key file {} has mode {mode:o}: other local users may read it; chmod 600 it",
                        files.key.display()
                    );
                }
                tracing::info!(
                    cert = %files.cert.display(),
                    client_certificates = files.client_ca.is_some(),
                    "the native, RESP and admin listeners speak TLS 1.2/1.3 only"
                );
                Some(Arc::new(handle))
            }
            Err(e) => return startup_failed(e.name(), &e.to_string(), e.fix()),
        },
    };
    let config = args.engine_config();
    // Process-wide: shared by every shard's listeners and the admin endpoint.
    let refusals = corekv::net::admission::Refusals::new();
    let telemetry = Telemetry::new();
    let server = Arc::new(ServerConfig {
        listen,
        resp_listen,
        value_bytes_max: args.value_bytes_max,
        connections_per_shard_max: args.connections_per_shard_max,
        connections_per_source: corekv::net::admission::SourceLimits::new(
            args.connections_per_source_max,
        ),
        refusals: refusals.clone(),
        frame_timeout: Duration::from_millis(args.frame_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        slow_op: Duration::from_millis(args.slow_op_ms),
        reply_buffer_bytes: args.reply_buffer_bytes,
        reply_bytes_max: args.reply_bytes_max,
        reply_stall_timeout: Duration::from_millis(args.reply_stall_timeout_ms),
        conn_buffer_budget: args.conn_buffer_budget_bytes,
        users: users.clone(),
        tls: tls.clone(),
        telemetry: Some(telemetry.clone()),
        connection_shards: args.connection_shards.clone(),
    });
    let listening = Arc::new(AtomicUsize::new(0));
    let service = {
        let listening = listening.clone();
        move |ctx| serve_shard(ctx, server.clone(), listening.clone())
    };
    let admin_stop = Arc::new(AtomicBool::new(false));
    let admin = if args.admin_listen == "off" {
        None
    } else {
        let auth = AdminAuth::new(users.clone(), args.health_requires_auth);
        // HTTPS with the other listeners' certificate (docs/security.md).
        let admin_tls = tls.clone().map(|handle| AdminTls {
            handle,
            deadline: Duration::from_millis(args.frame_timeout_ms),
        });
        match AdminServer::start(
            &args.admin_listen,
            telemetry.clone(),
            admin_stop.clone(),
            auth,
            refusals,
            admin_tls,
        ) {
            Ok(a) => Some(a),
            Err(e) => return startup_failed(e.name(), &format!("admin endpoint: {e}"), e.fix()),
        }
    };
    if let Some(problem) = args.connection_shards_at_start() {
        admin_stop.store(true, Ordering::SeqCst);
        return startup_failed(
            "CONFIG_INVALID",
            &problem,
            "name shards from 0 to the shard count less one (the data directory fixes the count; GET /health shows it as shard_count), or unset connection_shards to accept on every shard",
        );
    }
    let engine = match Engine::start_with_telemetry(config, telemetry, service) {
        Ok(e) => e,
        Err(e) => {
            admin_stop.store(true, Ordering::SeqCst);
            return startup_failed(e.name(), &e.to_string(), &e.fix());
        }
    };
    for sig in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        if let Err(e) = signal_hook::flag::register(sig, engine.stop_flag()) {
            tracing::error!("cannot install the handler for signal {sig}: {e}");
        }
    }
    {
        use std::os::unix::fs::PermissionsExt;
        // The files are guarded by their modes (docs/security.md): a new
        // data directory is created 0700; one that exists keeps the mode the
        // operator gave it (they may have reasons: a backup agent in the
        // group), but the log says what it exposes and how to close it.
        if let Ok(meta) = std::fs::metadata(&args.data_dir) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "data directory {} has mode {mode:o}: other local users may read its data; fix: chmod 700 {} (docs/security.md)",
                    args.data_dir.display(),
                    args.data_dir.display()
                );
            }
        }
    }
    let users_reload = match (&args.users_file, &users) {
        (Some(path), Some(handle)) => Some((path.clone(), handle.clone())),
        _ => None,
    };
    let reloader = if users_reload.is_some() || tls.is_some() {
        reload_on_sighup(users_reload, tls)
    } else {
        None
    };
    let shards = engine.info().shard_count;
    while listening.load(Ordering::SeqCst) < usize::from(shards) && !engine.is_stopping() {
        std::thread::sleep(Duration::from_millis(2));
    }
    drop((reservation, resp_reservation));
    if !engine.is_stopping() {
        let info = engine.info();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "corekv serving: data_dir={} listen={} resp={} admin={} shards={} durability={} cpus={:?}{}",
            info.data_dir.display(),
            listen,
            resp_listen.map_or("off".to_string(), |a| a.to_string()),
            admin
                .as_ref()
                .map_or("off".to_string(), |a| a.addr.to_string()),
            info.shard_count,
            info.durability.name(),
            info.cpus,
            args.connection_shards
                .as_ref()
                .map_or(String::new(), |c| format!(" connection_shards={c:?}"))
        );
        let _ = out.flush();
        tracing::info!(
            data_dir = %info.data_dir.display(),
            %listen,
            shards = info.shard_count,
            "corekv serving"
        );
    }
    let exits = engine.wait();
    if let Some((handle, thread)) = reloader {
        handle.close();
        let _ = thread.join();
    }
    admin_stop.store(true, Ordering::SeqCst);
    if let Some(a) = admin {
        a.join();
    }
    let mut code = ExitCode::SUCCESS;
    for exit in &exits {
        match exit {
            ShardExit::Clean => {}
            ShardExit::WalFailed { shard, reason } => {
                tracing::error!("corekv: shard {shard} stopped with WAL_FAILED: {reason}");
                code = ExitCode::from(3);
            }
            ShardExit::StorageFailed { shard, reason } => {
                tracing::error!(
                    "corekv: shard {shard} was read-only after a storage failure: {reason}"
                );
                code = ExitCode::from(3);
            }
            ShardExit::Crashed { shard, detail } => {
                tracing::error!("corekv: shard {shard} failed: {detail}");
                code = ExitCode::from(3);
            }
        }
    }
    if code == ExitCode::SUCCESS {
        // Through the logger, so that it also reaches --log-file.
        tracing::info!("corekv stopped cleanly");
    }
    code
}

/// Reload the users file and the TLS certificates on SIGHUP.
///
/// Users: the table every shard and the admin endpoint read is swapped;
/// connections stay up and keep the role they authenticated with. TLS: new
/// connections use the new certificate; established sessions keep theirs.
/// A file that does not load leaves the old users or certificate in place
/// (logged with its name and path, never its text).
fn reload_on_sighup(
    users: Option<(std::path::PathBuf, Arc<UsersHandle>)>,
    tls: Option<Arc<corekv::net::tls::TlsHandle>>,
) -> Option<(signal_hook::iterator::Handle, std::thread::JoinHandle<()>)> {
    let mut signals = match signal_hook::iterator::Signals::new([signal_hook::consts::SIGHUP]) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!("cannot install the SIGHUP handler (users and TLS reload): {e}");
            return None;
        }
    };
    let handle = signals.handle();
    let thread = std::thread::Builder::new()
        .name("corekv-sighup".into())
        .spawn(move || {
            for _ in signals.forever() {
                if let Some((path, handle)) = &users {
                    reload_users(path, handle);
                }
                if let Some(tls) = &tls {
                    match tls.reload() {
                        Ok(()) => tracing::info!(
                            cert = %tls.files().cert.display(),
                            "SIGHUP: reloaded the TLS certificate and key (new connections use them)"
                        ),
                        Err(e) => tracing::error!(
                            error = e.name(),
                            "SIGHUP: kept the previous TLS certificate: {e}"
                        ),
                    }
                }
            }
        });
    match thread {
        Ok(t) => Some((handle, t)),
        Err(e) => {
            tracing::error!("cannot start the SIGHUP thread (users and TLS reload): {e}");
            None
        }
    }
}

fn reload_users(path: &std::path::Path, users: &UsersHandle) {
    match corekv::io::users_file::load(path) {
        Ok(u) => {
            let n = u.users.len();
            users.replace(u);
            tracing::info!(
                users = n,
                "SIGHUP: reloaded the users file {}",
                path.display()
            );
        }
        Err(e) => tracing::error!(error = e.name(), "SIGHUP: kept the previous users: {e}"),
    }
}

fn startup_failed(name: &str, message: &str, fix: &str) -> ExitCode {
    eprintln!(
        "corekv: cannot start: {name}: {message}\n  fix: {fix}\n  see docs/errors.md#{}",
        name.to_lowercase()
    );
    ExitCode::from(2)
}

fn init_logging(format: &str, file: Option<&std::path::Path>) -> Result<(), String> {
    use tracing_subscriber::fmt::writer::MakeWriterExt;
    let filter = tracing_subscriber::EnvFilter::try_from_env("COREKV_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let ansi = file.is_none() && std::io::IsTerminal::is_terminal(&std::io::stderr());
    let file = match file {
        Some(path) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(path)
                .map_err(|e| format!("cannot open log file {}: {e}", path.display()))?,
        ),
        None => None,
    };
    // One writer type for both cases: stderr, plus the file when given.
    let writer = std::io::stderr.and(std::sync::Mutex::new(FileOrSink(file)));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(writer);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

/// The optional log file: writes go nowhere when there is none.
struct FileOrSink(Option<std::fs::File>);

impl std::io::Write for FileOrSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match &mut self.0 {
            Some(f) => f.write(buf),
            None => Ok(buf.len()),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match &mut self.0 {
            Some(f) => f.flush(),
            None => Ok(()),
        }
    }
}
