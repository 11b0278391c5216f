//! RFC 8785 (JCS) canonical JSON, and the strict JSON reader every wire parser shares.
//!
//! Canonical bytes are what the ledger hashes (leaf records, block headers), so two
//! implementations that agree on the data must agree on the bytes. The strict reader exists
//! because signed JSON with duplicate keys means different things to different parsers
//! (first wins, last wins, error): a signature over such a document is ambiguous, so every
//! parser here refuses duplicates and names where they are.

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::BTreeSet;
use std::fmt::{self, Write as _};

use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::{Map, Number, Value};

/// Why a value could not be written as canonical JSON.
#[derive(Debug, thiserror::Error)]
pub enum CanonicalError {
    /// The value's `Serialize` failed, or it holds something JSON cannot express
    /// (non-string map keys, duplicate keys, non-finite floats).
    #[error("cannot write RFC 8785 canonical JSON: {0}")]
    Serialize(#[from] serde_json::Error),
}

/// Serialises `v` as RFC 8785 canonical JSON (sorted keys, no whitespace, ES6 numbers).
///
/// Integers above 2^53 become doubles under RFC 8785 and lose precision; hashed records
/// therefore hold only strings and small integers.
pub fn to_canonical_json<T: Serialize>(v: &T) -> Result<Vec<u8>, CanonicalError> {
    Ok(serde_json_canonicalizer::to_vec(v)?)
}

/// Largest integer RFC 8785 writes exactly (2^53): beyond it the double loses precision.
pub const MAX_EXACT_INTEGER: i128 = 1 << 53;

/// Appends `s` as a JSON string literal, escaped as RFC 8785 (and serde_json) do: `"` and
/// `\` escaped, the short escapes for \b \t \n \f \r, `\u00xx` for other control
/// characters, everything else literal.
pub(crate) fn push_json_string(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\u{8}' => out.push_str("\\b"),
            '\t' => out.push_str("\\t"),
            '\n' => out.push_str("\\n"),
            '\u{c}' => out.push_str("\\f"),
            '\r' => out.push_str("\\r"),
            c if (c as u32) < 0x20 => {
                // Writing to a String cannot fail.
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Appends an integer as RFC 8785 writes it: plain decimal up to 2^53, and beyond that the
/// ES6 form of the nearest double, exactly as the canonicaliser would.
pub(crate) fn push_json_integer(out: &mut String, n: i128) {
    if n.unsigned_abs() <= MAX_EXACT_INTEGER.unsigned_abs() {
        let _ = write!(out, "{n}");
        return;
    }
    #[allow(clippy::cast_precision_loss)] // RFC 8785 itself rounds to a double here.
    let as_double = n as f64;
    match serde_json_canonicalizer::to_string(&as_double) {
        Ok(s) => out.push_str(&s),
        // A finite double always serialises; keep the function total regardless.
        Err(_) => {
            let _ = write!(out, "{n}");
        }
    }
}

/// Why bytes are not acceptable JSON for a strict parser.
#[derive(Debug, thiserror::Error)]
pub enum StrictJsonError {
    /// Not UTF-8 JSON, or trailing data after the value.
    #[error("not valid JSON: {0}")]
    Syntax(serde_json::Error),
    /// An object repeats a key. `path` names the repeated member, e.g. `signatures[0].sig`.
    #[error("duplicate key {key:?} at {path}: a repeated key is ambiguous in signed JSON")]
    DuplicateKey { path: String, key: String },
}

impl StrictJsonError {
    /// The path of the offending member, when the error has one.
    pub fn path(&self) -> Option<&str> {
        match self {
            StrictJsonError::Syntax(_) => None,
            StrictJsonError::DuplicateKey { path, .. } => Some(path),
        }
    }
}

/// Parses one JSON document (surrounding whitespace allowed), refusing duplicate object keys
/// at any depth. Nesting depth is bounded by serde_json's recursion limit (128).
pub fn parse_json_strict(bytes: &[u8]) -> Result<Value, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = StrictSeed {
        duplicate: &duplicate,
    }
    .deserialize(&mut de)
    .and_then(|v| de.end().map(|()| v));
    strict_outcome(parsed, duplicate)
}

/// A strict parse's result: serde's error is a duplicate key when the parse recorded one.
fn strict_outcome<T>(
    parsed: Result<T, serde_json::Error>,
    duplicate: RefCell<Option<Duplicate>>,
) -> Result<T, StrictJsonError> {
    match (parsed, duplicate.into_inner()) {
        (Ok(v), _) => Ok(v),
        (Err(_), Some(dup)) => Err(StrictJsonError::DuplicateKey {
            path: dup.path(),
            key: dup.key,
        }),
        (Err(e), None) => Err(StrictJsonError::Syntax(e)),
    }
}

/// A path segment of a JSON document, for naming fields in errors.
#[derive(Debug, Clone, PartialEq, Eq)]
enum PathSegment {
    Key(String),
    Index(usize),
}

/// Renders segments as `a.b[3].c`, the field notation used in rejections.
fn render_path(segments: &[PathSegment]) -> String {
    let mut out = String::new();
    for (i, seg) in segments.iter().enumerate() {
        match seg {
            PathSegment::Key(k) if i == 0 => out.push_str(k),
            PathSegment::Key(k) => {
                out.push('.');
                out.push_str(k);
            }
            PathSegment::Index(n) => {
                let _ = write!(out, "[{n}]");
            }
        }
    }
    out
}

/// The first duplicate found. The path is collected while the error unwinds (innermost
/// segment first), so documents without duplicates pay nothing for it.
struct Duplicate {
    reversed_path: Vec<PathSegment>,
    key: String,
}

impl Duplicate {
    fn path(&self) -> String {
        let mut segs: Vec<PathSegment> = self.reversed_path.iter().rev().cloned().collect();
        segs.push(PathSegment::Key(self.key.clone()));
        render_path(&segs)
    }
}

#[derive(Clone, Copy)]
struct StrictSeed<'a> {
    duplicate: &'a RefCell<Option<Duplicate>>,
}

impl StrictSeed<'_> {
    fn note_parent(&self, seg: PathSegment) {
        if let Some(dup) = self.duplicate.borrow_mut().as_mut() {
            dup.reversed_path.push(seg);
        }
    }
}

impl<'de> DeserializeSeed<'de> for StrictSeed<'_> {
    type Value = Value;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<Value, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for StrictSeed<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("number is not finite"))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        loop {
            match seq.next_element_seed(self) {
                Ok(Some(v)) => out.push(v),
                Ok(None) => return Ok(Value::Array(out)),
                Err(e) => {
                    self.note_parent(PathSegment::Index(out.len()));
                    return Err(e);
                }
            }
        }
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if out.contains_key(&key) {
                *self.duplicate.borrow_mut() = Some(Duplicate {
                    reversed_path: Vec::new(),
                    key: key.clone(),
                });
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            match map.next_value_seed(self) {
                Ok(v) => {
                    out.insert(key, v);
                }
                Err(e) => {
                    self.note_parent(PathSegment::Key(key));
                    return Err(e);
                }
            }
        }
        Ok(Value::Object(out))
    }
}

/// The kind of a JSON value, for parsers that keep only the parts they check.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum JsonKind {
    Null,
    Bool,
    Number,
    String,
    Array,
    Object,
}

impl JsonKind {
    pub(crate) fn of(v: &Value) -> JsonKind {
        match v {
            Value::Null => JsonKind::Null,
            Value::Bool(_) => JsonKind::Bool,
            Value::Number(_) => JsonKind::Number,
            Value::String(_) => JsonKind::String,
            Value::Array(_) => JsonKind::Array,
            Value::Object(_) => JsonKind::Object,
        }
    }

    /// How error details name the kind, whichever parser found the value.
    pub(crate) fn name(self) -> &'static str {
        match self {
            JsonKind::Null => "null",
            JsonKind::Bool => "a boolean",
            JsonKind::Number => "a number",
            JsonKind::String => "a string",
            JsonKind::Array => "an array",
            JsonKind::Object => "an object",
        }
    }
}

/// What a [`parse_strict_with`] caller keeps of one value. Whatever a shape does not take
/// apart is still parsed as strictly as [`parse_json_strict`] would (duplicates refused
/// and named the same way, same errors at the same positions), but only its kind is kept:
/// no tree, and strings without escapes are borrowed from the input.
pub(crate) trait Shape<'de>: Sized {
    type Out;

    /// A value this shape does not take apart.
    fn other(kind: JsonKind) -> Self::Out;

    fn string(self, s: Cow<'de, str>) -> Self::Out {
        let _ = s;
        Self::other(JsonKind::String)
    }

    fn object<A: MapAccess<'de>>(self, strict: Strict<'_>, map: A) -> Result<Self::Out, A::Error> {
        skip_object(strict, map).map(|()| Self::other(JsonKind::Object))
    }

    fn array<A: SeqAccess<'de>>(self, strict: Strict<'_>, seq: A) -> Result<Self::Out, A::Error> {
        skip_array(strict, seq).map(|()| Self::other(JsonKind::Array))
    }
}

/// Parses one JSON document with the same acceptance, errors and duplicate paths as
/// [`parse_json_strict`], keeping only what `shape` takes.
pub(crate) fn parse_strict_with<'de, S: Shape<'de>>(
    bytes: &'de [u8],
    shape: S,
) -> Result<S::Out, StrictJsonError> {
    let duplicate = RefCell::new(None);
    let strict = Strict {
        duplicate: &duplicate,
    };
    let mut de = serde_json::Deserializer::from_slice(bytes);
    let parsed = Scan::new(strict, shape)
        .deserialize(&mut de)
        .and_then(|v| de.end().map(|()| v));
    strict_outcome(parsed, duplicate)
}

/// The duplicate bookkeeping of one [`parse_strict_with`] run, handed to shapes that take
/// objects or arrays apart so they report duplicates as [`StrictSeed`] does.
#[derive(Clone, Copy)]
pub(crate) struct Strict<'a> {
    duplicate: &'a RefCell<Option<Duplicate>>,
}

impl Strict<'_> {
    /// Records `key` as the duplicate; the returned error must abort the parse.
    pub(crate) fn duplicate<E: de::Error>(self, key: &str) -> E {
        *self.duplicate.borrow_mut() = Some(Duplicate {
            reversed_path: Vec::new(),
            key: key.to_owned(),
        });
        E::custom(format!("duplicate key {key:?}"))
    }

    /// Passes on the result of parsing member `key`'s value, adding `key` to the path of a
    /// duplicate found inside it.
    pub(crate) fn in_member<T, E>(self, key: &str, parsed: Result<T, E>) -> Result<T, E> {
        if parsed.is_err() {
            self.note_parent(|| PathSegment::Key(key.to_owned()));
        }
        parsed
    }

    /// As [`Strict::in_member`], for element `index` of an array.
    pub(crate) fn in_element<T, E>(self, index: usize, parsed: Result<T, E>) -> Result<T, E> {
        if parsed.is_err() {
            self.note_parent(|| PathSegment::Index(index));
        }
        parsed
    }

    fn note_parent(self, seg: impl FnOnce() -> PathSegment) {
        if let Some(dup) = self.duplicate.borrow_mut().as_mut() {
            dup.reversed_path.push(seg());
        }
    }

    /// Parses the value of a member this caller does not keep, refusing `key` if `seen`
    /// has it (the same check, at the same moment, as [`StrictSeed`]).
    pub(crate) fn skip_member<'de, A: MapAccess<'de>>(
        self,
        map: &mut A,
        seen: &mut KeySet<'de>,
        key: Cow<'de, str>,
    ) -> Result<(), A::Error> {
        if seen.contains(&key) {
            return Err(self.duplicate(&key));
        }
        let parsed = map.next_value_seed(Scan::new(self, KindOnly));
        self.in_member(&key, parsed)?;
        seen.insert(key);
        Ok(())
    }
}

fn skip_object<'de, A: MapAccess<'de>>(strict: Strict<'_>, mut map: A) -> Result<(), A::Error> {
    let mut seen = KeySet::default();
    while let Some(key) = map.next_key_seed(KeySeed)? {
        strict.skip_member(&mut map, &mut seen, key)?;
    }
    Ok(())
}

fn skip_array<'de, A: SeqAccess<'de>>(strict: Strict<'_>, mut seq: A) -> Result<(), A::Error> {
    let mut index = 0;
    loop {
        let parsed = seq.next_element_seed(Scan::new(strict, KindOnly));
        if strict.in_element(index, parsed)?.is_none() {
            return Ok(());
        }
        index += 1;
    }
}

/// Keys already seen in one object. Real objects are small, where a linear scan beats a
/// tree; past a few keys they go to a tree so that a hostile object with many keys costs
/// O(n log n), as the `Map` of [`parse_json_strict`] does.
#[derive(Default)]
pub(crate) struct KeySet<'de> {
    few: Vec<Cow<'de, str>>,
    many: BTreeSet<Cow<'de, str>>,
}

impl<'de> KeySet<'de> {
    const LINEAR: usize = 16;

    pub(crate) fn contains(&self, key: &str) -> bool {
        self.few.iter().any(|k| k == key) || self.many.contains(key)
    }

    pub(crate) fn insert(&mut self, key: Cow<'de, str>) {
        if self.few.len() < Self::LINEAR {
            self.few.push(key);
        } else {
            self.many.insert(key);
        }
    }
}

/// An object key, borrowed from the input unless it has escapes.
pub(crate) struct KeySeed;

impl<'de> DeserializeSeed<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn deserialize<D: de::Deserializer<'de>>(
        self,
        deserializer: D,
    ) -> Result<Self::Value, D::Error> {
        // serde_json's key deserializer forwards every string request here too.
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for KeySeed {
    type Value = Cow<'de, str>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string")
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v))
    }
}

/// The shape that keeps nothing but the kind.
struct KindOnly;

impl Shape<'_> for KindOnly {
    type Out = JsonKind;

    fn other(kind: JsonKind) -> JsonKind {
        kind
    }
}

/// Drives a [`Shape`] over one value; scalars are accepted exactly as [`StrictSeed`]
/// accepts them.
pub(crate) struct Scan<'a, S> {
    strict: Strict<'a>,
    shape: S,
}

impl<'a, S> Scan<'a, S> {
    pub(crate) fn new(strict: Strict<'a>, shape: S) -> Self {
        Scan { strict, shape }
    }
}

impl<'de, S: Shape<'de>> DeserializeSeed<'de> for Scan<'_, S> {
    type Value = S::Out;

    fn deserialize<D: de::Deserializer<'de>>(self, deserializer: D) -> Result<S::Out, D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de, S: Shape<'de>> Visitor<'de> for Scan<'_, S> {
    type Value = S::Out;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("any JSON value")
    }

    fn visit_bool<E>(self, _: bool) -> Result<S::Out, E> {
        Ok(S::other(JsonKind::Bool))
    }

    fn visit_i64<E>(self, _: i64) -> Result<S::Out, E> {
        Ok(S::other(JsonKind::Number))
    }

    fn visit_u64<E>(self, _: u64) -> Result<S::Out, E> {
        Ok(S::other(JsonKind::Number))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<S::Out, E> {
        // `Number::from_f64` refuses exactly the non-finite values.
        if v.is_finite() {
            Ok(S::other(JsonKind::Number))
        } else {
            Err(E::custom("number is not finite"))
        }
    }

    fn visit_borrowed_str<E>(self, v: &'de str) -> Result<S::Out, E> {
        Ok(self.shape.string(Cow::Borrowed(v)))
    }

    fn visit_str<E>(self, v: &str) -> Result<S::Out, E> {
        Ok(self.shape.string(Cow::Owned(v.to_owned())))
    }

    fn visit_string<E>(self, v: String) -> Result<S::Out, E> {
        Ok(self.shape.string(Cow::Owned(v)))
    }

    fn visit_unit<E>(self) -> Result<S::Out, E> {
        Ok(S::other(JsonKind::Null))
    }

    fn visit_none<E>(self) -> Result<S::Out, E> {
        Ok(S::other(JsonKind::Null))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<S::Out, A::Error> {
        self.shape.array(self.strict, seq)
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<S::Out, A::Error> {
        self.shape.object(self.strict, map)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn canonical_sorts_keys_and_strips_whitespace() {
        let v: Value =
            serde_json::from_str(r#"{"b": [1, 2.0, "x"], "a": {"d": null, "c": true}}"#).unwrap();
        assert_eq!(
            to_canonical_json(&v).unwrap(),
            br#"{"a":{"c":true,"d":null},"b":[1,2,"x"]}"#
        );
    }

    #[test]
    fn strict_accepts_plain_json() {
        let v = parse_json_strict(b" {\"a\": [1, {\"b\": 2}], \"c\": \"d\"} \n").unwrap();
        assert_eq!(v["a"][1]["b"], 2);
        assert_eq!(v["c"], "d");
    }

    #[test]
    fn strict_names_duplicate_paths() {
        let cases: [(&str, &str); 4] = [
            (r#"{"a":1,"a":2}"#, "a"),
            (r#"{"x":{"y":1,"y":1}}"#, "x.y"),
            (r#"{"s":[{"k":1},{"k":1,"k":2}]}"#, "s[1].k"),
            (r#"[[0,{"z":0,"z":0}]]"#, "[0][1].z"),
        ];
        for (doc, path) in cases {
            match parse_json_strict(doc.as_bytes()) {
                Err(StrictJsonError::DuplicateKey { path: p, .. }) => assert_eq!(p, path, "{doc}"),
                other => panic!("{doc}: {other:?}"),
            }
        }
    }

    #[test]
    fn strict_rejects_syntax_errors_and_trailing_data() {
        for doc in ["", "{", "{} {}", "[1,]", "{\"a\":1,}", "\u{feff}{}", "nul"] {
            assert!(
                matches!(
                    parse_json_strict(doc.as_bytes()),
                    Err(StrictJsonError::Syntax(_))
                ),
                "{doc:?}"
            );
        }
        assert!(parse_json_strict(b"\xff").is_err());
    }

    #[test]
    fn strict_bounds_depth_without_overflowing_the_stack() {
        let deep = "[".repeat(100_000);
        assert!(parse_json_strict(deep.as_bytes()).is_err());
        let deep_obj = "{\"a\":".repeat(100_000);
        assert!(parse_json_strict(deep_obj.as_bytes()).is_err());
    }

    #[test]
    fn integers_follow_rfc8785() {
        let mut s = String::new();
        push_json_integer(&mut s, 0);
        s.push(' ');
        push_json_integer(&mut s, -17);
        s.push(' ');
        push_json_integer(&mut s, MAX_EXACT_INTEGER);
        s.push(' ');
        push_json_integer(&mut s, 1_000_000_000_000_000_000_000);
        assert_eq!(s, "0 -17 9007199254740992 1e+21");
    }

    proptest! {
        #[test]
        fn string_escaping_matches_the_canonicaliser(s in any::<String>()) {
            let mut ours = String::new();
            push_json_string(&mut ours, &s);
            prop_assert_eq!(ours.into_bytes(), to_canonical_json(&s).unwrap());
        }

        #[test]
        fn integers_match_the_canonicaliser(n in any::<i64>()) {
            let mut ours = String::new();
            push_json_integer(&mut ours, i128::from(n));
            prop_assert_eq!(ours.into_bytes(), to_canonical_json(&n).unwrap());
        }

        #[test]
        fn strict_agrees_with_serde_json_without_duplicates(v in arb_json()) {
            let text = serde_json::to_vec(&v).unwrap();
            prop_assert_eq!(parse_json_strict(&text).unwrap(), v);
        }

        #[test]
        fn strict_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..256)) {
            let _ = parse_json_strict(&bytes);
        }
    }

    fn arb_json() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| Value::Number(n.into())),
            ".*".prop_map(Value::String),
        ];
        leaf.prop_recursive(4, 32, 6, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                proptest::collection::btree_map(".*", inner, 0..6)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }
}
