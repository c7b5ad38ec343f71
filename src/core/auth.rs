//! Who may do what: roles, the access each operation needs, the users file's
//! format, password verification, and the failed-login throttle's bookkeeping.
//!
//! This is the one place that decides permissions ([`permits`]); every
//! listener (the native protocol, a future RESP listener, the admin HTTP
//! endpoint) asks it with the connection's [`Session`] and the [`Access`] its
//! command needs, which each protocol's command table declares (the native
//! one: the `opcodes!` table of `net::codec`).
//!
//! Pure: no I/O and no clock (the throttle is handed `now`). Reading, writing
//! and hashing with fresh salt live in `io::users_file`. It must never log or
//! format a password or a hash into an error: messages name users and line
//! numbers only.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::net::IpAddr;
use std::time::{Duration, Instant};

use crate::core::status::Status;

/// What a user may do; each role includes the ones before it.
#[derive(Copy, Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// GET, MGET, SCAN (snapshot reads).
    Read,
    /// Read, plus PUT, DELETE, MPUT, TXN.
    Write,
    /// Write, plus BACKUP and the admin HTTP endpoint's /metrics (and any
    /// future administrative operation: flush, config, shutdown).
    Admin,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Read, Role::Write, Role::Admin];

    pub fn name(self) -> &'static str {
        match self {
            Role::Read => "read",
            Role::Write => "write",
            Role::Admin => "admin",
        }
    }

    pub fn parse(s: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|r| r.name() == s)
    }
}

/// What an operation needs. Every command of every protocol names one in its
/// table; there is no default, so a new command cannot forget to.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Access {
    /// Allowed before authenticating: the handshake (HELLO), liveness (PING)
    /// and AUTH itself. Reveals the server version and shard count, no data.
    Open,
    Read,
    Write,
    Admin,
}

/// The role table: which accesses each role is granted. Plain data, read by
/// [`permits`] and printed in docs/security.md.
pub const GRANTS: &[(Role, &[Access])] = &[
    (Role::Read, &[Access::Open, Access::Read]),
    (Role::Write, &[Access::Open, Access::Read, Access::Write]),
    (
        Role::Admin,
        &[Access::Open, Access::Read, Access::Write, Access::Admin],
    ),
];

/// Whether `role` (`None`: not authenticated) may perform an operation that
/// needs `access`. The only permission decision in corekv.
pub fn permits(role: Option<Role>, access: Access) -> bool {
    match role {
        None => access == Access::Open,
        Some(role) => GRANTS
            .iter()
            .any(|(r, grants)| *r == role && grants.contains(&access)),
    }
}

/// One connection's identity, as far as permissions go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Session {
    /// The authenticated user (`None`: not authenticated, or authentication
    /// is off).
    pub user: Option<String>,
    /// What the connection may do; `None` until it authenticates.
    pub role: Option<Role>,
}

impl Session {
    /// A new connection: unauthenticated when users are configured; with
    /// authentication off, everyone is an admin (the protected-mode check at
    /// startup keeps such a server on loopback unless told otherwise).
    pub fn new(auth_required: bool) -> Session {
        Session {
            user: None,
            role: (!auth_required).then_some(Role::Admin),
        }
    }

    /// `Ok` if the session may perform an operation needing `access`; else the
    /// status to answer: NOAUTH before authenticating, PERMISSION_DENIED after.
    pub fn check(&self, access: Access) -> Result<(), Status> {
        if permits(self.role, access) {
            Ok(())
        } else if self.role.is_none() {
            Err(Status::NoAuth)
        } else {
            Err(Status::PermissionDenied)
        }
    }
}

/// Longest user name accepted anywhere (wire, file, CLI).
pub const USER_NAME_BYTES_MAX: usize = 64;
/// Longest password accepted on the wire: bounds the hashing work one AUTH
/// can cause.
pub const PASSWORD_BYTES_MAX: usize = 1024;

/// Whether `name` is an acceptable user name: 1 to 64 of `[A-Za-z0-9_.-]`
/// (no spaces or colons, so it survives HTTP basic auth and logs unquoted).
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= USER_NAME_BYTES_MAX
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
}

/// One user of the users file.
#[derive(Clone, PartialEq, Eq)]
pub struct User {
    /// An argon2id PHC string (`$argon2id$v=19$m=...,t=...,p=...$salt$hash`).
    pub hash: String,
    pub role: Role,
}

/// Never shows the hash: a `{:?}` in a log line must not leak it.
impl std::fmt::Debug for User {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("User")
            .field("role", &self.role)
            .finish_non_exhaustive()
    }
}

/// The users file, parsed: `[users.NAME]` tables with `hash` and `role`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Users {
    pub users: BTreeMap<String, User>,
}

/// A problem with a users file. Messages never quote the file's text (a
/// parser's excerpt could be a hash).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum UsersFormatError {
    #[error("not valid TOML (near line {line})")]
    Toml { line: usize },
    #[error("{0}")]
    Invalid(String),
}

impl Users {
    /// Parse the users file's text.
    pub fn parse(text: &str) -> Result<Users, UsersFormatError> {
        let table: toml::Table = toml::from_str(text).map_err(|e| UsersFormatError::Toml {
            line: e.span().map_or(0, |s| {
                let before = text.as_bytes().get(..s.start).unwrap_or(text.as_bytes());
                1 + before.iter().filter(|&&b| b == b'\n').count()
            }),
        })?;
        let invalid = |m: String| UsersFormatError::Invalid(m);
        let mut users = BTreeMap::new();
        for (key, value) in &table {
            if key != "users" {
                return Err(invalid(format!(
                    "unknown top-level key `{key}` (expected only [users.NAME] tables)"
                )));
            }
            let Some(entries) = value.as_table() else {
                return Err(invalid("`users` must be a table of [users.NAME]".into()));
            };
            for (name, entry) in entries {
                if !valid_user_name(name) {
                    return Err(invalid(format!(
                        "user name {name:?}: 1 to {USER_NAME_BYTES_MAX} of A-Z a-z 0-9 _ . -"
                    )));
                }
                let field = |f: &str| entry.get(f).and_then(|v| v.as_str());
                let hash = field("hash").ok_or_else(|| {
                    invalid(format!("user {name}: `hash` missing or not a string"))
                })?;
                if !hash.starts_with("$argon2id$") {
                    return Err(invalid(format!(
                        "user {name}: `hash` is not an argon2id PHC string (set it with `corekv user passwd`)"
                    )));
                }
                let role = field("role").and_then(Role::parse).ok_or_else(|| {
                    invalid(format!("user {name}: `role` must be read, write or admin"))
                })?;
                if let Some(extra) = entry
                    .as_table()
                    .and_then(|t| t.keys().find(|k| !matches!(k.as_str(), "hash" | "role")))
                {
                    return Err(invalid(format!("user {name}: unknown key `{extra}`")));
                }
                users.insert(
                    name.clone(),
                    User {
                        hash: hash.to_string(),
                        role,
                    },
                );
            }
        }
        Ok(Users { users })
    }

    /// The file's text (users sorted by name).
    pub fn to_toml(&self) -> String {
        let mut out = String::from(
            "# corekv users file: edit with `corekv user add|passwd|del|list`.\n\
             # Hashes are argon2id; keep this file mode 0600 (see docs/security.md).\n",
        );
        for (name, user) in &self.users {
            // Names are [A-Za-z0-9_.-] and PHC strings have no quotes or
            // backslashes, so plain basic strings need no escaping.
            out.push_str(&format!(
                "\n[users.{name}]\nrole = \"{}\"\nhash = \"{}\"\n",
                user.role.name(),
                user.hash
            ));
        }
        out
    }
}

/// Verify `password` against a PHC string; `false` for a wrong password and
/// for a hash that does not parse. CPU-heavy (tens of ms by design): never
/// call it on a shard's executor, only from a blocking thread.
pub fn verify_password(hash: &str, password: &[u8]) -> bool {
    use argon2::password_hash::PasswordVerifier;
    argon2::Argon2::default()
        .verify_password(password, hash)
        .is_ok()
}

/// A PHC hash of a password nobody has, verified when AUTH names an unknown
/// user, so that the answer takes as long as for a known one (no user
/// enumeration by timing). Parameters are argon2's defaults, as `user add`
/// uses.
pub const DUMMY_HASH: &str =
    "$argon2id$v=19$m=19456,t=2,p=1$c2FsdHNhbHRzYWx0c2FsdA$4h0O9NdeCgxMEzzsJxDbgaBwrbQ2Ff2Z1Jd20p8Tw0s";

/// Free failed attempts per source address before the throttle starts.
pub const THROTTLE_FREE_FAILURES: u32 = 3;
/// The wait after the first throttled failure; doubles with each further
/// failure up to [`THROTTLE_DELAY_MAX`].
pub const THROTTLE_DELAY_BASE: Duration = Duration::from_millis(250);
pub const THROTTLE_DELAY_MAX: Duration = Duration::from_secs(30);
/// Source addresses remembered at once; past it, forgotten entries are the
/// ones whose wait is over (then, if all are live, all: memory stays bounded
/// whatever an attacker with many addresses does).
pub const THROTTLE_ENTRIES_MAX: usize = 10_000;

#[derive(Copy, Clone, Debug)]
struct Failures {
    count: u32,
    until: Instant,
}

/// Failed authentications per source address. One per shard (and one for the
/// admin endpoint): shared-nothing, so an attacker spread over `n` shards gets
/// `n` times the attempts; docs/security.md says so.
#[derive(Debug, Default)]
pub struct Throttle {
    by_addr: HashMap<IpAddr, Failures>,
}

impl Throttle {
    /// `Err(wait)` when `addr` must wait before its next attempt is verified.
    pub fn check(&self, addr: IpAddr, now: Instant) -> Result<(), Duration> {
        match self.by_addr.get(&addr) {
            Some(f) if f.until > now => Err(f.until - now),
            _ => Ok(()),
        }
    }

    /// Record a failed attempt from `addr`.
    pub fn failed(&mut self, addr: IpAddr, now: Instant) {
        if self.by_addr.len() >= THROTTLE_ENTRIES_MAX && !self.by_addr.contains_key(&addr) {
            self.by_addr.retain(|_, f| f.until > now);
            if self.by_addr.len() >= THROTTLE_ENTRIES_MAX {
                self.by_addr.clear();
            }
        }
        let f = self.by_addr.entry(addr).or_insert(Failures {
            count: 0,
            until: now,
        });
        f.count = f.count.saturating_add(1);
        if f.count > THROTTLE_FREE_FAILURES {
            let doublings = (f.count - THROTTLE_FREE_FAILURES - 1).min(16);
            let delay = THROTTLE_DELAY_BASE
                .saturating_mul(1 << doublings)
                .min(THROTTLE_DELAY_MAX);
            f.until = now + delay;
        }
    }

    /// A successful authentication from `addr` clears its record.
    pub fn succeeded(&mut self, addr: IpAddr) {
        self.by_addr.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_nest_and_nobody_unauthenticated_gets_data() {
        for access in [Access::Read, Access::Write, Access::Admin] {
            assert!(!permits(None, access));
        }
        assert!(permits(None, Access::Open));
        assert!(permits(Some(Role::Read), Access::Read));
        assert!(!permits(Some(Role::Read), Access::Write));
        assert!(permits(Some(Role::Write), Access::Write));
        assert!(!permits(Some(Role::Write), Access::Admin));
        assert!(permits(Some(Role::Admin), Access::Admin));
        assert_eq!(Session::new(true).check(Access::Read), Err(Status::NoAuth));
        let reader = Session {
            user: Some("r".into()),
            role: Some(Role::Read),
        };
        assert_eq!(reader.check(Access::Write), Err(Status::PermissionDenied));
        assert_eq!(Session::new(false).check(Access::Admin), Ok(()));
    }

    #[test]
    fn users_file_round_trips_and_rejects_nonsense() {
        let mut users = Users::default();
        users.users.insert(
            "alice".into(),
            User {
                hash: DUMMY_HASH.into(),
                role: Role::Write,
            },
        );
        assert_eq!(Users::parse(&users.to_toml()), Ok(users));
        assert!(Users::parse("[users.a]\nrole = \"root\"\nhash = \"$argon2id$x\"").is_err());
        assert!(Users::parse("[users.a]\nrole = \"read\"\nhash = \"plaintext\"").is_err());
        let e = Users::parse("[users.a]\nhash = \"$argon2id$secret\nrole=").unwrap_err();
        assert!(!e.to_string().contains("secret"), "{e}");
    }

    #[test]
    fn verify_accepts_only_the_password() {
        assert!(!verify_password(DUMMY_HASH, b"anything"));
        assert!(!verify_password("not a hash", b""));
    }

    #[test]
    fn throttle_waits_grow_and_success_clears() {
        let now = Instant::now();
        let a: IpAddr = [10, 0, 0, 1].into();
        let mut t = Throttle::default();
        for _ in 0..THROTTLE_FREE_FAILURES {
            t.failed(a, now);
            assert!(t.check(a, now).is_ok());
        }
        t.failed(a, now);
        assert_eq!(t.check(a, now), Err(THROTTLE_DELAY_BASE));
        t.failed(a, now);
        assert_eq!(t.check(a, now), Err(THROTTLE_DELAY_BASE * 2));
        assert!(t.check(a, now + THROTTLE_DELAY_BASE * 2).is_ok());
        assert!(t.check([10, 0, 0, 2].into(), now).is_ok());
        t.succeeded(a);
        assert!(t.check(a, now).is_ok());
    }
}
