//! in-toto Statement v1 (`application/vnd.in-toto+json` payloads), parsed strictly so that
//! the subjects the ledger indexes are exactly the ones that were signed.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use crate::fields::{self, json_kind, required_nonempty_array};

const CODE: RejectionCode = RejectionCode::MalformedStatement;
use crate::ids::{excerpt, is_lower_hex};
use crate::rejection::{Rejection, RejectionCode};

pub const STATEMENT_TYPE_V1: &str = "https://in-toto.io/Statement/v1";

/// An in-toto ResourceDescriptor as used in `subject`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResourceDescriptor {
    pub name: String,
    /// Algorithm → digest value (lowercase hex for the hash algorithms in-toto names).
    pub digest: BTreeMap<String, String>,
    /// The descriptor's other members (`uri`, `annotations`, …), kept as given.
    pub extra: Map<String, Value>,
}

/// An in-toto Statement v1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Statement {
    pub type_: String,
    pub subject: Vec<ResourceDescriptor>,
    pub predicate_type: String,
    pub predicate: Option<Value>,
}

/// One index row: a subject name with one of its digests.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Subject {
    pub name: String,
    pub algorithm: String,
    pub value: String,
}

/// Hex lengths of the digest algorithms in-toto's DigestSet names; values for these must be
/// lowercase hex of exactly this length.
const HEX_DIGESTS: &[(&str, usize)] = &[
    ("md5", 32),
    ("sha1", 40),
    ("sha224", 56),
    ("sha256", 64),
    ("sha384", 96),
    ("sha512", 128),
    ("sha512_224", 56),
    ("sha512_256", 64),
    ("sha3_224", 56),
    ("sha3_256", 64),
    ("sha3_384", 96),
    ("sha3_512", 128),
    ("ripemd160", 40),
    ("sm3", 64),
];

impl Statement {
    /// Strict parse of a Statement payload.
    ///
    /// `_type` must be [`STATEMENT_TYPE_V1`]; `subject` a non-empty array of objects, each
    /// with a string `name` and a non-empty `digest` object of algorithm → string. For the
    /// hash algorithms in-toto names (sha256, sha512, sha1, sha3_256, md5, …) the value must
    /// be lowercase hex of the algorithm's length; other algorithms (gitCommit, dirHash, …)
    /// need a non-empty string. `predicateType` must be a URI (`scheme:…`, no whitespace);
    /// `predicate`, if present, an object. Unknown members are ignored, as in-toto asks of
    /// consumers; duplicate keys are refused.
    ///
    /// # Errors
    /// A [`Rejection`] with code `malformed_statement` naming the field, e.g.
    /// `subject[1].digest.sha256`, or `$` when the payload is not a JSON object.
    pub fn parse(payload: &[u8]) -> Result<Statement, Rejection> {
        let mut obj = fields::json_object(CODE, payload, "statement")?;

        let type_ = required_string(&obj, "_type", "_type")?;
        if type_ != STATEMENT_TYPE_V1 {
            return Err(malformed(
                "_type",
                format!(
                    "_type is {:?}; expected {STATEMENT_TYPE_V1:?}",
                    excerpt(type_)
                ),
            ));
        }

        let subjects = required_nonempty_array(CODE, &obj, "subject", "subject")?;
        let subject = subjects
            .iter()
            .enumerate()
            .map(|(i, s)| parse_subject(i, s))
            .collect::<Result<Vec<_>, _>>()?;

        let predicate_type = required_string(&obj, "predicateType", "predicateType")?;
        if let Err(why) = check_uri(predicate_type) {
            return Err(malformed(
                "predicateType",
                format!(
                    "predicateType {:?} is not a URI: {why}",
                    excerpt(predicate_type)
                ),
            ));
        }

        let type_ = type_.to_owned();
        let predicate_type = predicate_type.to_owned();
        // Moved out, not cloned: a predicate can be most of the payload.
        let predicate = match obj.remove("predicate") {
            None => None,
            Some(p @ Value::Object(_)) => Some(p),
            Some(other) => {
                return Err(malformed(
                    "predicate",
                    format!("predicate must be an object, found {}", json_kind(&other)),
                ))
            }
        };

        Ok(Statement {
            type_,
            subject,
            predicate_type,
            predicate,
        })
    }

    /// One row per (subject, digest algorithm), in subject order then algorithm order.
    pub fn subjects(&self) -> Vec<Subject> {
        self.subject
            .iter()
            .flat_map(|rd| {
                rd.digest.iter().map(|(algorithm, value)| Subject {
                    name: rd.name.clone(),
                    algorithm: algorithm.clone(),
                    value: value.clone(),
                })
            })
            .collect()
    }
}

fn parse_subject(i: usize, value: &Value) -> Result<ResourceDescriptor, Rejection> {
    let at = format!("subject[{i}]");
    let Value::Object(obj) = value else {
        return Err(malformed(
            &at,
            format!("{at} must be an object, found {}", json_kind(value)),
        ));
    };
    let name = required_string(obj, "name", &format!("{at}.name"))?.to_owned();

    let digest_field = format!("{at}.digest");
    let digest_obj = match obj.get("digest") {
        None => {
            return Err(malformed(
                &digest_field,
                format!("{digest_field} is missing"),
            ))
        }
        Some(Value::Object(d)) => d,
        Some(other) => {
            return Err(malformed(
                &digest_field,
                format!(
                    "{digest_field} must be an object, found {}",
                    json_kind(other)
                ),
            ))
        }
    };
    if digest_obj.is_empty() {
        return Err(malformed(
            &digest_field,
            format!("{digest_field} is empty: at least one digest is required"),
        ));
    }
    let mut digest = BTreeMap::new();
    for (alg, v) in digest_obj {
        let field = format!("{digest_field}.{alg}");
        if alg.is_empty() {
            return Err(malformed(
                &field,
                format!("{digest_field} has an empty algorithm name"),
            ));
        }
        let Value::String(s) = v else {
            return Err(malformed(
                &field,
                format!("{field} must be a string, found {}", json_kind(v)),
            ));
        };
        if let Some(&(_, len)) = HEX_DIGESTS.iter().find(|(a, _)| a == alg) {
            if s.len() != len || !is_lower_hex(s) {
                return Err(malformed(
                    &field,
                    format!(
                        "{field} must be {len} lowercase hex characters, found {:?}",
                        excerpt(s)
                    ),
                ));
            }
        } else if s.is_empty() {
            return Err(malformed(&field, format!("{field} is empty")));
        }
        digest.insert(alg.clone(), s.clone());
    }

    let extra = obj
        .iter()
        .filter(|(k, _)| k.as_str() != "name" && k.as_str() != "digest")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    Ok(ResourceDescriptor {
        name,
        digest,
        extra,
    })
}

/// A URI needs an RFC 3986 scheme (`ALPHA *( ALPHA / DIGIT / "+" / "-" / "." ) ":"`) and,
/// for a type identifier, no whitespace or control characters.
fn check_uri(s: &str) -> Result<(), &'static str> {
    let Some((scheme, _)) = s.split_once(':') else {
        return Err("it has no scheme (e.g. https:)");
    };
    let mut chars = scheme.chars();
    if !chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        || !chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'))
    {
        return Err("its scheme is not letters followed by letters, digits, '+', '-' or '.'");
    }
    if s.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("it contains whitespace or control characters");
    }
    Ok(())
}

fn required_string<'a>(
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a str, Rejection> {
    fields::required_string(CODE, obj, key, field)
}

fn malformed(field: &str, detail: impl Into<String>) -> Rejection {
    fields::malformed(CODE, field, detail)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    const SHA: &str = "e7c0d1be9dcbe9d627666e135d957b244dc83d3cac9d2dfd3df560a5286ff12f";

    fn good() -> Value {
        json!({
            "_type": STATEMENT_TYPE_V1,
            "subject": [
                {"name": "app.tar.gz", "digest": {"sha256": SHA}},
                {"name": "app.sig", "digest": {"sha512": "ab".repeat(64), "gitCommit": "abc"},
                 "uri": "https://example.com/app.sig"}
            ],
            "predicateType": "https://slsa.dev/provenance/v1",
            "predicate": {"buildDefinition": {}},
            "unknownTopLevel": 1
        })
    }

    fn field_of(v: &Value) -> String {
        let r = Statement::parse(&serde_json::to_vec(v).unwrap()).unwrap_err();
        assert_eq!(r.code, RejectionCode::MalformedStatement, "{r:?}");
        r.field.expect("field named")
    }

    fn with(mutate: impl FnOnce(&mut Value)) -> Value {
        let mut v = good();
        mutate(&mut v);
        v
    }

    #[test]
    fn parses_and_indexes_subjects() {
        let st = Statement::parse(&serde_json::to_vec(&good()).unwrap()).unwrap();
        assert_eq!(st.type_, STATEMENT_TYPE_V1);
        assert_eq!(st.predicate_type, "https://slsa.dev/provenance/v1");
        assert_eq!(st.subject[1].extra["uri"], "https://example.com/app.sig");
        let rows = st.subjects();
        assert_eq!(rows.len(), 3);
        assert_eq!(
            rows[0],
            Subject {
                name: "app.tar.gz".into(),
                algorithm: "sha256".into(),
                value: SHA.into()
            }
        );
        assert_eq!(rows[1].algorithm, "gitCommit");
        assert_eq!(rows[2].algorithm, "sha512");
    }

    #[test]
    fn predicate_is_optional() {
        let v = with(|v| {
            v.as_object_mut().unwrap().remove("predicate");
        });
        let st = Statement::parse(&serde_json::to_vec(&v).unwrap()).unwrap();
        assert!(st.predicate.is_none());
    }

    #[test]
    fn document_errors() {
        for bad in [&b"nope"[..], b"[1]", b"\"s\"", b""] {
            let r = Statement::parse(bad).unwrap_err();
            assert_eq!(r.code, RejectionCode::MalformedStatement);
            assert_eq!(r.field.as_deref(), Some("$"));
        }
    }

    #[test]
    fn type_errors() {
        assert_eq!(
            field_of(&with(|v| {
                v.as_object_mut().unwrap().remove("_type");
            })),
            "_type"
        );
        assert_eq!(
            field_of(&with(
                |v| v["_type"] = "https://in-toto.io/Statement/v0.1".into()
            )),
            "_type"
        );
        assert_eq!(field_of(&with(|v| v["_type"] = 1.into())), "_type");
    }

    #[test]
    fn subject_errors() {
        let cases: Vec<(Value, &str)> = vec![
            (
                with(|v| {
                    v.as_object_mut().unwrap().remove("subject");
                }),
                "subject",
            ),
            (with(|v| v["subject"] = json!({})), "subject"),
            (with(|v| v["subject"] = json!([])), "subject"),
            (with(|v| v["subject"][1] = json!("x")), "subject[1]"),
            (
                with(|v| {
                    v["subject"][1].as_object_mut().unwrap().remove("name");
                }),
                "subject[1].name",
            ),
            (
                with(|v| v["subject"][1]["name"] = json!(3)),
                "subject[1].name",
            ),
            (
                with(|v| {
                    v["subject"][1].as_object_mut().unwrap().remove("digest");
                }),
                "subject[1].digest",
            ),
            (
                with(|v| v["subject"][1]["digest"] = json!({})),
                "subject[1].digest",
            ),
            (
                with(|v| v["subject"][1]["digest"] = json!([])),
                "subject[1].digest",
            ),
            (
                with(|v| v["subject"][1]["digest"]["sha256"] = json!(SHA.to_uppercase())),
                "subject[1].digest.sha256",
            ),
            (
                with(|v| v["subject"][1]["digest"]["sha256"] = json!(&SHA[1..])),
                "subject[1].digest.sha256",
            ),
            (
                with(|v| v["subject"][0]["digest"]["sha1"] = json!(SHA)),
                "subject[0].digest.sha1",
            ),
            (
                with(|v| v["subject"][0]["digest"]["sha3_256"] = json!("zz".repeat(32))),
                "subject[0].digest.sha3_256",
            ),
            (
                with(|v| v["subject"][0]["digest"]["gitCommit"] = json!("")),
                "subject[0].digest.gitCommit",
            ),
            (
                with(|v| v["subject"][0]["digest"]["md5"] = json!(5)),
                "subject[0].digest.md5",
            ),
            (
                with(|v| v["subject"][0]["digest"][""] = json!("x")),
                "subject[0].digest.",
            ),
        ];
        for (v, want) in cases {
            assert_eq!(field_of(&v), want, "{v}");
        }
    }

    #[test]
    fn predicate_type_and_predicate_errors() {
        for bad in [
            json!(""),
            json!("slsa provenance"),
            json!("no-scheme"),
            json!("1http:x"),
            json!("https://a b"),
            json!(1),
        ] {
            assert_eq!(
                field_of(&with(|v| v["predicateType"] = bad.clone())),
                "predicateType",
                "{bad}"
            );
        }
        assert_eq!(
            field_of(&with(|v| {
                v.as_object_mut().unwrap().remove("predicateType");
            })),
            "predicateType"
        );
        for bad in [json!(null), json!([]), json!("x"), json!(1)] {
            assert_eq!(
                field_of(&with(|v| v["predicate"] = bad.clone())),
                "predicate"
            );
        }
    }

    #[test]
    fn duplicate_keys_are_refused_and_named() {
        let text = format!(
            r#"{{"_type":"{STATEMENT_TYPE_V1}","subject":[{{"name":"a","digest":{{"sha256":"{SHA}","sha256":"{SHA}"}}}}],"predicateType":"https://x/y"}}"#
        );
        let r = Statement::parse(text.as_bytes()).unwrap_err();
        assert_eq!(r.field.as_deref(), Some("subject[0].digest.sha256"));
        assert!(r.detail.contains("duplicate"));
    }

    proptest! {
        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Statement::parse(&bytes);
        }
    }
}
