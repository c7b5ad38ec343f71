//! The RESP server and connection-administration commands: CLIENT (SETNAME,
//! GETNAME, ID, INFO, LIST, KILL), CONFIG GET, DEBUG SLEEP and LASTSAVE's
//! clock. CLIENT LIST and KILL reach every connection of the server through
//! the process-wide registry (clients.rs) and need the admin role.
//!
//! It must never reach into a shard's state, and never close another
//! connection's socket itself (clients.rs shuts it down; its owner closes it).

use std::sync::OnceLock;

use crate::core::auth::Access;
use crate::core::status::Status;
use crate::shard::metrics::OpClass;

use super::commands::{
    parse_i64, valid_client_name, Outcome, Run, Session, BAD_NAME, OK, STARTED, SYNTAX,
};
use crate::net::outbound::SendError;

/// STARTED as Unix seconds (LASTSAVE), fixed when the listener starts.
static STARTED_UNIX: OnceLock<u64> = OnceLock::new();

/// The Unix time the RESP listener started (LASTSAVE: corekv's writes are
/// durable in the WAL when acknowledged; there is no separate save).
/// Fix LASTSAVE's time when the listener starts.
pub(super) fn lastsave_init() {
    started_unix();
}

fn started_unix() -> u64 {
    *STARTED_UNIX.get_or_init(|| {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        now.saturating_sub(STARTED.get().map_or(0, |t| t.elapsed().as_secs()))
    })
}

impl Session {
    /// LASTSAVE: the listener's start time (see `started_unix`).
    pub(super) fn lastsave(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        run.reply(self.proto).int(started_unix() as i64);
        Ok(OK)
    }

    pub(super) fn client(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let sub = String::from_utf8_lossy(argv[1]).to_ascii_lowercase();
        let proto = self.proto;
        let arity = |n: usize| {
            (argv.len() != n)
                .then(|| format!("ERR wrong number of arguments for 'client|{sub}' command"))
        };
        match sub.as_str() {
            "setname" => {
                if let Some(e) = arity(3) {
                    run.reply(proto).error(&e);
                } else if !valid_client_name(argv[2]) {
                    run.reply(proto).error(BAD_NAME);
                } else {
                    // An empty name clears it, as in Redis.
                    self.name = (!argv[2].is_empty()).then(|| argv[2].to_vec());
                    run.reply(proto).simple("OK");
                }
            }
            "getname" => match (arity(2), &self.name) {
                (Some(e), _) => run.reply(proto).error(&e),
                (None, Some(n)) => run.reply(proto).bulk(n),
                (None, None) => run.reply(proto).nil(),
            },
            "id" => match arity(2) {
                Some(e) => run.reply(proto).error(&e),
                None => run.reply(proto).int(self.id as i64),
            },
            "info" => match arity(2) {
                Some(e) => run.reply(proto).error(&e),
                None => {
                    let text = self.client_line();
                    run.reply(proto).verbatim(&text);
                }
            },
            // Every connection of the server, whichever core serves it:
            // admin only (it shows other clients' addresses).
            "list" | "kill" if !self.may(Access::Admin) => {
                let e = format!(
                    "NOPERM this user has no permissions to run the 'client|{sub}' command"
                );
                run.reply(proto).error(&e);
                return Ok((OpClass::Other, Status::PermissionDenied));
            }
            "list" => {
                // CLIENT LIST [TYPE normal] [ID id ...]
                let mut ids: Option<Vec<u64>> = None;
                let mut i = 2;
                while i < argv.len() {
                    let opt = argv[i].to_ascii_lowercase();
                    if opt == b"type" && i + 1 < argv.len() {
                        if !argv[i + 1].eq_ignore_ascii_case(b"normal") {
                            let e = format!(
                                "ERR Unknown client type '{}'",
                                String::from_utf8_lossy(argv[i + 1])
                            );
                            run.reply(proto).error(&e);
                            return Ok(OK);
                        }
                        i += 2;
                    } else if opt == b"id" && i + 1 < argv.len() {
                        let mut list = Vec::new();
                        for a in &argv[i + 1..] {
                            match parse_i64(a) {
                                Some(n) if n > 0 => list.push(n as u64),
                                _ => {
                                    run.reply(proto).error("ERR Invalid client ID");
                                    return Ok(OK);
                                }
                            }
                        }
                        ids = Some(list);
                        i = argv.len();
                    } else {
                        run.reply(proto).error(SYNTAX);
                        return Ok(OK);
                    }
                }
                let text: String = super::clients::list()
                    .lines()
                    .filter(|l| {
                        ids.as_ref().is_none_or(|ids| {
                            l.strip_prefix("id=")
                                .and_then(|r| r.split(' ').next())
                                .and_then(|n| n.parse::<u64>().ok())
                                .is_some_and(|n| ids.contains(&n))
                        })
                    })
                    .map(|l| format!("{l}\n"))
                    .collect();
                run.reply(proto).verbatim(&text);
            }
            "kill" => return Ok(self.client_kill(run)),
            _ => {
                let e = format!(
                    "ERR unknown subcommand '{}'. Try CLIENT HELP.",
                    String::from_utf8_lossy(argv[1])
                );
                run.reply(proto).error(&e);
            }
        }
        Ok(OK)
    }

    /// CONFIG GET for the Redis parameters that have a corekv meaning
    /// (redis-benchmark and dashboards ask for them); CONFIG SET of those
    /// parameters to the value they have (what a client library or a
    /// deployment script sets to make sure) answers OK, to anything else a
    /// named refusal: corekv's settings are fixed at start.
    pub(super) fn config(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let sub = String::from_utf8_lossy(argv[1]).to_ascii_lowercase();
        let fsync = match run.ctx.durability {
            crate::core::types::Durability::Sync => "always",
            crate::core::types::Durability::Async => "everysec",
        };
        let maxclients = self.maxclients.to_string();
        let params: [(&str, &str); 5] = [
            ("appendonly", "yes"),
            ("appendfsync", fsync),
            ("save", ""),
            ("databases", "1"),
            ("maxclients", &maxclients),
        ];
        let proto = self.proto;
        match sub.as_str() {
            "get" if argv.len() >= 3 => {
                let found: Vec<&(&str, &str)> = params
                    .iter()
                    .filter(|(name, _)| {
                        argv[2..].iter().any(|p| {
                            super::glob::glob_match(&p.to_ascii_lowercase(), name.as_bytes())
                        })
                    })
                    .collect();
                let mut r = run.reply(proto);
                r.map(found.len());
                for (name, value) in found {
                    r.bulk(name.as_bytes());
                    r.bulk(value.as_bytes());
                }
            }
            "get" => run
                .reply(proto)
                .error("ERR wrong number of arguments for 'config|get' command"),
            "set" => {
                let e = config_set(&argv[2..], &params);
                let mut r = run.reply(proto);
                match e {
                    Ok(()) => r.simple("OK"),
                    Err(e) => r.error(&e),
                }
            }
            "resetstat" | "rewrite" => run.reply(proto).error(
                "ERR CONFIG RESETSTAT/REWRITE are not supported by corekv: its counters are Prometheus counters (they only grow) and its settings are fixed at start (docs/settings.md)",
            ),
            _ => {
                let e = format!(
                    "ERR unknown subcommand '{}'. Try CONFIG HELP.",
                    String::from_utf8_lossy(argv[1])
                );
                run.reply(proto).error(&e);
            }
        }
        Ok(OK)
    }

    /// CLIENT KILL addr:port (old form: +OK or "No such client"), or
    /// CLIENT KILL ID id | ADDR addr | LADDR addr | USER name | SKIPME yes/no
    /// ... (the number killed). Works across shards: see clients.rs.
    fn client_kill(&mut self, run: &mut Run<'_, '_>) -> Outcome {
        let argv = run.argv;
        let proto = self.proto;
        let text = |a: &[u8]| String::from_utf8_lossy(a).into_owned();
        let mut f_id = None;
        let (mut addr, mut laddr, mut user) = (None, None, None);
        let mut skip_me = true;
        let old_form = argv.len() == 3;
        if old_form {
            addr = Some(text(argv[2]));
            // With the old form a client may kill itself (Redis).
            skip_me = false;
        } else if argv.len() > 3 && argv.len() % 2 == 0 {
            for pair in argv[2..].chunks(2) {
                let (opt, arg) = (pair[0].to_ascii_lowercase(), pair[1]);
                match opt.as_slice() {
                    b"id" => match parse_i64(arg) {
                        Some(n) if n > 0 => f_id = Some(n as u64),
                        _ => {
                            run.reply(proto)
                                .error("ERR client-id should be greater than 0");
                            return OK;
                        }
                    },
                    b"addr" => addr = Some(text(arg)),
                    b"laddr" => laddr = Some(text(arg)),
                    b"user" => user = Some(text(arg)),
                    b"type" if arg.eq_ignore_ascii_case(b"normal") => {}
                    b"type" => {
                        let e = format!("ERR Unknown client type '{}'", text(arg));
                        run.reply(proto).error(&e);
                        return OK;
                    }
                    b"skipme" if arg.eq_ignore_ascii_case(b"yes") => skip_me = true,
                    b"skipme" if arg.eq_ignore_ascii_case(b"no") => skip_me = false,
                    _ => {
                        run.reply(proto).error(SYNTAX);
                        return OK;
                    }
                }
            }
        } else {
            run.reply(proto).error(SYNTAX);
            return OK;
        }
        let filter = super::clients::Filter {
            id: f_id,
            addr: addr.as_deref(),
            laddr: laddr.as_deref(),
            user: user.as_deref(),
            me: self.id,
            skip_me,
        };
        let (n, me) = super::clients::kill(&filter);
        self.close_after_reply = me;
        let mut r = run.reply(proto);
        match (old_form, n) {
            (true, 0) => r.error("ERR No such client"),
            (true, _) => r.simple("OK"),
            (false, n) => r.int(n as i64),
        }
        OK
    }

    /// Tell the client registry the name, protocol and user CLIENT LIST
    /// shows.
    pub(super) fn publish(&self) {
        let user = match (&self.auth.user, self.auth.role) {
            (Some(u), _) => u.as_str(),
            (None, Some(_)) => "default",
            (None, None) => "",
        };
        let name = self.name.as_deref().unwrap_or_default();
        super::clients::update(self.id, name, self.proto, user);
    }

    /// DEBUG SLEEP seconds (what tools use to test timeouts); the other
    /// DEBUG subcommands reach into Redis's internals and are refused.
    pub(super) async fn debug(&mut self, run: &mut Run<'_, '_>) -> Result<Outcome, SendError> {
        let argv = run.argv;
        let proto = self.proto;
        if argv[1].eq_ignore_ascii_case(b"sleep") && argv.len() == 3 {
            // As Redis (atof): what does not parse, or is negative, is 0.
            let secs = std::str::from_utf8(argv[2])
                .ok()
                .and_then(|s| s.parse::<f64>().ok())
                .filter(|s| s.is_finite() && *s > 0.0)
                .unwrap_or(0.0);
            if secs > 0.0 {
                // Only this connection waits: the shard goes on serving.
                glommio::timer::sleep(std::time::Duration::from_secs_f64(secs.min(3600.0))).await;
            }
            run.reply(proto).simple("OK");
        } else {
            let e = format!(
                "ERR unknown subcommand or wrong number of arguments for '{}'. Try DEBUG HELP.",
                String::from_utf8_lossy(argv[1])
            );
            run.reply(proto).error(&e);
        }
        Ok(OK)
    }

    fn client_line(&self) -> String {
        // The registry's line, as CLIENT LIST shows it (one format).
        super::clients::line_of(self.id)
    }
}

/// CONFIG SET param value [param value ...], all or nothing as in Redis 7:
/// every parameter must be one CONFIG GET shows and keep the value it has.
fn config_set(args: &[&[u8]], params: &[(&str, &str)]) -> Result<(), String> {
    if args.is_empty() || args.len() % 2 != 0 {
        return Err("ERR wrong number of arguments for 'config|set' command".into());
    }
    for pair in args.chunks(2) {
        let name = String::from_utf8_lossy(pair[0]).to_ascii_lowercase();
        let Some((_, current)) = params.iter().find(|(p, _)| *p == name) else {
            return Err(format!(
                "ERR Unknown option or number of arguments for CONFIG SET - '{}'",
                String::from_utf8_lossy(pair[0])
            ));
        };
        if !pair[1].eq_ignore_ascii_case(current.as_bytes()) {
            let why = match name.as_str() {
                "appendfsync" => "corekv's durability is chosen at start (--durability sync is 'always', async is 'everysec')",
                "appendonly" => "corekv always logs every write to its WAL",
                "save" => "corekv takes no snapshots: every write is in its WAL (`corekv backup` makes a copy)",
                "databases" => "corekv has one database",
                _ => "corekv's settings are fixed at start",
            };
            return Err(format!(
                "ERR CONFIG SET failed (possibly related to argument '{name}') - {why} (docs/settings.md)"
            ));
        }
    }
    Ok(())
}
