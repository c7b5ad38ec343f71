//! The bit commands (SETBIT, GETBIT, BITCOUNT, BITPOS, BITOP), LCS and
//! OBJECT ENCODING, evaluated over a transaction's snapshot (multi.rs): each
//! runs as a one-command transaction outside MULTI, so SETBIT and BITOP are
//! atomic read-modify-writes like INCR, and inside MULTI they are queued
//! like any string command.
//!
//! Pure functions of the values: this module must never do I/O; replies and
//! error texts are Redis 7.0's (tests/resp.rs compares them).

use super::codec::Reply;
use super::commands::{parse_i64, NOT_INTEGER, SYNTAX};
use super::txn_state::Overlay;

const BIT_OFFSET: &str = "ERR bit offset is not an integer or out of range";

/// A bit offset within the largest value corekv stores (Redis: within
/// proto-max-bulk-len, 512 MB).
fn bit_offset(arg: &[u8], max: usize) -> Option<u64> {
    let n = parse_i64(arg)?;
    (n >= 0 && (n as u64 >> 3) < max as u64).then_some(n as u64)
}

fn bit_at(v: &[u8], bit: u64) -> u8 {
    let byte = (bit >> 3) as usize;
    v.get(byte).map_or(0, |b| (b >> (7 - (bit & 7))) & 1)
}

/// Redis's range rules for BITCOUNT/BITPOS: negative indexes from the end,
/// clamped; `None` when the range is empty.
fn clamp(mut start: i64, mut end: i64, total: i64) -> Option<(i64, i64)> {
    if start < 0 {
        start += total;
    }
    if end < 0 {
        end += total;
    }
    start = start.max(0);
    end = end.max(0);
    if end >= total {
        end = total - 1;
    }
    (start <= end).then_some((start, end))
}

/// BYTE (false) or BIT (true), or a syntax error.
fn unit(arg: Option<&&[u8]>) -> Result<bool, ()> {
    match arg {
        None => Ok(false),
        Some(a) if a.eq_ignore_ascii_case(b"bit") => Ok(true),
        Some(a) if a.eq_ignore_ascii_case(b"byte") => Ok(false),
        Some(_) => Err(()),
    }
}

pub(super) fn eval(name: &str, argv: &[&[u8]], ov: &mut Overlay, r: &mut Reply<'_>, max: usize) {
    let key = argv.get(1).copied().unwrap_or_default();
    match name {
        "setbit" => {
            let Some(offset) = bit_offset(argv[2], max) else {
                return r.error(BIT_OFFSET);
            };
            let on = match argv[3] {
                b"0" => false,
                b"1" => true,
                _ => return r.error("ERR bit is not an integer or out of range"),
            };
            let mut v = ov.get(key).unwrap_or_default().to_vec();
            let byte = (offset >> 3) as usize;
            if v.len() <= byte {
                v.resize(byte + 1, 0);
            }
            let mask = 1u8 << (7 - (offset & 7));
            let old = i64::from(v[byte] & mask != 0);
            if on {
                v[byte] |= mask;
            } else {
                v[byte] &= !mask;
            }
            ov.update(key, v);
            r.int(old);
        }
        "getbit" => {
            let Some(offset) = bit_offset(argv[2], max) else {
                return r.error(BIT_OFFSET);
            };
            r.int(i64::from(bit_at(ov.get(key).unwrap_or_default(), offset)));
        }
        "bitcount" => bitcount(argv, ov.get(key), r),
        "bitpos" => bitpos(argv, ov.get(key), r),
        "bitop" => {
            let op = argv[1].to_ascii_lowercase();
            if !matches!(op.as_slice(), b"and" | b"or" | b"xor" | b"not") {
                return r.error(SYNTAX);
            }
            if op == b"not" && argv.len() != 4 {
                return r.error("ERR BITOP NOT must be called with a single source key.");
            }
            let srcs: Vec<Vec<u8>> = argv[3..]
                .iter()
                .map(|k| ov.get(k).unwrap_or_default().to_vec())
                .collect();
            let len = srcs.iter().map(Vec::len).max().unwrap_or(0);
            let mut out = vec![0u8; len];
            for (i, b) in out.iter_mut().enumerate() {
                let mut it = srcs.iter().map(|s| s.get(i).copied().unwrap_or(0));
                let first = it.next().unwrap_or(0);
                *b = match op.as_slice() {
                    b"and" => it.fold(first, |a, x| a & x),
                    b"or" => it.fold(first, |a, x| a | x),
                    b"xor" => it.fold(first, |a, x| a ^ x),
                    _ => !first,
                };
            }
            // An empty result deletes the destination, as Redis.
            ov.put(argv[2], (len > 0).then_some(out));
            r.int(len as i64);
        }
        "lcs" => lcs(argv, ov.get(argv[1]), ov.get(argv[2]), r, max),
        "object" => {
            let sub = argv[1].to_ascii_lowercase();
            match (sub.as_slice(), argv.len()) {
                (b"encoding", 3) => match ov.get(argv[2]) {
                    Some(v) => r.bulk(encoding(v).as_bytes()),
                    None => r.nil(),
                },
                (b"encoding", _) => {
                    r.error("ERR wrong number of arguments for 'object|encoding' command")
                }
                _ => r.error(&format!(
                    "ERR unknown subcommand '{}'. Try OBJECT HELP.",
                    String::from_utf8_lossy(argv[1])
                )),
            }
        }
        other => {
            // The queue and the evaluator disagree: a bug, answered as one.
            tracing::error!(command = other, "RESP command queued without an evaluator");
            r.error(&super::commands::status_error(
                crate::core::status::Status::Internal,
            ));
        }
    }
}

/// What OBJECT ENCODING says Redis would use for a string value set by SET:
/// "int" for a canonical 64-bit integer, "embstr" up to 44 bytes, else
/// "raw" (Redis also says "raw" for a short value modified in place by
/// APPEND or SETRANGE; corekv keeps no such history).
pub fn encoding(v: &[u8]) -> &'static str {
    if v.len() <= 20 && parse_i64(v).is_some() {
        "int"
    } else if v.len() <= 44 {
        "embstr"
    } else {
        "raw"
    }
}

fn bitcount(argv: &[&[u8]], v: Option<&[u8]>, r: &mut Reply<'_>) {
    // Redis looks the key up first: a missing key counts 0 whatever the
    // other arguments say.
    let Some(v) = v else {
        return r.int(0);
    };
    let (start, end, bits) = match argv.len() {
        2 => {
            let n: u64 = v.iter().map(|b| u64::from(b.count_ones())).sum();
            return r.int(n as i64);
        }
        4 | 5 => {
            let (Some(s), Some(e)) = (parse_i64(argv[2]), parse_i64(argv[3])) else {
                return r.error(NOT_INTEGER);
            };
            let Ok(bits) = unit(argv.get(4)) else {
                return r.error(SYNTAX);
            };
            (s, e, bits)
        }
        _ => return r.error(SYNTAX),
    };
    if start < 0 && end < 0 && start > end {
        return r.int(0);
    }
    let total = if bits {
        v.len() as i64 * 8
    } else {
        v.len() as i64
    };
    let Some((s, e)) = clamp(start, end, total) else {
        return r.int(0);
    };
    let n: i64 = if bits {
        (s..=e).map(|b| i64::from(bit_at(v, b as u64))).sum()
    } else {
        v[s as usize..=e as usize]
            .iter()
            .map(|b| i64::from(b.count_ones()))
            .sum()
    };
    r.int(n);
}

fn bitpos(argv: &[&[u8]], v: Option<&[u8]>, r: &mut Reply<'_>) {
    let bit = match parse_i64(argv[2]) {
        None => return r.error(NOT_INTEGER),
        Some(b @ 0..=1) => b as u8,
        Some(_) => return r.error("ERR The bit argument must be 1 or 0."),
    };
    // A missing key is an endless run of 0 bits.
    let Some(v) = v else {
        return r.int(if bit == 1 { -1 } else { 0 });
    };
    let len = v.len() as i64;
    let (range, end_given, bits) = match argv.len() {
        3 => (clamp(0, len - 1, len), false, false),
        4..=6 => {
            let Some(start) = parse_i64(argv[3]) else {
                return r.error(NOT_INTEGER);
            };
            let Ok(bits) = unit(argv.get(5)) else {
                return r.error(SYNTAX);
            };
            let end = match argv.get(4) {
                Some(e) => match parse_i64(e) {
                    Some(e) => Some(e),
                    None => return r.error(NOT_INTEGER),
                },
                None => None,
            };
            let total = if bits { len * 8 } else { len };
            (
                clamp(start, end.unwrap_or(total - 1), total),
                end.is_some(),
                bits,
            )
        }
        _ => return r.error(SYNTAX),
    };
    let Some((s, e)) = range else {
        return r.int(-1);
    };
    // The range in bits.
    let (s, e) = if bits { (s, e) } else { (s * 8, e * 8 + 7) };
    match (s..=e).find(|&b| bit_at(v, b as u64) == bit) {
        Some(p) => r.int(p),
        // Looking for a 0 past the value's end without an explicit end:
        // the value is taken as padded with zeros, as Redis does.
        None if bit == 0 && !end_given => r.int(e + 1),
        None => r.int(-1),
    }
}

fn lcs(argv: &[&[u8]], a: Option<&[u8]>, b: Option<&[u8]>, r: &mut Reply<'_>, max: usize) {
    let (a, b) = (a.unwrap_or_default(), b.unwrap_or_default());
    let (mut idx, mut len, mut withlen, mut minlen) = (false, false, false, 0i64);
    let mut j = 3;
    while j < argv.len() {
        let opt = argv[j].to_ascii_lowercase();
        let more = argv.len() - 1 - j;
        match opt.as_slice() {
            b"idx" => idx = true,
            b"len" => len = true,
            b"withmatchlen" => withlen = true,
            b"minmatchlen" if more > 0 => {
                let Some(n) = parse_i64(argv[j + 1]) else {
                    return r.error(NOT_INTEGER);
                };
                minlen = n.max(0);
                j += 1;
            }
            _ => return r.error(SYNTAX),
        }
        j += 1;
    }
    if idx && len {
        return r.error("ERR If you want both the length and indexes, please just use IDX.");
    }
    // The table is (|a|+1)(|b|+1) u32 cells: bounded as Redis bounds it,
    // by the largest value (value_bytes_max here).
    let cells = (a.len() as u64 + 1) * (b.len() as u64 + 1);
    if cells >= u64::from(u32::MAX) || cells > (max / 4) as u64 {
        return r
            .error("ERR Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len");
    }
    let w = b.len() + 1;
    let mut t = vec![0u32; cells as usize];
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            t[i * w + j] = if a[i - 1] == b[j - 1] {
                t[(i - 1) * w + j - 1] + 1
            } else {
                t[(i - 1) * w + j].max(t[i * w + j - 1])
            };
        }
    }
    let total = t[a.len() * w + b.len()];
    if len {
        return r.int(i64::from(total));
    }
    // Walk back as Redis does, collecting the string and the match ranges.
    let mut out = vec![0u8; total as usize];
    let mut k = total as usize;
    let mut ranges: Vec<[usize; 5]> = Vec::new();
    let (mut i, mut j) = (a.len(), b.len());
    let none = a.len();
    let (mut a0, mut a1, mut b0, mut b1) = (none, 0, 0, 0);
    while i > 0 && j > 0 {
        let mut emit = false;
        if a[i - 1] == b[j - 1] {
            out[k - 1] = a[i - 1];
            if a0 == none {
                (a0, a1, b0, b1) = (i - 1, i - 1, j - 1, j - 1);
            } else if a0 == i && b0 == j {
                a0 -= 1;
                b0 -= 1;
            } else {
                emit = true;
            }
            if a0 == 0 || b0 == 0 {
                emit = true;
            }
            k -= 1;
            i -= 1;
            j -= 1;
        } else {
            if t[(i - 1) * w + j] > t[i * w + j - 1] {
                i -= 1;
            } else {
                j -= 1;
            }
            if a0 != none {
                emit = true;
            }
        }
        if emit {
            let m = a1 - a0 + 1;
            if minlen == 0 || m as i64 >= minlen {
                ranges.push([a0, a1, b0, b1, m]);
            }
            a0 = none;
        }
    }
    if !idx {
        return r.bulk(&out);
    }
    r.map(2);
    r.bulk(b"matches");
    r.array(ranges.len());
    for [a0, a1, b0, b1, m] in ranges {
        r.array(2 + usize::from(withlen));
        r.array(2);
        r.int(a0 as i64);
        r.int(a1 as i64);
        r.array(2);
        r.int(b0 as i64);
        r.int(b1 as i64);
        if withlen {
            r.int(m as i64);
        }
    }
    r.bulk(b"len");
    r.int(i64::from(total));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodings_follow_redis_rules_for_set_values() {
        assert_eq!(encoding(b"12345"), "int");
        assert_eq!(encoding(b"-9223372036854775808"), "int");
        // Not canonical integers: strings.
        assert_eq!(encoding(b"012"), "embstr");
        assert_eq!(encoding(b"9223372036854775808"), "embstr");
        assert_eq!(encoding(&[b'x'; 44]), "embstr");
        assert_eq!(encoding(&[b'x'; 45]), "raw");
    }

    #[test]
    fn ranges_clamp_like_redis() {
        assert_eq!(clamp(0, -1, 6), Some((0, 5)));
        assert_eq!(clamp(-2, -1, 6), Some((4, 5)));
        assert_eq!(clamp(2, 100, 6), Some((2, 5)));
        assert_eq!(clamp(3, 1, 6), None);
        assert_eq!(clamp(0, -1, 0), None);
    }

    #[test]
    fn bits_count_from_the_most_significant() {
        assert_eq!(bit_at(&[0b1000_0000], 0), 1);
        assert_eq!(bit_at(&[0b0000_0001], 7), 1);
        assert_eq!(bit_at(&[0b0000_0001], 8), 0);
    }
}
