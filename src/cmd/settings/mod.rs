//! The server's settings: one table ([`SETTINGS`]) that names each setting
//! once (file key, flag, environment variable, default, doc line, rule), and
//! the resolution of where each value comes from: flags, then `COREKV_*`
//! environment variables, then the TOML file given by `--config`, then defaults.
//!
//! clap resolves flags, environment and defaults (the derive struct
//! [`ServeArgs`] is typed storage; a unit test proves its flags, variables and
//! defaults are exactly the table's, and the help text comes from the table);
//! this module slots the file in between (a file value applies only where clap
//! fell back to a default), accepts renamed settings under their old names with
//! a warning, and records the source of every value for `corekv config show`.
//! The table also drives `config show`, `config doc` (docs/settings.md), the
//! unknown-`COREKV_*` warning and the per-setting validation. It must never hold
//! engine logic: cross-setting relations of the engine are
//! `EngineConfig::validate`'s.

mod args;
mod row;
mod table;

pub use args::ServeArgs;
pub use row::{env_of, flag_of, Kind, Setting};

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use clap::parser::ValueSource;
use clap::ArgMatches;

use corekv::core::config::EngineConfig;
use corekv::core::limits::KEY_BYTES_MAX;

pub use table::SETTINGS;

/// The row named `key`, by its current name only.
pub fn setting(key: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.name == key)
}

/// The row a deprecated name now belongs to.
pub fn renamed(old: &str) -> Option<&'static Setting> {
    SETTINGS.iter().find(|s| s.deprecated.contains(&old))
}

/// Every COREKV_* variable the settings read, deprecated ones included, and
/// COREKV_CONFIG.
pub fn known_env_vars() -> Vec<String> {
    let mut vars = vec!["COREKV_CONFIG".to_string()];
    for s in SETTINGS {
        vars.push(s.env_var());
        vars.extend(s.deprecated.iter().map(|old| env_of(old)));
    }
    vars
}

/// Give every argument that is a table row the table's doc line as its help,
/// in every subcommand that takes the settings (serve, config, diagnose).
pub fn with_table_help(cmd: clap::Command) -> clap::Command {
    let ids: Vec<String> = cmd
        .get_arguments()
        .map(|a| a.get_id().to_string())
        .collect();
    let mut cmd = cmd;
    for id in ids {
        if let Some(s) = setting(&id) {
            cmd = cmd.mut_arg(id, |a| a.help(s.doc));
        }
    }
    let subs: Vec<String> = cmd
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    for name in subs {
        cmd = cmd.mut_subcommand(name, with_table_help);
    }
    cmd
}

/// Where a setting's value came from.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Source {
    Default,
    File,
    Env,
    Flag,
}

impl Source {
    pub fn name(self) -> &'static str {
        match self {
            Source::Flag => "flag",
            Source::Env => "environment",
            Source::File => "config file",
            Source::Default => "default",
        }
    }

    fn of(matches: &ArgMatches, id: &str) -> Source {
        match matches.try_get_raw(id) {
            Ok(Some(_)) => match matches.value_source(id) {
                Some(ValueSource::CommandLine) => Source::Flag,
                Some(ValueSource::EnvVariable) => Source::Env,
                _ => Source::Default,
            },
            _ => Source::Default,
        }
    }
}

pub struct Settings {
    pub args: ServeArgs,
    /// The source of every setting, by its table name.
    pub sources: BTreeMap<&'static str, Source>,
    /// One line per deprecated name in use, naming its replacement.
    pub warnings: Vec<String>,
}

/// Apply deprecated flags and variables, then the config file (if any), under
/// flags and environment (precedence: flag > environment > file > default,
/// whatever the name used). Every problem is one line naming the key.
pub fn resolve(mut args: ServeArgs, matches: &ArgMatches) -> Result<Settings, Vec<String>> {
    let mut sources = BTreeMap::new();
    let mut warnings = Vec::new();
    let mut problems = Vec::new();
    for s in SETTINGS {
        sources.insert(s.name, Source::of(matches, s.name));
    }
    // Deprecated flags and variables: clap parsed them into hidden arguments
    // whose id is the old key; move each value to its row unless a source as
    // strong or stronger already set the new name.
    for s in SETTINGS {
        for old in s.deprecated {
            let source = Source::of(matches, old);
            let used = match source {
                Source::Flag => flag_of(old),
                Source::Env => env_of(old),
                _ => continue,
            };
            let new = if source == Source::Flag {
                s.flag()
            } else {
                s.env_var()
            };
            warnings.push(format!(
                "{used} is deprecated and will be removed in the next release: use {new} (setting `{}`)",
                s.name
            ));
            if sources[s.name] >= source {
                continue;
            }
            let raw = matches
                .get_raw(old)
                .and_then(|mut v| v.next())
                .and_then(|v| v.to_str())
                .unwrap_or_default();
            // clap already parsed it as an integer (every renamed setting is one).
            let applied = raw
                .parse::<i64>()
                .map_err(|e| e.to_string())
                .and_then(|n| (s.access.set)(&mut args, &toml::Value::Integer(n)));
            match applied {
                Ok(()) => {
                    sources.insert(s.name, source);
                }
                Err(why) => problems.push(format!("{used}: {why}")),
            }
        }
    }
    if let Some(path) = args.config.clone() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| vec![format!("config file {}: {e}", path.display())])?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| {
            vec![format!(
                "config file {}: not valid TOML: {e}",
                path.display()
            )]
        })?;
        for (key, value) in &table {
            let row = match (setting(key), renamed(key)) {
                (Some(row), _) => row,
                (None, Some(row)) => {
                    warnings.push(format!(
                        "config file {}: key `{key}` is deprecated and will be removed in the next release: rename it `{}`",
                        path.display(),
                        row.name
                    ));
                    if table.contains_key(row.name) {
                        // Both names in one file: the new one wins.
                        continue;
                    }
                    row
                }
                (None, None) => {
                    let known: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
                    problems.push(format!(
                        "config file {}: unknown key `{key}` (known: {})",
                        path.display(),
                        known.join(", ")
                    ));
                    continue;
                }
            };
            if sources[row.name] != Source::Default {
                continue;
            }
            match (row.access.set)(&mut args, value) {
                Ok(()) => {
                    sources.insert(row.name, Source::File);
                }
                Err(why) => {
                    problems.push(format!("config file {}: `{key}`: {why}", path.display()))
                }
            }
        }
    }
    if problems.is_empty() {
        absolutize(&mut args);
        Ok(Settings {
            args,
            sources,
            warnings,
        })
    } else {
        Err(problems)
    }
}

/// Every path setting, from flags, environment or the config file, made
/// absolute against the working directory, before anything touches the disk:
/// the storage layer opens directories through io_uring, where a relative path
/// has no directory to be relative to (EBADF), and logs, `config show` and
/// /health should name the one directory that is meant.
fn absolutize(args: &mut ServeArgs) {
    args.data_dir = absolute(&args.data_dir);
    args.log_file = args.log_file.as_deref().map(absolute);
    args.users_file = args.users_file.as_deref().map(absolute);
    args.tls_cert_file = args.tls_cert_file.as_deref().map(absolute);
    args.tls_key_file = args.tls_key_file.as_deref().map(absolute);
    args.tls_client_ca_file = args.tls_client_ca_file.as_deref().map(absolute);
    args.config = args.config.as_deref().map(absolute);
}

/// `path` against the working directory (not canonicalized: it may not exist
/// yet, and a symlink the operator chose stays the name they chose).
pub fn absolute(path: &std::path::Path) -> PathBuf {
    std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf())
}

impl ServeArgs {
    /// The native listener's TLS files, when TLS is on (both cert and key set;
    /// `validate` refuses one without the other).
    pub fn tls_files(&self) -> Option<corekv::net::tls::TlsFiles> {
        Some(corekv::net::tls::TlsFiles {
            cert: self.tls_cert_file.clone()?,
            key: self.tls_key_file.clone()?,
            client_ca: self.tls_client_ca_file.clone(),
        })
    }

    /// The engine's share of the settings: the table's names mapped onto
    /// `EngineConfig`'s fields (whose names the shard code uses).
    pub fn engine_config(&self) -> EngineConfig {
        let mut config = EngineConfig::new(&self.data_dir);
        config.shards = self.shards;
        config.durability = self.durability;
        config.sync_interval = Duration::from_millis(self.sync_interval_ms);
        config.value_bytes_max = self.value_bytes_max;
        config.wal_segment_bytes = self.wal_segment_bytes;
        config.recover_truncate = self.recover_truncate;
        config.cpus = self.cpus.clone();
        config.spin_before_park = match self.spin_before_park_us {
            0 => self.park_policy.spin(),
            us => Duration::from_micros(us),
        };
        config.cache_bytes = self.cache_bytes;
        config.memtable_bytes = self.memtable_bytes;
        config.table_target_bytes = self.table_target_bytes;
        config.l0_trigger = self.l0_trigger;
        config.lock_timeout = Duration::from_millis(self.lock_timeout_ms);
        config.expiry_sweep_interval = Duration::from_millis(self.expiry_sweep_interval_ms);
        config
    }

    /// `connection_shards` against the shard count a start would serve with
    /// (the data directory's, else `shards`, else one per CPU). Not part of
    /// `validate`: it reads the directory. The one check of the list, run by
    /// `serve` (before the start, which would fix a new directory's count)
    /// and by `config check`.
    pub fn connection_shards_at_start(&self) -> Option<String> {
        let list = self.connection_shards.as_ref()?;
        let count = corekv::shard::runtime::planned_shard_count(&self.engine_config());
        corekv::net::server::connection_shards_problem(list, count)
            .map(|why| format!("connection_shards = {list:?}: {why}"))
    }

    /// Checks that need no I/O: every row's rule, then the relations between
    /// settings (the engine's own, and the server's below).
    pub fn validate(&self) -> Result<(), Vec<String>> {
        let mut problems: Vec<String> = SETTINGS
            .iter()
            .filter_map(|s| s.rule.check(s.name, &(s.access.get)(self)?))
            .collect();
        // The engine checks some of the same values for library users; one
        // line per setting is enough.
        let named = |p: &str| p.split([' ', ':']).next().unwrap_or_default().to_string();
        let already: Vec<String> = problems.iter().map(|p| named(p)).collect();
        for p in self.engine_config().validate().err().unwrap_or_default() {
            if !already.contains(&named(&p)) {
                problems.push(p);
            }
        }
        // One entry of the largest key and value must fit a reply, or a SCAN
        // over it could never make progress.
        let one_entry = 4 + 6 + KEY_BYTES_MAX * 2 + 12 + self.value_bytes_max;
        if self.reply_bytes_max < one_entry {
            problems.push(format!(
                "reply_bytes_max = {}: must hold one largest key and value ({one_entry} bytes with value_bytes_max = {})",
                self.reply_bytes_max, self.value_bytes_max
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            problems.push(
                "tls_cert_file and tls_key_file: set both (TLS on) or neither (plaintext)".into(),
            );
        }
        if self.tls_client_ca_file.is_some() && self.tls_cert_file.is_none() {
            problems.push(
                "tls_client_ca_file: needs tls_cert_file and tls_key_file (client certificates are asked for in the TLS handshake)".into(),
            );
        }
        if self.conn_buffer_budget_bytes < 2 * self.reply_buffer_bytes {
            problems.push(format!(
                "conn_buffer_budget_bytes = {}: must be at least twice reply_buffer_bytes ({})",
                self.conn_buffer_budget_bytes, self.reply_buffer_bytes
            ));
        }
        if problems.is_empty() {
            Ok(())
        } else {
            Err(problems)
        }
    }
}

/// docs/settings.md, generated from the table (`corekv config doc`).
pub fn markdown() -> String {
    let mut out = String::from(
        "# Settings of `corekv serve`\n\n\
         <!-- Generated by `corekv config doc` from src/cmd/settings.rs; edit the table there \
         and regenerate: tests/settings_doc.rs fails when this file and the table disagree. -->\n\n\
         Every setting has one name: the config file key. Its flag is `--` and the key with \
         dashes, its environment variable `COREKV_` and the key in upper case. A value with a \
         unit names it (`_bytes`, `_ms`, `_us`). Precedence, highest first: flags, \
         environment variables, the TOML file given by `--config` (docs/corekv.example.toml), \
         defaults. `corekv config show` prints the effective values and where each came from; \
         `corekv config check` validates them against the host.\n\n\
         | Setting (file key) | Type | Flag | Environment variable | Default | Valid values | Meaning |\n\
         |---|---|---|---|---|---|---|\n",
    );
    for s in SETTINGS {
        let default = match s.default.clap_text() {
            Some(text) => format!("`{text}`"),
            None => format!("unset: {}", s.default.unset_meaning()),
        };
        let kind = match s.kind {
            Kind::Text => "string",
            Kind::Path => "path",
            Kind::Integer => "integer",
            Kind::Bool => "boolean",
            Kind::IntList => "list of integers",
        };
        out.push_str(&format!(
            "| `{}` | {kind} | `{}` | `{}` | {} | {} | {} |\n",
            s.name,
            s.flag(),
            s.env_var(),
            default,
            s.rule.describe(),
            s.doc.replace('|', "\\|")
        ));
    }
    out.push_str(
        "\n## Deprecated names\n\n\
         These names were renamed to say their unit. They still work for one release: \
         `serve`, `config show` and `config check` accept them and warn, naming the new \
         setting. If both names are given the same way, the new one wins.\n\n\
         | Old file key | Old flag | Old environment variable | Now |\n|---|---|---|---|\n",
    );
    for s in SETTINGS {
        for old in s.deprecated {
            out.push_str(&format!(
                "| `{old}` | `{}` | `{}` | `{}` |\n",
                flag_of(old),
                env_of(old),
                s.name
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::row::DefaultValue;
    use super::*;
    use clap::CommandFactory;

    #[derive(clap::Parser)]
    struct Wrap {
        #[command(flatten)]
        serve: ServeArgs,
    }

    /// The derive struct and the table cannot drift: every row has a clap
    /// argument with the table's flag, variable and default; every clap
    /// argument is a row, a deprecated name of one (hidden, flag and variable
    /// from the old key), or --config.
    #[test]
    fn clap_args_match_the_table() {
        let mut cmd = Wrap::command();
        // Building applies clap's implied defaults (`false` for a switch).
        cmd.build();
        for s in SETTINGS {
            let arg = cmd
                .get_arguments()
                .find(|a| a.get_id() == s.name)
                .unwrap_or_else(|| panic!("no clap argument for setting {}", s.name));
            assert_eq!(
                arg.get_long().map(|l| format!("--{l}")),
                Some(s.flag()),
                "{}",
                s.name
            );
            assert_eq!(
                arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                Some(s.env_var()),
                "{}",
                s.name
            );
            let defaults: Vec<String> = arg
                .get_default_values()
                .iter()
                .map(|d| d.to_string_lossy().into_owned())
                .collect();
            assert_eq!(
                defaults,
                s.default.clap_text().into_iter().collect::<Vec<_>>(),
                "default of {}",
                s.name
            );
        }
        for arg in cmd.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "config" || id == "help" {
                continue;
            }
            if let Some(row) = renamed(id) {
                assert!(arg.is_hide_set(), "deprecated --{id} must be hidden");
                assert_eq!(arg.get_long().map(|l| format!("--{l}")), Some(flag_of(id)));
                assert_eq!(
                    arg.get_env().map(|e| e.to_string_lossy().into_owned()),
                    Some(env_of(id))
                );
                assert!(setting(id).is_none(), "{id} is both a name and an alias");
                assert_eq!(row.kind, Kind::Integer, "aliases are applied as integers");
                continue;
            }
            assert!(setting(id).is_some(), "clap argument {id} has no table row");
        }
    }

    /// Names say their unit and are unique, old names included.
    #[test]
    fn names_are_unique_and_unit_suffixed() {
        let mut all: Vec<&str> = SETTINGS.iter().map(|s| s.name).collect();
        all.extend(SETTINGS.iter().flat_map(|s| s.deprecated.iter().copied()));
        let count = all.len();
        all.sort_unstable();
        all.dedup();
        assert_eq!(all.len(), count, "a name is used twice");
        for s in SETTINGS {
            assert!(
                !s.name.ends_with("_size") && !s.name.ends_with("_budget"),
                "{} does not say its unit",
                s.name
            );
        }
    }

    /// Every default obeys its own row's rule, and the defaults together are
    /// a valid configuration.
    #[test]
    fn defaults_are_valid() {
        use clap::Parser;
        let args = Wrap::try_parse_from(["corekv"])
            .expect("defaults parse")
            .serve;
        for s in SETTINGS {
            let value = (s.access.get)(&args);
            match s.default {
                DefaultValue::Unset(_) => assert!(value.is_none(), "{}", s.name),
                _ => {
                    let value = value.unwrap_or_else(|| panic!("{} unset", s.name));
                    assert_eq!(s.rule.check(s.name, &value), None);
                }
            }
        }
        args.validate().expect("the defaults are valid");
    }

    #[test]
    fn rules_name_the_setting() {
        use clap::Parser;
        let mut args = Wrap::try_parse_from(["corekv"]).unwrap().serve;
        args.cache_bytes = 1000;
        args.log_format = "xml".into();
        args.l0_trigger = 1;
        let problems = args.validate().unwrap_err();
        assert_eq!(problems.len(), 3, "{problems:?}");
        assert!(problems.contains(&"cache_bytes = 1000: must be at least 1048576".to_string()));
        assert!(problems.contains(&"log_format = \"xml\": must be text or json".to_string()));
        assert!(problems.contains(&"l0_trigger = 1: must be between 2 and 64".to_string()));
    }

    /// Each way a `connection_shards` list is wrong is refused with its own
    /// reason, against the count when it is known; a good list passes.
    #[test]
    fn connection_shards_are_checked_against_the_shard_count() {
        use clap::Parser;
        let problem = corekv::net::server::connection_shards_problem;
        assert_eq!(problem(&[1], Some(2)), None);
        assert_eq!(problem(&[3, 0], None), None);
        assert!(problem(&[], Some(2)).unwrap().contains("empty"));
        assert!(problem(&[1, 0, 1], Some(2))
            .unwrap()
            .contains("shard 1 is named twice"));
        assert_eq!(
            problem(&[0, 2, 5], Some(2)).unwrap(),
            "shard(s) [2, 5] do not exist (shard count 2: shards 0 to 1)"
        );
        assert!(problem(&[1024], None).is_some());
        // A directory that does not exist yet: the count is `--shards`.
        let args = Wrap::try_parse_from([
            "corekv",
            "--data-dir",
            "/nonexistent/corekv-data",
            "--shards",
            "2",
            "--connection-shards",
            "2",
        ])
        .unwrap()
        .serve;
        assert_eq!(
            args.connection_shards_at_start(),
            Some(
                "connection_shards = [2]: shard(s) [2] do not exist (shard count 2: shards 0 to 1)"
                    .to_string()
            )
        );
    }

    /// The file path through the table: a value set from TOML reads back the
    /// same, for every row.
    #[test]
    fn every_row_round_trips_through_toml() {
        use clap::Parser;
        let mut args = Wrap::try_parse_from([
            "corekv",
            "--shards",
            "3",
            "--cpus",
            "1,2",
            "--connection-shards",
            "2,0",
        ])
        .unwrap()
        .serve;
        args.log_file = Some("/tmp/x.log".into());
        args.users_file = Some("/tmp/users.toml".into());
        args.tls_cert_file = Some("/tmp/cert.pem".into());
        args.tls_key_file = Some("/tmp/key.pem".into());
        args.tls_client_ca_file = Some("/tmp/ca.pem".into());
        for s in SETTINGS {
            let v = (s.access.get)(&args).unwrap_or_else(|| panic!("{}", s.name));
            (s.access.set)(&mut args, &v).unwrap_or_else(|e| panic!("{}: {e}", s.name));
            assert_eq!((s.access.get)(&args), Some(v), "{}", s.name);
        }
    }
}
