//! Configuration precedence (flags > env > file > defaults), validation errors
//! and `config check` exit codes, against the real binary.

use crate::common;

use std::process::{Command, Output};

fn corekv(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut cmd = Command::new(common::corekv_bin());
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    // Keep the caller's COREKV_* variables from leaking into the test.
    for (k, _) in std::env::vars() {
        if k.starts_with("COREKV_") && !env.iter().any(|(e, _)| *e == k) {
            cmd.env_remove(k);
        }
    }
    cmd.output().expect("run corekv")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn line<'a>(text: &'a str, key: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(&format!("{key} = ")))
        .unwrap_or_else(|| panic!("no {key} in {text}"))
}

#[test]
fn flags_beat_env_beat_file_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(
        &file,
        "listen = \"127.0.0.1:1111\"\nsync_interval_ms = 7\ndurability = \"async\"\nshards = 4\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = corekv(
        &["config", "show", "--config", f, "--durability", "sync"],
        &[
            ("COREKV_SYNC_INTERVAL_MS", "9"),
            ("COREKV_DURABILITY", "async"),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert_eq!(
        line(&out, "listen"),
        "listen = \"127.0.0.1:1111\"  # config file"
    );
    assert_eq!(
        line(&out, "sync_interval_ms"),
        "sync_interval_ms = 9  # environment"
    );
    assert_eq!(line(&out, "durability"), "durability = \"sync\"  # flag");
    assert_eq!(line(&out, "shards"), "shards = 4  # config file");
    assert_eq!(
        line(&out, "value_bytes_max"),
        "value_bytes_max = 16777216  # default"
    );
}

#[test]
fn the_example_config_is_valid_and_complete() {
    let dir = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/corekv.example.toml");
    let data = dir.path().join("data");
    let o = corekv(
        &[
            "config",
            "check",
            "--config",
            example,
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stdout(&o));
    assert!(
        !data.exists(),
        "config check must not create the data directory"
    );
    // Every key the code knows is documented in the example.
    let show = stdout(&corekv(&["config", "show"], &[]));
    let text = std::fs::read_to_string(example).unwrap();
    for l in show.lines() {
        let key = l.trim_start_matches("# ").split([' ', '=']).next().unwrap();
        assert!(
            text.contains(&format!("{key} = ")),
            "{key} missing from docs/corekv.example.toml"
        );
    }
}

#[test]
fn every_problem_is_named_and_check_fails() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(&file, "bogus = 1\nshards = \"many\"\n").unwrap();
    let o = corekv(
        &["config", "check", "--config", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("unknown key `bogus`"), "{out}");
    assert!(
        out.contains("`shards`: expected a non-negative integer"),
        "{out}"
    );

    let o = corekv(
        &[
            "config",
            "check",
            "--wal-segment-bytes",
            "1000",
            "--log-format",
            "xml",
            "--admin-listen",
            "off",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("wal_segment_bytes = 1000"), "{out}");
    assert!(out.contains("log_format"), "{out}");

    // A port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = corekv(
        &[
            "config",
            "check",
            "--listen",
            &addr,
            "--admin-listen",
            "off",
            "--data-dir",
            dir.path().join("d").to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("ADDRESS_IN_USE"), "{}", stdout(&o));

    // serve refuses the same bad file with CONFIG_INVALID, exit 2.
    let o = corekv(&["serve", "--config", file.to_str().unwrap()], &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("CONFIG_INVALID"));
}

#[test]
fn serve_uses_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("c.toml");
    std::fs::write(&file, "shards = 3\ndurability = \"async\"\n").unwrap();
    let server = common::start_server(
        &dir.path().join("data"),
        &["--config", file.to_str().unwrap()],
    );
    assert_eq!(server.client().hello().unwrap().shard_count, 3);
}

/// `config check` refuses what `serve` refuses, with the same name: a log file
/// in a directory that does not exist (serve: LOG_FILE_UNUSABLE). Issue 22,
/// finding 1.
#[test]
fn check_refuses_a_log_file_serve_cannot_open() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let log = dir.path().join("no/such/dir/corekv.log");
    let base = [
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
        "--log-file",
        log.to_str().unwrap(),
    ];
    let mut args = vec!["config", "check"];
    args.extend_from_slice(&base);
    let o = corekv(&args, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(stdout(&o).contains("LOG_FILE_UNUSABLE"), "{}", stdout(&o));
    let mut args = vec!["serve"];
    args.extend_from_slice(&base);
    let o = corekv(&args, &[]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("LOG_FILE_UNUSABLE"));
    assert!(!log.exists());
}

/// The shipped example, exactly as shipped (relative data dir), checks ok and
/// serve starts with it from the same working directory.
#[test]
fn the_example_config_as_shipped_starts() {
    let cwd = tempfile::tempdir().unwrap();
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/docs/corekv.example.toml");
    std::fs::copy(example, cwd.path().join("corekv.toml")).unwrap();
    let o = Command::new(common::corekv_bin())
        .current_dir(cwd.path())
        .args([
            "config",
            "check",
            "--config",
            "corekv.toml",
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stdout(&o));
    let server = common::try_start_server_in(
        Some(cwd.path()),
        std::path::Path::new("corekv-data"),
        &["--config", "corekv.toml"],
        &[],
    )
    .unwrap_or_else(|e| panic!("serve with the example config: {e}"));
    server.client().put(b"k", b"v").unwrap();
    assert_eq!(server.stop().0, Some(0));
    assert!(cwd.path().join("corekv-data/corekv.meta").exists());
}

/// Errors name what the operator must change (issue 22, findings 6 and 8): a
/// bad value from a COREKV_* variable names the variable; a misspelled
/// COREKV_* variable is reported, not silently ignored; `--cpus` naming CPUs
/// this host lacks is refused before the data directory is created, so a
/// later start with another shard count works.
#[test]
fn errors_name_the_variable_and_bad_cpus_leave_no_directory() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let o = corekv(
        &["config", "show", "--data-dir", data.to_str().unwrap()],
        &[("COREKV_SHARDS", "abc")],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("COREKV_SHARDS"), "{stderr}");

    let o = corekv(&["config", "show"], &[("COREKV_SHRADS", "2")]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(
        stderr.contains("COREKV_SHRADS") && stderr.contains("not a corekv setting"),
        "{stderr}"
    );

    let o = corekv(
        &[
            "serve",
            "--data-dir",
            data.to_str().unwrap(),
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "off",
            "--cpus",
            "0,999",
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("999") && stderr.contains("--cpus"),
        "{stderr}"
    );
    assert!(
        !data.join("corekv.meta").exists(),
        "a start that failed on --cpus fixed the directory's shard count"
    );
    let server = common::start_server(&data, &["--shards", "1"]);
    assert_eq!(server.stop().0, Some(0));
}

/// Issue 22, trap 8: a data dir on a volume that is not mounted used to be
/// created fresh (parents and all) on the file system underneath and served
/// as an empty, healthy database. corekv never creates a missing parent;
/// `config check` and `serve` refuse it by the same name, and nothing is
/// created.
#[test]
fn a_data_dir_whose_parent_is_missing_is_refused_by_check_and_serve() {
    let dir = tempfile::tempdir().unwrap();
    let mount_point = dir.path().join("mnt-notmounted");
    let data = mount_point.join("corekv");
    let base = [
        "--data-dir",
        data.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--admin-listen",
        "127.0.0.1:0",
    ];
    let mut args = vec!["config", "check"];
    args.extend_from_slice(&base);
    let o = corekv(&args, &[]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    assert!(
        stdout(&o).contains("DATA_DIR_PARENT_MISSING"),
        "{}",
        stdout(&o)
    );
    let mut args = vec!["serve"];
    args.extend_from_slice(&base);
    let o = corekv(&args, &[]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("DATA_DIR_PARENT_MISSING"), "{stderr}");
    assert!(
        stderr.contains("mkdir -p"),
        "the fix says what to do: {stderr}"
    );
    assert!(!mount_point.exists(), "serve created the missing parent");
    // Once the parent exists (the volume is mounted), the first start creates
    // the data directory itself, as before.
    std::fs::create_dir(&mount_point).unwrap();
    let server = common::try_start_server(&data, &[]).expect("first start");
    assert!(data.join("corekv.meta").exists());
    server.kill();
}

/// Renamed settings (issue 18: every name says its unit) keep working under
/// their old names for one release, with a warning naming the new one: a
/// config file key, a flag, an environment variable; precedence stays
/// flag > environment > file > default whichever name is used.
#[test]
fn old_names_work_with_a_warning() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("old.toml");
    std::fs::write(
        &file,
        "cache_size = 2097152\nspin_us = 5\nconn_buffer_budget = 8388608\n",
    )
    .unwrap();
    let f = file.to_str().unwrap();
    let o = corekv(
        &["config", "show", "--config", f, "--memtable-size", "131072"],
        &[("COREKV_TABLE_SIZE", "262144")],
    );
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert_eq!(
        line(&out, "cache_bytes"),
        "cache_bytes = 2097152  # config file"
    );
    assert_eq!(
        line(&out, "spin_before_park_us"),
        "spin_before_park_us = 5  # config file"
    );
    assert_eq!(
        line(&out, "conn_buffer_budget_bytes"),
        "conn_buffer_budget_bytes = 8388608  # config file"
    );
    assert_eq!(
        line(&out, "memtable_bytes"),
        "memtable_bytes = 131072  # flag"
    );
    assert_eq!(
        line(&out, "table_target_bytes"),
        "table_target_bytes = 262144  # environment"
    );
    for (old, new) in [
        ("key `cache_size`", "`cache_bytes`"),
        ("key `spin_us`", "`spin_before_park_us`"),
        ("key `conn_buffer_budget`", "`conn_buffer_budget_bytes`"),
        ("--memtable-size", "--memtable-bytes"),
        ("COREKV_TABLE_SIZE", "COREKV_TABLE_TARGET_BYTES"),
    ] {
        assert!(
            stderr
                .lines()
                .any(|l| l.starts_with("warning: ") && l.contains(old) && l.contains(new)),
            "no deprecation warning for {old} naming {new}: {stderr}"
        );
    }
    assert!(
        !stderr.contains("not a corekv setting"),
        "an old variable is still a setting: {stderr}"
    );

    // Precedence across names: an old flag beats a new variable, a new flag
    // beats an old variable, a new key in the file beats an old one.
    std::fs::write(&file, "cache_size = 2097152\ncache_bytes = 3145728\n").unwrap();
    let o = corekv(
        &[
            "config",
            "show",
            "--config",
            f,
            "--spin-us",
            "7",
            "--table-target-bytes",
            "524288",
        ],
        &[
            ("COREKV_SPIN_BEFORE_PARK_US", "9"),
            ("COREKV_TABLE_SIZE", "262144"),
        ],
    );
    assert!(o.status.success(), "{o:?}");
    let out = stdout(&o);
    assert_eq!(
        line(&out, "spin_before_park_us"),
        "spin_before_park_us = 7  # flag"
    );
    assert_eq!(
        line(&out, "table_target_bytes"),
        "table_target_bytes = 524288  # flag"
    );
    assert_eq!(
        line(&out, "cache_bytes"),
        "cache_bytes = 3145728  # config file"
    );

    // An old name's value is validated under the new name, and `config
    // check` prints the warning with its other warnings.
    let o = corekv(
        &[
            "config",
            "check",
            "--cache-size",
            "1000",
            "--admin-listen",
            "off",
        ],
        &[],
    );
    assert_eq!(o.status.code(), Some(1));
    let out = stdout(&o);
    assert!(out.contains("problem: cache_bytes = 1000"), "{out}");
    assert!(out.contains("warning: --cache-size is deprecated"), "{out}");
}
