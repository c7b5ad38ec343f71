//! Key expiry (TTL): the representation stored with a value and the pure rules
//! around it.
//!
//! An expiry is an absolute wall-clock time in unix milliseconds (`u64`), with
//! 0 meaning "never" ([`NEVER`]). Absolute, like Redis persists it, so that the
//! WAL, tables and backups hold a time that means the same thing after a
//! restart: a key whose time passed while the server was down is gone to every
//! reader at startup. The clock is CLOCK_REALTIME, read by the shard once per
//! operation batch (`shard::state::now_unix_ms`); a wall-clock jump moves every
//! expiry with it, as in Redis (docs/expiry.md).
//!
//! Pure: takes "now" as an argument and never reads a clock itself, so the
//! formats and the simulator stay deterministic.

/// "Does not expire".
pub const NEVER: u64 = 0;

/// Whether a value with expiry `expires_at` is expired at `now_ms`: from its
/// millisecond on. (Redis keeps a key through its millisecond and deletes at
/// once on an EXPIRE to "now"; one rule here, `>=`, serves both, and keeps a
/// live key's PTTL at least 1.)
pub fn is_expired(expires_at: u64, now_ms: u64) -> bool {
    expires_at != NEVER && now_ms >= expires_at
}

/// Milliseconds left (at least 1 for a live key, by [`is_expired`]'s rule),
/// or `None` for no expiry.
pub fn remaining_ms(expires_at: u64, now_ms: u64) -> Option<u64> {
    (expires_at != NEVER).then(|| expires_at.saturating_sub(now_ms))
}

/// The unit of a relative or absolute expiry argument (SET EX/PX/EXAT/PXAT,
/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum ExpiryArg {
    /// Relative seconds (EX, EXPIRE, SETEX).
    Seconds,
    /// Relative milliseconds (PX, PEXPIRE, PSETEX).
    Millis,
    /// Absolute unix seconds (EXAT, EXPIREAT).
    UnixSeconds,
    /// Absolute unix milliseconds (PXAT, PEXPIREAT).
    UnixMillis,
}

/// Why an expiry argument is refused (Redis: "invalid expire time in '<cmd>'
/// command").
#[derive(Copy, Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ExpiryError {
    #[error("invalid expire time")]
    Invalid,
}

/// The absolute expiry (unix ms) an argument asks for, with Redis's overflow
/// rules. `positive_only`: SET/SETEX/GETEX refuse `<= 0` (EXPIRE accepts any
/// value, a past one deleting the key). The result may be in the past; it is
/// never [`NEVER`] (a computed time of 0 becomes 1: already expired).
pub fn absolute_ms(
    arg: i64,
    unit: ExpiryArg,
    now_ms: u64,
    positive_only: bool,
) -> Result<u64, ExpiryError> {
    if positive_only && arg <= 0 {
        return Err(ExpiryError::Invalid);
    }
    let ms: i64 = match unit {
        ExpiryArg::Seconds | ExpiryArg::UnixSeconds => {
            arg.checked_mul(1000).ok_or(ExpiryError::Invalid)?
        }
        ExpiryArg::Millis | ExpiryArg::UnixMillis => arg,
    };
    let abs: i64 = match unit {
        ExpiryArg::Seconds | ExpiryArg::Millis => {
            let now = i64::try_from(now_ms).map_err(|_| ExpiryError::Invalid)?;
            ms.checked_add(now).ok_or(ExpiryError::Invalid)?
        }
        ExpiryArg::UnixSeconds | ExpiryArg::UnixMillis => ms,
    };
    // A time at or before the epoch is simply "in the past".
    Ok(u64::try_from(abs).unwrap_or(0).max(1))
}

/// The condition of an EXPIRE (native mode byte; Redis NX/XX/GT/LT).
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum ExpireMode {
    /// Set unconditionally.
    Always = 0,
    /// Only if the key has no expiry.
    Nx = 1,
    /// Only if the key has an expiry.
    Xx = 2,
    /// Only if the new expiry is greater (no expiry counts as infinite).
    Gt = 3,
    /// Only if the new expiry is less (no expiry counts as infinite).
    Lt = 4,
    /// Remove the expiry (PERSIST): applied only if there was one.
    Persist = 5,
    /// Redis's `XX LT`: only if the key has an expiry and the new one is
    /// less (LT alone also applies to a key without one). `XX GT` needs no
    /// mode of its own: it is GT.
    XxLt = 6,
}

impl ExpireMode {
    pub fn from_u8(b: u8) -> Option<ExpireMode> {
        Some(match b {
            0 => ExpireMode::Always,
            1 => ExpireMode::Nx,
            2 => ExpireMode::Xx,
            3 => ExpireMode::Gt,
            4 => ExpireMode::Lt,
            5 => ExpireMode::Persist,
            6 => ExpireMode::XxLt,
            _ => return None,
        })
    }

    /// Whether an EXPIRE in this mode applies to a live key whose expiry is
    /// `current` ([`NEVER`]: none), asking for `new`. Redis semantics: GT/LT
    /// treat "no expiry" as infinite, so GT never applies to a persistent key
    /// and LT always does.
    pub fn applies(self, current: u64, new: u64) -> bool {
        let inf = |t: u64| if t == NEVER { u64::MAX } else { t };
        match self {
            ExpireMode::Always => true,
            ExpireMode::Nx => current == NEVER,
            ExpireMode::Xx => current != NEVER,
            ExpireMode::Gt => inf(new) > inf(current),
            ExpireMode::Lt => inf(new) < inf(current),
            ExpireMode::Persist => current != NEVER,
            ExpireMode::XxLt => current != NEVER && inf(new) < current,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expired_is_at_or_after_the_time_and_never_for_zero() {
        assert!(!is_expired(NEVER, u64::MAX));
        assert!(!is_expired(1000, 999));
        assert!(is_expired(1000, 1000));
        assert!(is_expired(1000, 1001));
        assert_eq!(remaining_ms(NEVER, 5), None);
        assert_eq!(remaining_ms(1000, 400), Some(600));
        assert_eq!(remaining_ms(1000, 4000), Some(0));
    }

    #[test]
    fn relative_and_absolute_arguments_with_overflow_checks() {
        let now = 1_700_000_000_000;
        assert_eq!(
            absolute_ms(10, ExpiryArg::Seconds, now, true),
            Ok(now + 10_000)
        );
        assert_eq!(absolute_ms(10, ExpiryArg::Millis, now, true), Ok(now + 10));
        assert_eq!(absolute_ms(5, ExpiryArg::UnixSeconds, now, true), Ok(5000));
        assert_eq!(absolute_ms(5, ExpiryArg::UnixMillis, now, true), Ok(5));
        assert_eq!(
            absolute_ms(0, ExpiryArg::Seconds, now, true),
            Err(ExpiryError::Invalid)
        );
        assert_eq!(
            absolute_ms(-1, ExpiryArg::Millis, now, true),
            Err(ExpiryError::Invalid)
        );
        // EXPIRE accepts a past time: the key goes at once.
        assert_eq!(
            absolute_ms(-100, ExpiryArg::Seconds, now, false),
            Ok(now - 100_000)
        );
        assert_eq!(absolute_ms(0, ExpiryArg::UnixMillis, now, false), Ok(1));
        assert_eq!(
            absolute_ms(i64::MIN, ExpiryArg::UnixMillis, now, false),
            Ok(1)
        );
        for unit in [ExpiryArg::Seconds, ExpiryArg::UnixSeconds] {
            assert_eq!(
                absolute_ms(i64::MAX / 100, unit, now, false),
                Err(ExpiryError::Invalid)
            );
        }
        assert_eq!(
            absolute_ms(i64::MAX, ExpiryArg::Millis, now, false),
            Err(ExpiryError::Invalid)
        );
    }

    #[test]
    fn modes_follow_redis_including_infinite_for_no_expiry() {
        use ExpireMode::*;
        assert!(Nx.applies(NEVER, 5) && !Nx.applies(7, 5));
        assert!(!Xx.applies(NEVER, 5) && Xx.applies(7, 5));
        assert!(!Gt.applies(NEVER, 5) && Gt.applies(3, 5) && !Gt.applies(5, 5));
        assert!(Lt.applies(NEVER, 5) && Lt.applies(7, 5) && !Lt.applies(3, 5));
        assert!(Persist.applies(7, 0) && !Persist.applies(NEVER, 0));
        assert!(!XxLt.applies(NEVER, 5) && XxLt.applies(7, 5) && !XxLt.applies(3, 5));
        for b in 0..=255u8 {
            assert_eq!(
                ExpireMode::from_u8(b).map(|m| m as u8),
                (b <= 6).then_some(b)
            );
        }
    }
}
