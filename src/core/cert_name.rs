//! The subject common name (CN) of an X.509 certificate, read from its DER
//! bytes: how a verified client certificate names the user it stands for
//! (docs/security.md, "Client certificates as users").
//!
//! It owns only walking the DER structure down to the subject's attributes;
//! it never verifies anything (rustls has verified the certificate against
//! the client CAs before this runs) and must never panic or read out of
//! bounds on any input: every length is checked, and anything unexpected is
//! `None` (no user), never a guess.

/// One DER element: (tag, contents, what follows it).
fn element(input: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, rest) = input.split_first()?;
    let (&first, rest) = rest.split_first()?;
    let (len, rest) = if first < 0x80 {
        (usize::from(first), rest)
    } else {
        // Long form: 1..=4 length bytes (a certificate is far below 4 GiB).
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 || rest.len() < n {
            return None;
        }
        let len = rest[..n]
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b));
        (len, &rest[n..])
    };
    if rest.len() < len {
        return None;
    }
    Some((tag, &rest[..len], &rest[len..]))
}

fn expect(input: &[u8], tag: u8) -> Option<(&[u8], &[u8])> {
    match element(input)? {
        (t, contents, rest) if t == tag => Some((contents, rest)),
        _ => None,
    }
}

const SEQUENCE: u8 = 0x30;
const SET: u8 = 0x31;
const OID: u8 = 0x06;
/// id-at-commonName, 2.5.4.3.
const COMMON_NAME: [u8; 3] = [0x55, 0x04, 0x03];

/// The subject's common name, when the subject has exactly one and it is a
/// UTF8String, PrintableString or IA5String. Two CNs are ambiguous: `None`.
pub fn subject_common_name(der: &[u8]) -> Option<String> {
    let (cert, _) = expect(der, SEQUENCE)?;
    let (tbs, _) = expect(cert, SEQUENCE)?;
    let mut rest = tbs;
    // version [0] EXPLICIT, absent in v1 certificates.
    if rest.first() == Some(&0xa0) {
        rest = element(rest)?.2;
    }
    let (_, rest) = expect(rest, 0x02)?; // serialNumber
    let (_, rest) = expect(rest, SEQUENCE)?; // signature algorithm
    let (_, rest) = expect(rest, SEQUENCE)?; // issuer
    let (_, rest) = expect(rest, SEQUENCE)?; // validity
    let (mut rdns, _) = expect(rest, SEQUENCE)?; // subject
    let mut found = None;
    while !rdns.is_empty() {
        let (mut set, next) = expect(rdns, SET)?;
        rdns = next;
        while !set.is_empty() {
            let (attribute, next) = expect(set, SEQUENCE)?;
            set = next;
            let (oid, value) = expect(attribute, OID)?;
            if oid != COMMON_NAME {
                continue;
            }
            let (tag, text, _) = element(value)?;
            // UTF8String, PrintableString, IA5String.
            if !matches!(tag, 0x0c | 0x13 | 0x16) || found.is_some() {
                return None;
            }
            found = Some(String::from_utf8(text.to_vec()).ok()?);
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A DER element with a short-form length.
    fn tlv(tag: u8, contents: &[u8]) -> Vec<u8> {
        let mut v = vec![tag, contents.len() as u8];
        v.extend_from_slice(contents);
        v
    }

    fn name(cns: &[&str]) -> Vec<u8> {
        let mut rdns = tlv(
            SET,
            &tlv(
                SEQUENCE,
                &[tlv(OID, &[0x55, 4, 10]), tlv(0x0c, b"org")].concat(),
            ),
        );
        for cn in cns {
            rdns.extend(tlv(
                SET,
                &tlv(
                    SEQUENCE,
                    &[tlv(OID, &COMMON_NAME), tlv(0x0c, cn.as_bytes())].concat(),
                ),
            ));
        }
        tlv(SEQUENCE, &rdns)
    }

    fn cert(subject: Vec<u8>) -> Vec<u8> {
        let tbs = [
            tlv(0xa0, &tlv(0x02, &[2])),
            tlv(0x02, &[1]),
            tlv(SEQUENCE, &tlv(OID, &[1, 2])),
            name(&["issuer"]),
            tlv(SEQUENCE, &[]),
            subject,
        ]
        .concat();
        tlv(
            SEQUENCE,
            &[tlv(SEQUENCE, &tbs), tlv(SEQUENCE, &[])].concat(),
        )
    }

    #[test]
    fn the_subject_cn_is_found_and_never_the_issuers() {
        assert_eq!(
            subject_common_name(&cert(name(&["reader"]))).as_deref(),
            Some("reader")
        );
        assert_eq!(subject_common_name(&cert(name(&[]))), None);
        assert_eq!(subject_common_name(&cert(name(&["a", "b"]))), None);
    }

    #[test]
    fn truncated_or_garbage_input_is_none_not_a_panic() {
        let good = cert(name(&["reader"]));
        for cut in 0..good.len() {
            let _ = subject_common_name(&good[..cut]);
        }
        assert_eq!(
            subject_common_name(&[0x30, 0x84, 0xff, 0xff, 0xff, 0xff]),
            None
        );
        assert_eq!(subject_common_name(&[]), None);
    }
}
