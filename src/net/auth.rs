//! Authentication on the network side: the live users table (replaced
//! whole on SIGHUP), a shard's failed-login throttle, verifying an AUTH off
//! the shard's executor, and HTTP basic auth for the admin endpoint.
//!
//! Permissions themselves are decided by `core::auth::permits`; this module
//! only establishes who a connection is. It must never verify a password on a
//! shard's core: argon2 takes tens of ms and 19 MiB by design. A shard hands
//! the work to glommio's blocking thread, which only waits: glommio pins that
//! thread to the shard's own CPU, so the hashing itself runs on the
//! [`Verifier`]'s unpinned threads. It must never log, echo or format a
//! password or a hash: log lines name the user and the source address only.

use std::cell::RefCell;
use std::net::IpAddr;
use std::sync::mpsc;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Instant;

use crate::core::auth::{verify_password, Role, Session, Throttle, Users, DUMMY_HASH};
use crate::core::status::Status;

use super::admission::{Refusal, Refusals};

/// The users the server knows, shared by every shard and the admin thread,
/// and the threads that verify their passwords. Reads take a clone of the
/// `Arc` (no lock held while verifying); a reload swaps in a whole new table,
/// so a connection's session outlives it and nobody ever sees half a file.
#[derive(Debug)]
pub struct UsersHandle {
    users: RwLock<Arc<Users>>,
    verifier: Verifier,
}

impl UsersHandle {
    /// Create it on a thread that is not pinned to a shard's CPU (the
    /// verifier threads inherit its CPU affinity): `serve` does so on its
    /// main thread, before the shards start.
    pub fn new(users: Users) -> UsersHandle {
        UsersHandle {
            users: RwLock::new(Arc::new(users)),
            verifier: Verifier::start(VERIFIER_THREADS_MAX),
        }
    }

    pub fn get(&self) -> Arc<Users> {
        // A writer that panicked left a whole table behind (the swap is one
        // assignment): keep serving it.
        match self.users.read() {
            Ok(g) => g.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    pub fn replace(&self, users: Users) {
        let users = Arc::new(users);
        match self.users.write() {
            Ok(mut g) => *g = users,
            Err(poisoned) => *poisoned.into_inner() = users,
        }
    }

    /// Verify on a verifier thread; blocks the caller until it is done.
    pub fn verify(&self, hash: String, password: Vec<u8>) -> bool {
        self.verifier.verify(hash, password)
    }
}

/// Verifier threads at most (fewer on a smaller machine): each verification
/// holds 19 MiB while it runs, so this bounds AUTH's memory and its share of
/// the CPUs however many clients log in at once; the rest queue.
pub const VERIFIER_THREADS_MAX: usize = 4;

type Job = (String, Vec<u8>, mpsc::SyncSender<bool>);

/// A small pool of plain, unpinned threads that run argon2.
#[derive(Debug)]
struct Verifier {
    jobs: mpsc::Sender<Job>,
}

impl Verifier {
    fn start(max: usize) -> Verifier {
        let threads = std::thread::available_parallelism().map_or(1, |n| n.get().clamp(1, max));
        let (jobs, queue) = mpsc::channel::<Job>();
        let queue = Arc::new(Mutex::new(queue));
        for i in 0..threads {
            let queue = queue.clone();
            let started = std::thread::Builder::new()
                .name(format!("corekv-auth-{i}"))
                .spawn(move || loop {
                    let job = match queue.lock() {
                        Ok(q) => q.recv(),
                        Err(poisoned) => poisoned.into_inner().recv(),
                    };
                    let Ok((hash, password, reply)) = job else {
                        return; // every sender is gone: the server is stopping
                    };
                    let _ = reply.send(verify_password(&hash, &password));
                });
            if let Err(e) = started {
                // With no thread at all every AUTH fails (closed channel):
                // safe, and the log says why.
                tracing::error!("cannot start password verifier thread {i}: {e}");
            }
        }
        Verifier { jobs }
    }

    fn verify(&self, hash: String, password: Vec<u8>) -> bool {
        let (reply, answer) = mpsc::sync_channel(1);
        if self.jobs.send((hash, password, reply)).is_err() {
            return false;
        }
        answer.recv().unwrap_or(false)
    }
}

/// A shard's authentication state: the shared users table and this shard's
/// own throttle (shared-nothing: no lock, no cross-core traffic).
#[derive(Debug)]
pub struct ShardAuth {
    pub users: Arc<UsersHandle>,
    throttle: RefCell<Throttle>,
    /// The process-wide refusal counters (touched only when an AUTH fails).
    refusals: Arc<Refusals>,
}

impl ShardAuth {
    pub fn new(users: Arc<UsersHandle>, refusals: Arc<Refusals>) -> ShardAuth {
        ShardAuth {
            users,
            throttle: RefCell::new(Throttle::default()),
            refusals,
        }
    }

    /// A connection whose verified client certificate names (subject CN) a
    /// user in the users file is that user from the start, without AUTH;
    /// `None` when no user has that name (the connection must AUTH).
    pub fn session_for_certificate(
        &self,
        name: &str,
        peer: Option<IpAddr>,
    ) -> Option<crate::core::auth::Session> {
        let role = self.users.get().users.get(name)?.role;
        tracing::debug!(
            user = name,
            ?peer,
            role = role.name(),
            "authenticated by client certificate"
        );
        Some(crate::core::auth::Session {
            user: Some(name.to_string()),
            role: Some(role),
        })
    }
}

/// The outcome of one AUTH: the status and body to answer, and the new
/// session when it succeeded.
pub struct AuthOutcome {
    pub status: Status,
    pub body: Vec<u8>,
    pub session: Option<Session>,
}

/// Check `user`/`password` from `peer`, on glommio's blocking pool. Throttled
/// sources are refused without verifying; every refusal is logged (user and
/// address, never the password) and counted by the caller's metrics (as the
/// status it answers).
pub async fn authenticate(
    auth: &ShardAuth,
    peer: Option<IpAddr>,
    user: String,
    password: Vec<u8>,
) -> AuthOutcome {
    // Connections whose peer address is unknown share one throttle entry.
    let addr = peer.unwrap_or(IpAddr::from([0u8, 0, 0, 0]));
    if let Err(wait) = auth.throttle.borrow().check(addr, Instant::now()) {
        auth.refusals.count(Refusal::AuthThrottled);
        tracing::warn!(user, %addr, "AUTH refused: too many failures from this address (throttled)");
        return AuthOutcome {
            status: Status::AuthThrottled,
            body: format!(
                "too many failed AUTHs from this address; retry in {} ms",
                wait.as_millis().max(1)
            )
            .into_bytes(),
            session: None,
        };
    }
    let known = auth.users.get().users.get(&user).cloned();
    let (hash, role) = match &known {
        Some(u) => (u.hash.clone(), Some(u.role)),
        // Same work for an unknown user: no enumeration by timing.
        None => (DUMMY_HASH.to_string(), None),
    };
    let users = auth.users.clone();
    // The blocking thread only waits (it shares the shard's CPU); a verifier
    // thread hashes.
    let ok = glommio::executor()
        .spawn_blocking(move || users.verify(hash, password))
        .await;
    match (ok, role) {
        (true, Some(role)) => {
            auth.throttle.borrow_mut().succeeded(addr);
            tracing::debug!(user, %addr, role = role.name(), "AUTH succeeded");
            AuthOutcome {
                status: Status::Ok,
                body: role.name().as_bytes().to_vec(),
                session: Some(Session {
                    user: Some(user),
                    role: Some(role),
                }),
            }
        }
        _ => {
            auth.throttle.borrow_mut().failed(addr, Instant::now());
            auth.refusals.count(Refusal::AuthFailed);
            tracing::warn!(user, %addr, "AUTH refused: unknown user or wrong password");
            AuthOutcome {
                status: Status::AuthFailed,
                body: b"unknown user or wrong password".to_vec(),
                session: None,
            }
        }
    }
}

/// The admin endpoint's gate: users (when configured) and whether /health
/// needs them too. One throttle: the endpoint is one thread.
#[derive(Debug)]
pub struct AdminAuth {
    pub users: Option<Arc<UsersHandle>>,
    pub health_requires_auth: bool,
    throttle: Throttle,
}

/// Why an admin request is refused.
#[derive(Debug, PartialEq, Eq)]
pub enum AdminRefusal {
    /// No or bad credentials: 401 with a `WWW-Authenticate` challenge.
    Unauthorized,
    /// A valid user whose role is not admin: 403.
    Forbidden,
    /// Too many failures from this address: 429.
    Throttled,
}

impl AdminAuth {
    pub fn new(users: Option<Arc<UsersHandle>>, health_requires_auth: bool) -> AdminAuth {
        AdminAuth {
            users,
            health_requires_auth,
            throttle: Throttle::default(),
        }
    }

    /// Admit a request for `path` with `authorization` (the header's value)
    /// from `peer`. Without users everything is open, as before.
    pub fn admit(
        &mut self,
        path: &str,
        authorization: Option<&str>,
        peer: Option<IpAddr>,
    ) -> Result<(), AdminRefusal> {
        let Some(users) = &self.users else {
            return Ok(());
        };
        if path == "/health" && !self.health_requires_auth {
            return Ok(());
        }
        let addr = peer.unwrap_or(IpAddr::from([0u8, 0, 0, 0]));
        if self.throttle.check(addr, Instant::now()).is_err() {
            tracing::warn!(%addr, path, "admin request refused: too many failures from this address (throttled)");
            return Err(AdminRefusal::Throttled);
        }
        let Some((user, password)) = authorization.and_then(basic_credentials) else {
            tracing::warn!(%addr, path, "admin request refused: no basic-auth credentials");
            return Err(AdminRefusal::Unauthorized);
        };
        let known = users.get().users.get(&user).cloned();
        let hash = known.as_ref().map_or(DUMMY_HASH, |u| u.hash.as_str());
        // The admin thread is not a shard: verifying here stalls no request.
        if !verify_password(hash, password.as_bytes()) || known.is_none() {
            self.throttle.failed(addr, Instant::now());
            tracing::warn!(user, %addr, path, "admin request refused: unknown user or wrong password");
            return Err(AdminRefusal::Unauthorized);
        }
        self.throttle.succeeded(addr);
        match known.map(|u| u.role) {
            Some(Role::Admin) => Ok(()),
            _ => {
                tracing::warn!(user, %addr, path, "admin request refused: the user's role is not admin");
                Err(AdminRefusal::Forbidden)
            }
        }
    }
}

/// `(user, password)` of an `Authorization: Basic base64(user:password)`
/// header value.
pub fn basic_credentials(header: &str) -> Option<(String, String)> {
    let (scheme, encoded) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64_decode(encoded.trim())?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, password) = text.split_once(':')?;
    Some((user.to_string(), password.to_string()))
}

/// Standard base64 (with or without padding); `None` for anything else.
pub fn base64_decode(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let (mut acc, mut bits) = (0u32, 0u32);
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => return None,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Some(out)
}

/// Standard base64 with padding (for clients sending basic auth).
pub fn base64_encode(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_round_trips_and_basic_auth_parses() {
        for s in [&b""[..], b"a", b"ab", b"abc", b"admin:pa:ss word"] {
            assert_eq!(base64_decode(&base64_encode(s)).as_deref(), Some(s));
        }
        assert_eq!(base64_encode(b"user:pw"), "dXNlcjpwdw==");
        assert_eq!(
            basic_credentials("Basic dXNlcjpwdw=="),
            Some(("user".into(), "pw".into()))
        );
        assert_eq!(basic_credentials("Bearer dXNlcjpwdw=="), None);
        assert_eq!(basic_credentials("Basic !!"), None);
    }
}
