//! `corekv serve`: start the engine and the network server on every shard.

use std::io::Write;
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::ArgMatches;

use corekv::net::admin::AdminServer;
use corekv::net::server::{resolve_listen, serve_shard, ServerConfig};
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
    let listen = match resolve_listen(&args.listen) {
        Ok(a) => a,
        Err(e) => return startup_failed(e.name(), &e.to_string(), e.fix()),
    };
    let resp_listen = if args.resp_listen == "off" {
        None
    } else {
        match resolve_listen(&args.resp_listen) {
            Ok(a) => Some(a),
            Err(e) => return startup_failed(e.name(), &format!("RESP listener: {e}"), e.fix()),
        }
    };
    let config = args.engine_config();
    let server = Arc::new(ServerConfig {
        listen,
        resp_listen,
        value_bytes_max: args.value_bytes_max,
        connections_per_shard_max: args.connections_per_shard_max,
        frame_timeout: Duration::from_millis(args.frame_timeout_ms),
        idle_timeout: Duration::from_millis(args.idle_timeout_ms),
        slow_op: Duration::from_millis(args.slow_op_ms),
        reply_buffer_bytes: args.reply_buffer_bytes,
        reply_bytes_max: args.reply_bytes_max,
        reply_stall_timeout: Duration::from_millis(args.reply_stall_timeout_ms),
        conn_buffer_budget: args.conn_buffer_budget_bytes,
    });
    let listening = Arc::new(AtomicUsize::new(0));
    let service = {
        let listening = listening.clone();
        move |ctx| serve_shard(ctx, server.clone(), listening.clone())
    };
    let telemetry = Telemetry::new();
    let admin_stop = Arc::new(AtomicBool::new(false));
    let admin = if args.admin_listen == "off" {
        None
    } else {
        match AdminServer::start(&args.admin_listen, telemetry.clone(), admin_stop.clone()) {
            Ok(a) => Some(a),
            Err(e) => return startup_failed(e.name(), &format!("admin endpoint: {e}"), e.fix()),
        }
    };
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
    let shards = engine.info().shard_count;
    while listening.load(Ordering::SeqCst) < usize::from(shards) && !engine.is_stopping() {
        std::thread::sleep(Duration::from_millis(2));
    }
    if !engine.is_stopping() {
        let info = engine.info();
        let mut out = std::io::stdout().lock();
        let _ = writeln!(
            out,
            "corekv serving: data_dir={} listen={} resp={} admin={} shards={} durability={} cpus={:?}",
            info.data_dir.display(),
            listen,
            resp_listen.map_or("off".to_string(), |a| a.to_string()),
            admin
                .as_ref()
                .map_or("off".to_string(), |a| a.addr.to_string()),
            info.shard_count,
            info.durability.name(),
            info.cpus
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
