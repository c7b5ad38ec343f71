//! The arguments of Redis's expiry-bearing commands, parsed once for both
//! places that run them: the routed commands (strings.rs, expiry.rs: one
//! engine operation in the owning shard) and the MULTI/EXEC evaluator
//! (multi.rs: the same command over a snapshot). One parser means a queued
//! `SET k v EX 0` fails with the same text as an unqueued one.
//!
//! Pure: it reads arguments and a clock reading passed in, and must never
//! route, read a key or look at the clock itself.

use crate::core::expiry::{absolute_ms, ExpireMode, ExpiryArg};
use crate::core::rmw::GetExChange;

use super::commands::{parse_i64, NOT_INTEGER, SYNTAX};

/// Redis's text for an expiry argument out of range.
pub(super) fn invalid_expire(cmd: &str) -> String {
    format!("ERR invalid expire time in '{cmd}' command")
}

/// SET's options.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct SetArgs {
    pub(super) nx: bool,
    pub(super) xx: bool,
    pub(super) get: bool,
    pub(super) keep_ttl: bool,
    /// Absolute unix ms; 0: none (a plain SET clears an expiry, as in Redis).
    pub(super) expires_at: u64,
}

/// SET key value [NX|XX] [GET] [EX s|PX ms|EXAT s|PXAT ms|KEEPTTL].
pub(super) fn parse_set(argv: &[&[u8]], now_ms: u64) -> Result<SetArgs, String> {
    let mut a = SetArgs::default();
    let mut expiry: Option<(ExpiryArg, &[u8])> = None;
    let mut i = 3;
    while i < argv.len() {
        let opt = argv[i].to_ascii_uppercase();
        let unit = match opt.as_slice() {
            b"EX" => Some(ExpiryArg::Seconds),
            b"PX" => Some(ExpiryArg::Millis),
            b"EXAT" => Some(ExpiryArg::UnixSeconds),
            b"PXAT" => Some(ExpiryArg::UnixMillis),
            _ => None,
        };
        match opt.as_slice() {
            b"NX" if !a.xx => a.nx = true,
            b"XX" if !a.nx => a.xx = true,
            b"GET" => a.get = true,
            b"KEEPTTL" if expiry.is_none() => a.keep_ttl = true,
            _ if unit.is_some() && expiry.is_none() && !a.keep_ttl && i + 1 < argv.len() => {
                expiry = unit.map(|u| (u, argv[i + 1]));
                i += 1;
            }
            _ => return Err(SYNTAX.to_string()),
        }
        i += 1;
    }
    if let Some((unit, arg)) = expiry {
        let n = parse_i64(arg).ok_or_else(|| NOT_INTEGER.to_string())?;
        a.expires_at = absolute_ms(n, unit, now_ms, true).map_err(|_| invalid_expire("set"))?;
    }
    Ok(a)
}

/// SETEX key seconds value / PSETEX key ms value: the absolute expiry.
pub(super) fn parse_setex(name: &str, argv: &[&[u8]], now_ms: u64) -> Result<u64, String> {
    let unit = if name == "setex" {
        ExpiryArg::Seconds
    } else {
        ExpiryArg::Millis
    };
    let n = parse_i64(argv[2]).ok_or_else(|| NOT_INTEGER.to_string())?;
    absolute_ms(n, unit, now_ms, true).map_err(|_| invalid_expire(name))
}

/// GETEX key [EX s|PX ms|EXAT s|PXAT ms|PERSIST] (Redis's getexCommand: at
/// most one option, PERSIST alone or a unit with its number).
pub(super) fn parse_getex(argv: &[&[u8]], now_ms: u64) -> Result<GetExChange, String> {
    match &argv[2..] {
        [] => Ok(GetExChange::None),
        [opt] if opt.eq_ignore_ascii_case(b"PERSIST") => Ok(GetExChange::Persist),
        [opt, n] => {
            let unit = match opt.to_ascii_uppercase().as_slice() {
                b"EX" => ExpiryArg::Seconds,
                b"PX" => ExpiryArg::Millis,
                b"EXAT" => ExpiryArg::UnixSeconds,
                b"PXAT" => ExpiryArg::UnixMillis,
                _ => return Err(SYNTAX.to_string()),
            };
            let n = parse_i64(n).ok_or_else(|| NOT_INTEGER.to_string())?;
            absolute_ms(n, unit, now_ms, true)
                .map(GetExChange::At)
                .map_err(|_| invalid_expire("getex"))
        }
        _ => Err(SYNTAX.to_string()),
    }
}

/// EXPIRE/PEXPIRE/EXPIREAT/PEXPIREAT key time [NX|XX|GT|LT]: the mode and
/// the absolute time (possibly in the past: the key is then deleted).
pub(super) fn parse_expire(
    name: &str,
    argv: &[&[u8]],
    now_ms: u64,
) -> Result<(ExpireMode, u64), String> {
    // Redis parses the options first, then the time.
    let (mut nx, mut xx, mut gt, mut lt) = (false, false, false, false);
    for opt in &argv[3..] {
        match opt.to_ascii_uppercase().as_slice() {
            b"NX" => nx = true,
            b"XX" => xx = true,
            b"GT" => gt = true,
            b"LT" => lt = true,
            _ => {
                return Err(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                ))
            }
        }
    }
    if nx && (xx || gt || lt) {
        return Err("ERR NX and XX, GT or LT options at the same time are not compatible".into());
    }
    if gt && lt {
        return Err("ERR GT and LT options at the same time are not compatible".into());
    }
    let n = parse_i64(argv[2]).ok_or_else(|| NOT_INTEGER.to_string())?;
    let unit = match name {
        "expire" => ExpiryArg::Seconds,
        "pexpire" => ExpiryArg::Millis,
        "expireat" => ExpiryArg::UnixSeconds,
        _ => ExpiryArg::UnixMillis,
    };
    let at = absolute_ms(n, unit, now_ms, false).map_err(|_| invalid_expire(name))?;
    // XX combines with GT/LT in Redis: XX GT means "has an expiry and it is
    // greater", which GT alone already says (GT never applies to a key
    // without one); XX LT needs its own mode, LT alone applies to a key
    // without an expiry.
    let mode = match (nx, xx, gt, lt) {
        (true, ..) => ExpireMode::Nx,
        (_, _, true, _) => ExpireMode::Gt,
        (_, true, _, true) => ExpireMode::XxLt,
        (_, true, ..) => ExpireMode::Xx,
        (.., true) => ExpireMode::Lt,
        _ => ExpireMode::Always,
    };
    Ok((mode, at))
}

/// TTL/PTTL/EXPIRETIME/PEXPIRETIME of a live key expiring at `at` (0: -1,
/// no expiry). Redis: TTL rounds to the nearest second, EXPIRETIME
/// truncates; a key seen live has at least 0 left.
pub(super) fn ttl_reply(name: &str, at: u64, now_ms: u64) -> i64 {
    if at == 0 {
        return -1;
    }
    let left = at.saturating_sub(now_ms) as i64;
    let at = i64::try_from(at).unwrap_or(i64::MAX);
    match name {
        "ttl" => (left + 500) / 1000,
        "pttl" => left,
        "expiretime" => at / 1000,
        _ => at,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

    fn args(s: &str) -> Vec<Vec<u8>> {
        s.split(' ').map(|a| a.as_bytes().to_vec()).collect()
    }

    fn set(s: &str) -> Result<SetArgs, String> {
        let a = args(s);
        let argv: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        parse_set(&argv, NOW)
    }

    fn expire(s: &str) -> Result<(ExpireMode, u64), String> {
        let a = args(s);
        let argv: Vec<&[u8]> = a.iter().map(Vec::as_slice).collect();
        let name = String::from_utf8_lossy(argv[0]).to_ascii_lowercase();
        parse_expire(&name, &argv, NOW)
    }

    #[test]
    fn set_options_parse_as_redis_does() {
        assert_eq!(set("set k v").unwrap(), SetArgs::default());
        assert_eq!(set("set k v ex 10").unwrap().expires_at, NOW + 10_000);
        assert_eq!(set("set k v PXAT 5").unwrap().expires_at, 5);
        assert!(set("set k v KEEPTTL GET").unwrap().keep_ttl);
        assert_eq!(set("set k v ex 10 keepttl").unwrap_err(), SYNTAX);
        assert_eq!(set("set k v nx xx").unwrap_err(), SYNTAX);
        assert_eq!(set("set k v ex").unwrap_err(), SYNTAX);
        assert_eq!(set("set k v ex x").unwrap_err(), NOT_INTEGER);
        assert_eq!(set("set k v ex 0").unwrap_err(), invalid_expire("set"));
    }

    #[test]
    fn expire_modes_follow_redis_combinations() {
        assert_eq!(
            expire("expire k 10").unwrap(),
            (ExpireMode::Always, NOW + 10_000)
        );
        assert_eq!(expire("expire k 10 xx gt").unwrap().0, ExpireMode::Gt);
        assert_eq!(expire("expire k 10 xx lt").unwrap().0, ExpireMode::XxLt);
        assert_eq!(expire("expire k 10 lt").unwrap().0, ExpireMode::Lt);
        assert_eq!(expire("pexpireat k 0").unwrap().1, 1);
        assert!(expire("expire k 10 nx xx").is_err());
        assert!(expire("expire k 10 gt lt").is_err());
        assert_eq!(
            expire("expire k 10 foo").unwrap_err(),
            "ERR Unsupported option foo"
        );
    }

    #[test]
    fn ttl_replies_round_and_truncate() {
        assert_eq!(ttl_reply("ttl", 0, NOW), -1);
        assert_eq!(ttl_reply("ttl", NOW + 1_499, NOW), 1);
        assert_eq!(ttl_reply("ttl", NOW + 1_500, NOW), 2);
        assert_eq!(ttl_reply("pttl", NOW + 7, NOW), 7);
        assert_eq!(ttl_reply("expiretime", 12_999, NOW), 12);
        assert_eq!(ttl_reply("pexpiretime", 12_999, NOW), 12_999);
    }
}
