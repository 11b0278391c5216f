//! Field extraction shared by the strict JSON parsers (envelope, statement): each error is
//! a rejection with the parser's own code, naming the field and what was found.

use serde_json::{Map, Value};

use crate::canonical::{parse_json_strict, JsonKind, StrictJsonError};
use crate::envelope::WHOLE_DOCUMENT;
use crate::rejection::{Rejection, RejectionCode};

/// The JSON type name of a value, for error details.
pub(crate) fn json_kind(v: &Value) -> &'static str {
    JsonKind::of(v).name()
}

pub(crate) fn malformed(code: RejectionCode, field: &str, detail: impl Into<String>) -> Rejection {
    Rejection::new(code, detail).with_field(field)
}

/// `obj[key]` as a string; `field` is how the error names it (e.g. `signatures[2].sig`).
pub(crate) fn required_string<'a>(
    code: RejectionCode,
    obj: &'a Map<String, Value>,
    key: &str,
    field: &str,
) -> Result<&'a str, Rejection> {
    match obj.get(key) {
        None => Err(malformed(code, field, format!("{field} is missing"))),
        Some(Value::String(s)) => Ok(s),
        Some(other) => Err(malformed(
            code,
            field,
            format!("{field} must be a string, found {}", json_kind(other)),
        )),
    }
}

/// `obj[key]` as an array with at least one element (`what` names an element in the error).
pub(crate) fn required_nonempty_array<'a>(
    code: RejectionCode,
    obj: &'a Map<String, Value>,
    key: &str,
    what: &str,
) -> Result<&'a Vec<Value>, Rejection> {
    match obj.get(key) {
        None => Err(malformed(code, key, format!("{key} is missing"))),
        Some(Value::Array(a)) if a.is_empty() => Err(malformed(
            code,
            key,
            format!("{key} is empty: at least one {what} is required"),
        )),
        Some(Value::Array(a)) => Ok(a),
        Some(other) => Err(malformed(
            code,
            key,
            format!("{key} must be an array, found {}", json_kind(other)),
        )),
    }
}

/// Parse `bytes` as strict JSON (duplicate keys refused) that must be an object; `what`
/// names the document in error details ("envelope", "statement").
pub(crate) fn json_object(
    code: RejectionCode,
    bytes: &[u8],
    what: &str,
) -> Result<Map<String, Value>, Rejection> {
    let value = parse_json_strict(bytes).map_err(|e| strict_rejection(code, what, &e))?;
    match value {
        Value::Object(obj) => Ok(obj),
        other => Err(malformed(
            code,
            WHOLE_DOCUMENT,
            format!("{what} must be a JSON object, found {}", json_kind(&other)),
        )),
    }
}

/// The rejection for a document that is not strict JSON; `what` names the document.
pub(crate) fn strict_rejection(code: RejectionCode, what: &str, e: &StrictJsonError) -> Rejection {
    match e {
        StrictJsonError::Syntax(_) => malformed(code, WHOLE_DOCUMENT, format!("{what} is {e}")),
        StrictJsonError::DuplicateKey { path, .. } => malformed(code, path, e.to_string()),
    }
}
