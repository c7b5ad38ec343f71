//! Wire status codes and their stable names.
//!
//! Every response carries a `Status`. Each non-OK status has a name that never
//! changes once released; docs/errors.md explains every name (cause and fix), and
//! a test fails if a name here is missing there. Numbers are grouped: 0–99 success,
//! 100–199 the request was bad (fix the client), 200–299 the server could not
//! serve it (operator action or retry), 300–399 transactions.

use std::fmt;

macro_rules! statuses {
    ($($variant:ident = $code:literal, $name:literal, $retry:literal, $doc:literal;)*) => {
        /// A response status. `#[non_exhaustive]`: clients must treat unknown codes
        /// as errors.
        #[derive(Copy, Clone, Debug, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        #[repr(u16)]
        pub enum Status {
            $(#[doc = $doc] $variant = $code,)*
        }

        impl Status {
            /// Every status, in code order.
            pub const ALL: &'static [Status] = &[$(Status::$variant,)*];

            pub fn from_code(code: u16) -> Option<Status> {
                match code {
                    $($code => Some(Status::$variant),)*
                    _ => None,
                }
            }

            /// The stable name, as printed by the CLI and listed in docs/errors.md.
            pub fn name(self) -> &'static str {
                match self {
                    $(Status::$variant => $name,)*
                }
            }

            /// Whether the same request may succeed if simply sent again later.
            pub fn retryable(self) -> bool {
                match self {
                    $(Status::$variant => $retry,)*
                }
            }

            /// One line saying what happened.
            pub fn describe(self) -> &'static str {
                match self {
                    $(Status::$variant => $doc,)*
                }
            }
        }
    };
}

statuses! {
    Ok = 0, "OK", false, "The request succeeded.";
    NotFound = 1, "NOT_FOUND", false, "The key does not exist.";
    BadFrame = 100, "BAD_FRAME", false, "The frame header is malformed (wrong magic or reserved bits set); the connection is closed.";
    UnsupportedVersion = 101, "UNSUPPORTED_VERSION", false, "The frame's protocol version is not one this server speaks; the connection is closed.";
    UnknownOpcode = 102, "UNKNOWN_OPCODE", false, "The opcode is not defined by this protocol version.";
    FrameTooLarge = 103, "FRAME_TOO_LARGE", false, "The frame's declared body length exceeds the server's frame limit; the connection is closed.";
    KeyTooLarge = 104, "KEY_TOO_LARGE", false, "The key is longer than the key limit (64 KiB).";
    ValueTooLarge = 105, "VALUE_TOO_LARGE", false, "The value is longer than the configured value limit.";
    MalformedBody = 106, "MALFORMED_BODY", false, "The body does not match its opcode's layout (a length points past the body, or bytes are left over); the connection is closed.";
    FrameTimeout = 107, "FRAME_TIMEOUT", false, "A frame was started but not completed within the frame deadline; the connection is closed.";
    InvalidArgument = 108, "INVALID_ARGUMENT", false, "A request field is out of range (a SCAN limit, a filter that does not compile, too many MGET keys).";
    ReplyTooLarge = 109, "REPLY_TOO_LARGE", false, "The reply (an MGET's values) would exceed the server's reply limit (reply_bytes_max); nothing was read. The body states the size and the limit: ask for fewer keys per request.";
    NoAuth = 110, "NOAUTH", false, "The connection has not authenticated and the server requires it (users_file is set): send AUTH first. Only HELLO, PING and AUTH are allowed before.";
    PermissionDenied = 111, "PERMISSION_DENIED", false, "The connection's user has a role that does not allow this operation (read < write < admin); nothing was done.";
    AuthFailed = 112, "AUTH_FAILED", false, "AUTH named an unknown user or a wrong password (the server does not say which); the connection stays as it was. Failures are counted per source address and throttled.";
    AuthThrottled = 113, "AUTH_THROTTLED", true, "Too many failed AUTHs from this source address: this attempt was not checked. The body says how long to wait.";
    WalFailed = 200, "WAL_FAILED", false, "The shard's WAL write or fdatasync failed; the shard refuses writes until restarted (reads still work).";
    ShuttingDown = 201, "SHUTTING_DOWN", true, "The server is shutting down and takes no new requests.";
    TooManyConnections = 202, "TOO_MANY_CONNECTIONS", true, "The server is at its connection limit; the connection is closed.";
    Internal = 203, "INTERNAL", false, "An internal invariant failed; the server log has details.";
    StorageCorrupt = 204, "STORAGE_CORRUPT", false, "Data needed for this request failed its checksum; nothing was returned for it.";
    IoError = 205, "IO_ERROR", true, "A read from disk failed; nothing was returned for it.";
    Overloaded = 206, "OVERLOADED", true, "The shard is past its memory budget for pending work (WAL backlog, or a memtable its flushes cannot keep up with); retry with back-off.";
    StorageFailed = 207, "STORAGE_FAILED", false, "A table flush or compaction on this shard failed (an I/O error); the shard refuses writes until restarted. Acknowledged writes are safe in the WAL. The body says why.";
    DiskFull = 208, "DISK_FULL", false, "The shard's disk (or quota) is full: a WAL write, flush or compaction found no space. The shard refuses writes until restarted; reads work; acknowledged writes are safe. The body names the path and its free bytes.";
    BackupFailed = 220, "BACKUP_FAILED", false, "An online backup could not be completed (I/O error, a shard's WAL failed, or writes stayed paused past the deadline); the body says why. Writes were not affected beyond a short wait.";
    BackupTargetInvalid = 221, "BACKUP_TARGET_INVALID", false, "The BACKUP target directory is unusable: not absolute, its parent does not exist, it is not empty, or it is inside the data directory.";
    BackupInProgress = 222, "BACKUP_IN_PROGRESS", true, "Another backup is running on this server; retry when it is done.";
    ConditionFailed = 300, "CONDITION_FAILED", false, "A TXN condition was false, so none of its writes were applied; the body names the index of the first false condition.";
    TxnAborted = 301, "TXN_ABORTED", true, "The transaction could not take its locks in time (contention) and was rolled back cleanly; nothing was applied. Retry it.";
    TxnInDoubt = 302, "TXN_IN_DOUBT", false, "The coordinating shard's WAL failed while recording the transaction's decision: it may or may not have committed. Restart the server; recovery resolves it all-or-nothing.";
    LockTimeout = 303, "LOCK_TIMEOUT", true, "The key is locked by a transaction that did not finish within the lock timeout; nothing was done. Retry.";
}

impl Status {
    pub fn is_ok(self) -> bool {
        matches!(self, Status::Ok)
    }

    pub fn code(self) -> u16 {
        self as u16
    }

    /// Whether this is an outcome of the request itself rather than a fault
    /// of the server: a missing key, a false condition, a bad or too large
    /// request, contention on the client's own keys. Metrics label these
    /// `class="client"` so that alerts page only on `class="server"` (a
    /// routine compare-and-set miss is not an incident).
    pub fn is_client_outcome(self) -> bool {
        match self {
            Status::NotFound
            | Status::ConditionFailed
            | Status::TxnAborted
            | Status::LockTimeout
            | Status::BackupTargetInvalid
            | Status::BackupInProgress => true,
            // 100–199: the request was bad (docs/errors.md).
            s => (100..200).contains(&s.code()),
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_and_names_are_unique_and_round_trip() {
        let mut codes = HashSet::new();
        let mut names = HashSet::new();
        for &s in Status::ALL {
            assert!(codes.insert(s.code()), "duplicate code {}", s.code());
            assert!(names.insert(s.name()), "duplicate name {}", s.name());
            assert_eq!(Status::from_code(s.code()), Some(s));
            assert!(s.name().chars().all(|c| c.is_ascii_uppercase() || c == '_'));
        }
        assert_eq!(Status::from_code(9999), None);
    }

    #[test]
    fn client_outcomes_and_server_errors() {
        for s in [
            Status::ConditionFailed,
            Status::NotFound,
            Status::KeyTooLarge,
        ] {
            assert!(s.is_client_outcome(), "{s}");
        }
        for s in [
            Status::WalFailed,
            Status::DiskFull,
            Status::StorageCorrupt,
            Status::TxnInDoubt,
            Status::Overloaded,
        ] {
            assert!(!s.is_client_outcome(), "{s}");
        }
    }
}
