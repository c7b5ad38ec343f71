//! Redis's glob patterns (KEYS, SCAN MATCH, CONFIG GET): `*`, `?`,
//! `[abc]`, `[^a-z]`, `\x`, with Redis's stringmatchlen semantics. Pure: it
//! must never allocate or recurse on a client's pattern (no pattern may cost
//! more than pattern length times key length steps).

/// Redis's glob (stringmatchlen): `*`, `?`, `[abc]`, `[^a-z]`, `\x`.
pub fn glob_match(p: &[u8], s: &[u8]) -> bool {
    // Iterative with one backtrack point for `*`: linear in practice, and no
    // recursion a hostile pattern could deepen.
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    while pi < p.len() && p[pi] == b'*' {
                        pi += 1;
                    }
                    if pi == p.len() {
                        return true;
                    }
                    star = Some((pi, si));
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((matched, next)) = class_match(p, pi, s[si]) {
                        if matched {
                            pi = next;
                            si += 1;
                            continue;
                        }
                    }
                }
                b'\\' if pi + 1 < p.len() => {
                    if p[pi + 1] == s[si] {
                        pi += 2;
                        si += 1;
                        continue;
                    }
                }
                c => {
                    if c == s[si] {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Whether `c` is in the class starting at `p[at] == '['`, and where the
/// pattern goes on after it. An unterminated class runs to the pattern's
/// end, as in Redis.
fn class_match(p: &[u8], at: usize, c: u8) -> Option<(bool, usize)> {
    let mut i = at + 1;
    let not = p.get(i) == Some(&b'^');
    if not {
        i += 1;
    }
    let mut matched = false;
    while i < p.len() && p[i] != b']' {
        if p[i] == b'\\' && i + 1 < p.len() {
            matched |= p[i + 1] == c;
            i += 2;
        } else if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            let (lo, hi) = (p[i].min(p[i + 2]), p[i].max(p[i + 2]));
            matched |= (lo..=hi).contains(&c);
            i += 3;
        } else {
            matched |= p[i] == c;
            i += 1;
        }
    }
    let next = if i < p.len() { i + 1 } else { i };
    Some((matched != not, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn glob_like_redis() {
        let yes: &[(&str, &str)] = &[
            ("*", ""),
            ("*", "abc"),
            ("a*", "abc"),
            ("*c", "abc"),
            ("a?c", "abc"),
            ("h[ae]llo", "hello"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("key:*:x", "key:12:x"),
            ("\\*", "*"),
            ("*a*a*a*", "aaaa"),
        ];
        for (p, s) in yes {
            assert!(glob_match(p.as_bytes(), s.as_bytes()), "{p} ~ {s}");
        }
        let no: &[(&str, &str)] = &[
            ("a*", "bac"),
            ("a?c", "ac"),
            ("h[^e]llo", "hello"),
            ("\\*", "a"),
            ("key:*:x", "key:12:y"),
        ];
        for (p, s) in no {
            assert!(!glob_match(p.as_bytes(), s.as_bytes()), "{p} !~ {s}");
        }
        // No exponential blow-up on a hostile pattern.
        let p = "*a".repeat(50) + "b";
        assert!(!glob_match(p.as_bytes(), "a".repeat(200).as_bytes()));
    }
}
