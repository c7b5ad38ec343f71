//! `corekv user add|passwd|del|list --users-file PATH`: edit the users file
//! (`core::auth` format, `io::users_file` atomic 0600 replace), and the
//! credentials flags every client subcommand shares (`--user`, the password
//! from `COREKV_PASSWORD` or `--password-file`).
//!
//! A password never comes from a command-line argument (other local users see
//! those in `ps`): it is read from stdin (`--password-stdin`) or typed at a
//! prompt with echo off. Nothing here prints a password or a hash.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};

use corekv::core::auth::{valid_user_name, Role, User, Users, USER_NAME_BYTES_MAX};
use corekv::io::users_file;

#[derive(Subcommand, Debug)]
pub enum UserCommand {
    /// Add a user (creates the file if it does not exist).
    Add {
        name: String,
        /// read (GET, MGET, SCAN), write (read + PUT, DELETE, MPUT, TXN) or
        /// admin (write + BACKUP and the admin endpoint).
        #[arg(long)]
        role: String,
        #[command(flatten)]
        file: FileArgs,
    },
    /// Set a user's password (and, with --role, its role).
    Passwd {
        name: String,
        #[arg(long)]
        role: Option<String>,
        #[command(flatten)]
        file: FileArgs,
    },
    /// Remove a user. Connections it authenticated keep their role until
    /// they close; reload the server (SIGHUP) to refuse new ones.
    Del {
        name: String,
        #[command(flatten)]
        file: FileArgs,
    },
    /// List users and roles (never hashes).
    List {
        #[command(flatten)]
        file: FileArgs,
    },
}

#[derive(Args, Debug)]
pub struct FileArgs {
    /// The users file (the server's `users_file` setting).
    #[arg(long, env = "COREKV_USERS_FILE")]
    pub users_file: PathBuf,
    /// Read the password from the first line of stdin instead of prompting.
    #[arg(long)]
    pub password_stdin: bool,
}

/// How a client subcommand authenticates.
#[derive(Args, Debug, Clone, Default)]
pub struct Credentials {
    /// Authenticate as this user (the password comes from COREKV_PASSWORD or
    /// --password-file, never from a flag).
    #[arg(long, env = "COREKV_USER")]
    pub user: Option<String>,
    /// A file whose first line is the password (keep it mode 0600).
    #[arg(long)]
    pub password_file: Option<PathBuf>,
}

impl Credentials {
    /// `(user, password)` when `--user` is given; an error names what is
    /// missing (never the password).
    pub fn resolve(&self) -> Result<Option<(String, Vec<u8>)>, String> {
        let Some(user) = &self.user else {
            return Ok(None);
        };
        let password = match &self.password_file {
            Some(path) => {
                let text = std::fs::read(path)
                    .map_err(|e| format!("--password-file {}: {e}", path.display()))?;
                first_line(&text).to_vec()
            }
            None => match std::env::var_os("COREKV_PASSWORD") {
                Some(p) => p.into_encoded_bytes(),
                None => {
                    return Err(format!(
                    "--user {user} needs a password: set COREKV_PASSWORD or pass --password-file"
                ))
                }
            },
        };
        Ok(Some((user.clone(), password)))
    }
}

fn first_line(bytes: &[u8]) -> &[u8] {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    line.strip_suffix(b"\r").unwrap_or(line)
}

pub fn run(command: UserCommand) -> ExitCode {
    match execute(command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("corekv user: {e}");
            ExitCode::from(2)
        }
    }
}

fn execute(command: UserCommand) -> Result<(), String> {
    match command {
        UserCommand::Add { name, role, file } => {
            let role = parse_role(&role)?;
            check_name(&name)?;
            let mut users = load_or_empty(&file.users_file)?;
            if users.users.contains_key(&name) {
                return Err(format!(
                    "user {name} already exists (change its password with `corekv user passwd`)"
                ));
            }
            let hash = new_hash(&file)?;
            users.users.insert(name.clone(), User { hash, role });
            save(&file.users_file, &users)?;
            println!("added user {name} with role {}", role.name());
        }
        UserCommand::Passwd { name, role, file } => {
            let role = role.as_deref().map(parse_role).transpose()?;
            let mut users = load(&file.users_file)?;
            let Some(user) = users.users.get(&name).cloned() else {
                return Err(format!("no user {name} in {}", file.users_file.display()));
            };
            let hash = new_hash(&file)?;
            let role = role.unwrap_or(user.role);
            users.users.insert(name.clone(), User { hash, role });
            save(&file.users_file, &users)?;
            println!("changed the password of {name} (role {})", role.name());
        }
        UserCommand::Del { name, file } => {
            let mut users = load(&file.users_file)?;
            if users.users.remove(&name).is_none() {
                return Err(format!("no user {name} in {}", file.users_file.display()));
            }
            save(&file.users_file, &users)?;
            println!("removed user {name}");
        }
        UserCommand::List { file } => {
            let users = load(&file.users_file)?;
            for (name, user) in &users.users {
                println!("{name}\t{}", user.role.name());
            }
        }
    }
    Ok(())
}

fn parse_role(s: &str) -> Result<Role, String> {
    Role::parse(s).ok_or_else(|| format!("--role {s:?}: must be read, write or admin"))
}

fn check_name(name: &str) -> Result<(), String> {
    if valid_user_name(name) {
        Ok(())
    } else {
        Err(format!(
            "user name {name:?}: 1 to {USER_NAME_BYTES_MAX} of A-Z a-z 0-9 _ . -"
        ))
    }
}

fn load(path: &Path) -> Result<Users, String> {
    users_file::load(path).map_err(|e| format!("{}: {e}", e.name()))
}

fn load_or_empty(path: &Path) -> Result<Users, String> {
    if path.exists() {
        load(path)
    } else {
        Ok(Users::default())
    }
}

fn save(path: &Path, users: &Users) -> Result<(), String> {
    users_file::save(path, users).map_err(|e| format!("{}: {e}", e.name()))
}

/// Read a new password (stdin or prompt) and hash it.
fn new_hash(file: &FileArgs) -> Result<String, String> {
    let password = if file.password_stdin {
        let mut line = Vec::new();
        std::io::stdin()
            .lock()
            .read_until(b'\n', &mut line)
            .map_err(|e| format!("reading the password from stdin: {e}"))?;
        first_line(&line).to_vec()
    } else if std::io::stdin().is_terminal() {
        let first = prompt("New password: ")?;
        if prompt("Again: ")? != first {
            return Err("the passwords differ; nothing changed".into());
        }
        first
    } else {
        return Err(
            "stdin is not a terminal: pass --password-stdin to read the password from it".into(),
        );
    };
    if password.is_empty() {
        return Err("empty password refused".into());
    }
    users_file::hash_password(&password).map_err(|e| format!("{}: {e}", e.name()))
}

/// Prompt on stderr and read a line from the terminal with echo off.
fn prompt(text: &str) -> Result<Vec<u8>, String> {
    eprint!("{text}");
    let _ = std::io::stderr().flush();
    let fd = libc::STDIN_FILENO;
    // SAFETY: termios is plain data; tcgetattr fills it for a terminal fd.
    let mut saved: libc::termios = unsafe { std::mem::zeroed() };
    // SAFETY: fd is stdin, checked to be a terminal by the caller.
    let have_tty = unsafe { libc::tcgetattr(fd, &mut saved) } == 0;
    if have_tty {
        let mut quiet = saved;
        quiet.c_lflag &= !libc::ECHO;
        // SAFETY: as above; restored below on every path.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &quiet) };
    }
    let mut line = Vec::new();
    let read = std::io::stdin().lock().read_until(b'\n', &mut line);
    if have_tty {
        // SAFETY: restores the settings read above.
        unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    }
    eprintln!();
    read.map_err(|e| format!("reading the password: {e}"))?;
    Ok(first_line(&line).to_vec())
}
