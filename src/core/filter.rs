//! Predicates pushed down into a shard's scan, so that records that fail them
//! never leave the shard: key prefix, value-contains-bytes (SIMD substring
//! search), and JSON field equality (values parsed with simd-json).
//!
//! Pure and deterministic. `matches` must equal the naive definition of each
//! filter on every input (tests compare against naive versions); a value that is
//! not valid JSON never matches a JSON filter.

use memchr::memmem;
use simd_json::prelude::*;
use simd_json::BorrowedValue;

/// Wire code of each filter kind (docs/protocol.md).
pub const FILTER_NONE: u8 = 0;
pub const FILTER_KEY_PREFIX: u8 = 1;
pub const FILTER_VALUE_CONTAINS: u8 = 2;
pub const FILTER_JSON_EQ: u8 = 3;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid filter: {0}")]
pub struct FilterError(pub String);

/// A compiled filter. Build once per scan, evaluate per record.
pub enum Filter {
    None,
    KeyPrefix(Vec<u8>),
    /// The finder holds a precomputed SIMD searcher for the needle.
    ValueContains(memmem::Finder<'static>),
    JsonEq {
        path: Vec<String>,
        expected: BorrowedValue<'static>,
        /// Bytes any matching document must contain verbatim unless it uses
        /// escapes (a non-empty expected string, or true/false/null): records
        /// without them are rejected by a SIMD search, without parsing.
        literal: Option<memmem::Finder<'static>>,
        /// simd-json parses in place: each value is copied here first.
        scratch: Vec<u8>,
        buffers: simd_json::Buffers,
    },
}

impl Filter {
    /// Compile a filter from its wire form: `kind` and its argument bytes. For
    /// JSON_EQ the argument is `path_len u32 | path (dot-separated) | JSON value`.
    pub fn compile(kind: u8, arg: &[u8]) -> Result<Filter, FilterError> {
        match kind {
            FILTER_NONE if arg.is_empty() => Ok(Filter::None),
            FILTER_NONE => Err(FilterError("no filter takes no argument".into())),
            FILTER_KEY_PREFIX => Ok(Filter::KeyPrefix(arg.to_vec())),
            FILTER_VALUE_CONTAINS if arg.is_empty() => Err(FilterError("empty needle".into())),
            FILTER_VALUE_CONTAINS => {
                Ok(Filter::ValueContains(memmem::Finder::new(arg).into_owned()))
            }
            FILTER_JSON_EQ => {
                let (len, rest) = arg.split_first_chunk::<4>().ok_or_else(|| {
                    FilterError("JSON filter shorter than its path length".into())
                })?;
                let len = u32::from_le_bytes(*len) as usize;
                if len > rest.len() || len == 0 {
                    return Err(FilterError(format!("JSON path length {len} out of range")));
                }
                let (path, value) = rest.split_at(len);
                let path = std::str::from_utf8(path)
                    .map_err(|_| FilterError("JSON path is not UTF-8".into()))?;
                let mut value = value.to_vec();
                let expected = simd_json::to_borrowed_value(&mut value)
                    .map_err(|e| FilterError(format!("expected value is not JSON: {e}")))?
                    .into_static();
                use simd_json::prelude::{TypedScalarValue, ValueAsScalar};
                let literal: Option<Vec<u8>> = if let Some(text) = expected.as_str() {
                    (!text.is_empty()).then(|| text.as_bytes().to_vec())
                } else if let Some(b) = expected.as_bool() {
                    Some(if b {
                        b"true".to_vec()
                    } else {
                        b"false".to_vec()
                    })
                } else if expected.is_null() {
                    Some(b"null".to_vec())
                } else {
                    None
                };
                Ok(Filter::JsonEq {
                    path: path.split('.').map(str::to_string).collect(),
                    literal: literal.map(|l| memmem::Finder::new(&l).into_owned()),
                    expected,
                    scratch: Vec::new(),
                    buffers: simd_json::Buffers::default(),
                })
            }
            other => Err(FilterError(format!("unknown filter kind {other}"))),
        }
    }

    pub fn is_none(&self) -> bool {
        matches!(self, Filter::None)
    }

    pub fn matches(&mut self, key: &[u8], value: &[u8]) -> bool {
        match self {
            Filter::None => true,
            Filter::KeyPrefix(p) => key.starts_with(p),
            Filter::ValueContains(f) => f.find(value).is_some(),
            Filter::JsonEq {
                path,
                expected,
                literal,
                scratch,
                buffers,
            } => {
                if let Some(l) = literal {
                    if l.find(value).is_none() && memchr::memchr(b'\\', value).is_none() {
                        return false;
                    }
                }
                scratch.clear();
                scratch.extend_from_slice(value);
                let Ok(doc) = simd_json::to_borrowed_value_with_buffers(scratch, buffers) else {
                    return false;
                };
                let mut node = &doc;
                for part in path.iter() {
                    match node.get(part.as_str()) {
                        Some(next) => node = next,
                        None => return false,
                    }
                }
                // Reborrow shared: `&mut` would pin the expected value to `'static`.
                let expected: &BorrowedValue<'_> = expected;
                json_equal(node, expected)
            }
        }
    }
}

/// JSON equality as documented in docs/protocol.md: strings, booleans and
/// null by value; numbers by the number they denote, so `1`, `1.0` and `1e0`
/// are equal (integers exactly; a number written with a fraction or exponent
/// is an IEEE double, so it equals an integer when the double converts to
/// exactly that integer); arrays element by element; objects by the same set
/// of keys with equal values, in any order.
fn json_equal(a: &BorrowedValue<'_>, b: &BorrowedValue<'_>) -> bool {
    use simd_json::StaticNode as N;
    match (a, b) {
        (BorrowedValue::Static(x), BorrowedValue::Static(y)) => match (x, y) {
            (N::I64(i), N::I64(j)) => i == j,
            (N::U64(i), N::U64(j)) => i == j,
            (N::I64(i), N::U64(u)) | (N::U64(u), N::I64(i)) => {
                u64::try_from(*i).is_ok_and(|i| i == *u)
            }
            (N::F64(f), N::F64(g)) => f == g,
            (N::F64(f), N::I64(i)) | (N::I64(i), N::F64(f)) => float_is_int(*f, i128::from(*i)),
            (N::F64(f), N::U64(u)) | (N::U64(u), N::F64(f)) => float_is_int(*f, i128::from(*u)),
            (N::Bool(p), N::Bool(q)) => p == q,
            (N::Null, N::Null) => true,
            _ => false,
        },
        (BorrowedValue::String(x), BorrowedValue::String(y)) => x == y,
        (BorrowedValue::Array(x), BorrowedValue::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y.iter()).all(|(p, q)| json_equal(p, q))
        }
        (BorrowedValue::Object(x), BorrowedValue::Object(y)) => {
            x.len() == y.len()
                && x.iter()
                    .all(|(k, v)| y.get(k).is_some_and(|w| json_equal(v, w)))
        }
        _ => false,
    }
}

/// Whether the double `f` is exactly the integer `i` (no rounding either way).
fn float_is_int(f: f64, i: i128) -> bool {
    // Doubles beyond ±2^127 are not integers an i64/u64 can hold; the range
    // check keeps the cast exact.
    f.fract() == 0.0 && f.abs() < 1.7e38 && (f as i128) == i && (i as f64) == f
}

/// Encode the argument of a JSON_EQ filter.
pub fn json_eq_arg(path: &str, value_json: &str) -> Vec<u8> {
    let mut out = (path.len() as u32).to_le_bytes().to_vec();
    out.extend_from_slice(path.as_bytes());
    out.extend_from_slice(value_json.as_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn json_equality_on_fields_and_paths() {
        let mut f = Filter::compile(FILTER_JSON_EQ, &json_eq_arg("user.name", "\"ann\"")).unwrap();
        assert!(f.matches(b"k", br#"{"user":{"name":"ann","age":3}}"#));
        assert!(!f.matches(b"k", br#"{"user":{"name":"bob"}}"#));
        assert!(!f.matches(b"k", br#"{"user":"ann"}"#));
        assert!(!f.matches(b"k", b"not json"));
        // The literal pre-check must not reject a match spelled with escapes.
        assert!(f.matches(b"k", br#"{"user":{"name":"\u0061nn"}}"#));
        let mut t = Filter::compile(FILTER_JSON_EQ, &json_eq_arg("ok", "true")).unwrap();
        assert!(t.matches(b"k", br#"{"ok":true}"#));
        assert!(!t.matches(b"k", br#"{"ok":false}"#));
        let mut n = Filter::compile(FILTER_JSON_EQ, &json_eq_arg("age", "42")).unwrap();
        assert!(n.matches(b"k", br#"{"age":42}"#));
        assert!(!n.matches(b"k", br#"{"age":"42"}"#));
        // Numbers compare by value, however they are written.
        assert!(n.matches(b"k", br#"{"age":42.0}"#));
        assert!(n.matches(b"k", br#"{"age":4.2e1}"#));
        assert!(!n.matches(b"k", br#"{"age":42.5}"#));
        let mut f = Filter::compile(FILTER_JSON_EQ, &json_eq_arg("x", "1.0")).unwrap();
        assert!(f.matches(b"k", br#"{"x":1}"#));
        assert!(!f.matches(b"k", br#"{"x":-1}"#));
        let mut o = Filter::compile(
            FILTER_JSON_EQ,
            &json_eq_arg("o", r#"{"a":[1,2.0],"b":null}"#),
        )
        .unwrap();
        assert!(o.matches(b"k", br#"{"o":{"b":null,"a":[1.0,2]}}"#));
        assert!(!o.matches(b"k", br#"{"o":{"a":[1,2]}}"#));
        // 2^53 + 1 is not a double: no rounding makes them equal.
        let mut big =
            Filter::compile(FILTER_JSON_EQ, &json_eq_arg("x", "9007199254740993")).unwrap();
        assert!(!big.matches(b"k", br#"{"x":9007199254740992.0}"#));
        assert!(big.matches(b"k", br#"{"x":9007199254740993}"#));
        assert!(Filter::compile(FILTER_JSON_EQ, &json_eq_arg("a", "{bad")).is_err());
        assert!(Filter::compile(9, b"").is_err());
        assert!(Filter::compile(FILTER_VALUE_CONTAINS, b"").is_err());
    }

    proptest! {
        #[test]
        fn contains_equals_naive(value in proptest::collection::vec(0u8..4, 0..300), needle in proptest::collection::vec(0u8..4, 1..5)) {
            let mut f = Filter::compile(FILTER_VALUE_CONTAINS, &needle).unwrap();
            let naive = value.windows(needle.len()).any(|w| w == needle.as_slice());
            prop_assert_eq!(f.matches(b"", &value), naive);
        }

        #[test]
        fn prefix_equals_naive(key in proptest::collection::vec(0u8..3, 0..10), prefix in proptest::collection::vec(0u8..3, 0..4)) {
            let mut f = Filter::compile(FILTER_KEY_PREFIX, &prefix).unwrap();
            let naive = key.len() >= prefix.len() && key[..prefix.len()] == prefix[..];
            prop_assert_eq!(f.matches(&key, b""), naive);
        }

        #[test]
        fn json_eq_equals_serde(n in 0u32..5, m in 0u32..5, s in "[ab]{0,2}") {
            let doc = format!("{{\"n\":{n},\"s\":\"{s}\"}}");
            let mut f = Filter::compile(FILTER_JSON_EQ, &json_eq_arg("n", &m.to_string())).unwrap();
            let naive = serde_json::from_str::<serde_json::Value>(&doc).unwrap()["n"] == serde_json::json!(m);
            prop_assert_eq!(f.matches(b"", doc.as_bytes()), naive);
        }
    }
}
