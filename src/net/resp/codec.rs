//! RESP framing: parsing client commands (multibulk `*<n>\r\n$<len>\r\n...`
//! and inline lines) out of a receive buffer, and encoding replies in RESP2
//! or RESP3.
//!
//! Every length a client sends is bounded before it is used: the argument
//! count by `RESP_ARGS_MAX`, each bulk by the server's value limit, an inline
//! line by `RESP_INLINE_BYTES_MAX`, and a whole command by the receive
//! buffer's ceiling (a command that could not fit is refused instead of
//! waiting forever for room). Nothing is allocated from a declared length:
//! arguments are ranges into the receive buffer, pushed as they are parsed.
//! Error texts are Redis's own (`Protocol error: ...`), so tools that match
//! them keep working. The connection is closed after a protocol error, as
//! Redis does: the byte stream can no longer be trusted.
//!
//! Why not the `redis-protocol` crate: its decoder takes the declared length
//! of a bulk string or array at face value (it waits for, or reserves, what
//! the client announced) and offers no hook to bound either before it acts on
//! it; corekv's rule is that every length is checked before anything is
//! allocated or awaited for it. Parsing client commands needs only arrays of
//! bulk strings and inline lines, which this module does in a page of code
//! whose bounds are tested (and fuzzed through tests/resp.rs's garbage cases).
//! It must never execute anything or touch a socket.

use std::ops::Range;

use crate::core::limits::{RESP_ARGS_MAX, RESP_INLINE_BYTES_MAX};

/// Longest `*<n>` / `$<len>` header line accepted (sign, 20 digits, CRLF,
/// with room to spare): a longer one is garbage.
const HEADER_LINE_MAX: usize = 32;

/// The outcome of parsing the front of the receive buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Parsed {
    /// No complete command yet.
    Incomplete,
    /// A command of `len` bytes; its arguments are in the caller's vector
    /// (ranges into the buffer). An empty command (a blank inline line, `*0`)
    /// has no arguments and is skipped by the caller, as Redis does.
    Command { len: usize },
    /// A protocol error (Redis's text, without the `-ERR ` prefix): answer
    /// it and close the connection.
    Bad(String),
}

/// Parse one command from the front of `buf`. `bulk_max`: the largest bulk
/// string accepted; `ceiling`: the largest command the receive buffer can
/// hold. `args` is cleared and filled with the arguments' ranges in `buf`.
pub fn parse_command(
    buf: &[u8],
    bulk_max: usize,
    ceiling: usize,
    args: &mut Vec<Range<usize>>,
) -> Parsed {
    args.clear();
    let Some(&first) = buf.first() else {
        return Parsed::Incomplete;
    };
    let parsed = if first == b'*' {
        parse_multibulk(buf, bulk_max, ceiling, args)
    } else {
        parse_inline(buf, args)
    };
    if parsed == Parsed::Incomplete && buf.len() >= ceiling {
        // The buffer is at its ceiling and the command is still not whole:
        // it can never complete.
        args.clear();
        return Parsed::Bad("Protocol error: command larger than the receive buffer limit".into());
    }
    parsed
}

/// A `<prefix><integer>\r\n` line at `at`: the integer and where the line ends.
/// `Err(())` when the line is not a well-formed integer line.
fn header_line(buf: &[u8], at: usize) -> Result<Option<(i64, usize)>, ()> {
    let rest = &buf[at..];
    let window = &rest[..rest.len().min(HEADER_LINE_MAX)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        return if rest.len() >= HEADER_LINE_MAX {
            Err(())
        } else {
            Ok(None)
        };
    };
    if nl < 2 || rest[nl - 1] != b'\r' {
        return Err(());
    }
    let digits = std::str::from_utf8(&rest[1..nl - 1]).map_err(|_| ())?;
    let n: i64 = digits.parse().map_err(|_| ())?;
    Ok(Some((n, at + nl + 1)))
}

fn parse_multibulk(
    buf: &[u8],
    bulk_max: usize,
    ceiling: usize,
    args: &mut Vec<Range<usize>>,
) -> Parsed {
    let (count, mut at) = match header_line(buf, 0) {
        Ok(Some(x)) => x,
        Ok(None) => return Parsed::Incomplete,
        Err(()) => return Parsed::Bad("Protocol error: invalid multibulk length".into()),
    };
    if count > RESP_ARGS_MAX as i64 {
        return Parsed::Bad("Protocol error: invalid multibulk length".into());
    }
    for _ in 0..count.max(0) {
        let Some(&tag) = buf.get(at) else {
            return Parsed::Incomplete;
        };
        if tag != b'$' {
            let shown = char::from(tag);
            return Parsed::Bad(format!("Protocol error: expected '$', got '{shown}'"));
        }
        let (len, start) = match header_line(buf, at) {
            Ok(Some(x)) => x,
            Ok(None) => return Parsed::Incomplete,
            Err(()) => return Parsed::Bad("Protocol error: invalid bulk length".into()),
        };
        if len < 0 || len as u64 > bulk_max as u64 {
            return Parsed::Bad("Protocol error: invalid bulk length".into());
        }
        let end = start + len as usize;
        if end + 2 > ceiling {
            return Parsed::Bad(
                "Protocol error: command larger than the receive buffer limit".into(),
            );
        }
        if buf.len() < end + 2 {
            return Parsed::Incomplete;
        }
        if &buf[end..end + 2] != b"\r\n" {
            return Parsed::Bad("Protocol error: bulk string not followed by CRLF".into());
        }
        args.push(start..end);
        at = end + 2;
    }
    Parsed::Command { len: at }
}

/// An inline command: one line, arguments separated by spaces, with Redis's
/// quoting ("..." with backslash escapes, '...').
fn parse_inline(buf: &[u8], args: &mut Vec<Range<usize>>) -> Parsed {
    let window = &buf[..buf.len().min(RESP_INLINE_BYTES_MAX)];
    let Some(nl) = window.iter().position(|&b| b == b'\n') else {
        if buf.len() >= RESP_INLINE_BYTES_MAX {
            return Parsed::Bad("Protocol error: too big inline request".into());
        }
        return Parsed::Incomplete;
    };
    let line_end = if nl > 0 && buf[nl - 1] == b'\r' {
        nl - 1
    } else {
        nl
    };
    let line = &buf[..line_end];
    let mut i = 0;
    while i < line.len() {
        if line[i] == b' ' || line[i] == b'\t' {
            i += 1;
            continue;
        }
        if line[i] == b'"' || line[i] == b'\'' {
            // Quoted arguments would need unescaping into a new buffer; the
            // argument ranges point into the receive buffer, so only quotes
            // without escapes are taken (redis-cli sends multibulk anyway).
            let q = line[i];
            let Some(close) = line[i + 1..].iter().position(|&b| b == q) else {
                return Parsed::Bad("Protocol error: unbalanced quotes in request".into());
            };
            let (s, e) = (i + 1, i + 1 + close);
            if line[s..e].contains(&b'\\') {
                return Parsed::Bad(
                    "Protocol error: escapes in inline quotes are not supported; send the command as a multibulk array".into(),
                );
            }
            args.push(s..e);
            i = e + 1;
            continue;
        }
        let s = i;
        while i < line.len() && line[i] != b' ' && line[i] != b'\t' {
            i += 1;
        }
        args.push(s..i);
    }
    Parsed::Command { len: nl + 1 }
}

/// Encodes replies in the connection's protocol (2 or 3). RESP3-only types
/// (null, map, verbatim string, double) fall back to their RESP2 forms.
pub struct Reply<'a> {
    pub out: &'a mut Vec<u8>,
    pub proto: u8,
}

impl Reply<'_> {
    pub fn simple(&mut self, s: &str) {
        self.out.push(b'+');
        self.out.extend_from_slice(s.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    /// An error line; `e` starts with its code (`ERR ...`, `WRONGTYPE ...`).
    /// CR and LF in it are replaced (a reply line cannot carry them).
    pub fn error(&mut self, e: &str) {
        self.out.push(b'-');
        self.out.extend(
            e.bytes()
                .map(|b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
        self.out.extend_from_slice(b"\r\n");
    }

    pub fn int(&mut self, n: i64) {
        self.line(b':', n);
    }

    pub fn bulk(&mut self, b: &[u8]) {
        self.bulk_header(b.len());
        self.out.extend_from_slice(b);
        self.out.extend_from_slice(b"\r\n");
    }

    /// The header of a bulk string whose bytes the caller writes next,
    /// followed by CRLF.
    pub fn bulk_header(&mut self, len: usize) {
        self.line(b'$', len as i64);
    }

    pub fn nil(&mut self) {
        if self.proto >= 3 {
            self.out.extend_from_slice(b"_\r\n");
        } else {
            self.out.extend_from_slice(b"$-1\r\n");
        }
    }

    /// A null array (RESP2 `*-1`; RESP3 null).
    pub fn nil_array(&mut self) {
        if self.proto >= 3 {
            self.out.extend_from_slice(b"_\r\n");
        } else {
            self.out.extend_from_slice(b"*-1\r\n");
        }
    }

    pub fn array(&mut self, n: usize) {
        self.line(b'*', n as i64);
    }

    /// A map of `n` pairs (RESP2: an array of 2n elements).
    pub fn map(&mut self, n: usize) {
        if self.proto >= 3 {
            self.line(b'%', n as i64);
        } else {
            self.line(b'*', 2 * n as i64);
        }
    }

    /// A set of `n` elements (RESP2: an array).
    pub fn set(&mut self, n: usize) {
        self.line(if self.proto >= 3 { b'~' } else { b'*' }, n as i64);
    }

    /// Text (INFO, CLIENT INFO): RESP3 verbatim string `txt`, RESP2 bulk.
    pub fn verbatim(&mut self, text: &str) {
        if self.proto >= 3 {
            self.line(b'=', text.len() as i64 + 4);
            self.out.extend_from_slice(b"txt:");
            self.out.extend_from_slice(text.as_bytes());
            self.out.extend_from_slice(b"\r\n");
        } else {
            self.bulk(text.as_bytes());
        }
    }

    fn line(&mut self, tag: u8, n: i64) {
        use std::io::Write;
        self.out.push(tag);
        let _ = write!(self.out, "{n}\r\n");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(buf: &[u8]) -> (Parsed, Vec<Vec<u8>>) {
        let mut args = Vec::new();
        let p = parse_command(buf, 1024, 64 * 1024, &mut args);
        let a = args.iter().map(|r| buf[r.clone()].to_vec()).collect();
        (p, a)
    }

    #[test]
    fn multibulk_and_inline() {
        let (p, a) = parse(b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\nrest");
        assert_eq!(p, Parsed::Command { len: 20 });
        assert_eq!(a, vec![b"GET".to_vec(), b"k".to_vec()]);
        let (p, a) = parse(b"SET  k 'v w'\r\n");
        assert_eq!(p, Parsed::Command { len: 14 });
        assert_eq!(a, vec![b"SET".to_vec(), b"k".to_vec(), b"v w".to_vec()]);
        for cut in 1..20 {
            let (p, _) = parse(&b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n"[..cut]);
            assert_eq!(p, Parsed::Incomplete, "cut at {cut}");
        }
    }

    #[test]
    fn lengths_are_bounded_before_use() {
        let bad = |b: &[u8]| matches!(parse(b).0, Parsed::Bad(_));
        assert!(bad(b"*99999999999\r\n"));
        assert!(bad(b"*-x\r\n"));
        assert!(bad(b"*1\r\n$2000\r\n"), "bulk past the value limit");
        assert!(bad(b"*1\r\n$-5\r\n"));
        assert!(bad(b"*1\r\n:5\r\n"));
        assert!(bad(b"*1\r\n$3\r\nabcXY"));
        assert!(bad(&[b'*'; 40]), "a header line with no end");
        assert!(
            bad(&vec![b'a'; RESP_INLINE_BYTES_MAX]),
            "inline with no newline"
        );
        let mut args = Vec::new();
        // A command that cannot fit the buffer's ceiling is refused at once.
        assert!(matches!(
            parse_command(b"*1\r\n$900\r\n", 1024, 512, &mut args),
            Parsed::Bad(_)
        ));
        // Many small arguments that together pass the ceiling.
        let mut many = b"*1000\r\n".to_vec();
        while many.len() < 512 {
            many.extend_from_slice(b"$1\r\na\r\n");
        }
        assert!(matches!(
            parse_command(&many[..512], 1024, 512, &mut args),
            Parsed::Bad(_)
        ));
    }

    #[test]
    fn reply_types_per_protocol() {
        let mut out = Vec::new();
        let mut r = Reply {
            out: &mut out,
            proto: 2,
        };
        r.nil();
        r.map(1);
        r.verbatim("a");
        assert_eq!(out, b"$-1\r\n*2\r\n$1\r\na\r\n");
        let mut out = Vec::new();
        let mut r = Reply {
            out: &mut out,
            proto: 3,
        };
        r.nil();
        r.map(1);
        r.verbatim("a");
        r.error("ERR a\r\nb");
        assert_eq!(out, b"_\r\n%1\r\n=5\r\ntxt:a\r\n-ERR a  b\r\n");
    }
}
