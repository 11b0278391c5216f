//! Templates (`{digest}`, `{index}`, `{keyid:NAME}`) and the subset match of an expected
//! JSON answer against the actual one.
//!
//! Matching rules: an object matches when each expected key matches the actual value under
//! it; an array matches when each expected element matches some actual element; the string
//! `"*"` matches any non-null value; `"*text*"` matches a string containing `text`; a
//! string matches a number whose decimal form it is (templates are strings); anything else
//! must be equal.

use std::collections::HashMap;

use serde_json::Value;

/// Replaces every `{name}` of `vars` in `s`; an unknown name is an error naming it.
pub fn expand(s: &str, vars: &HashMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(open) = rest.find('{') {
        let Some(close) = rest[open..].find('}') else {
            break;
        };
        let name = &rest[open + 1..open + close];
        out.push_str(&rest[..open]);
        match vars.get(name) {
            Some(v) => out.push_str(v),
            None => {
                let mut known: Vec<&str> = vars.keys().map(String::as_str).collect();
                known.sort_unstable();
                return Err(format!(
                    "{{{name}}} is not set at this step (set: {})",
                    known.join(", ")
                ));
            }
        }
        rest = &rest[open + close + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Expands the templates in every string of `v`.
pub fn expand_json(v: &Value, vars: &HashMap<String, String>) -> Result<Value, String> {
    Ok(match v {
        Value::String(s) => Value::String(expand(s, vars)?),
        Value::Array(a) => Value::Array(
            a.iter()
                .map(|x| expand_json(x, vars))
                .collect::<Result<_, _>>()?,
        ),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, x)| Ok((k.clone(), expand_json(x, vars)?)))
                .collect::<Result<_, String>>()?,
        ),
        other => other.clone(),
    })
}

/// `Ok` when `actual` contains `expected` (rules above); else the first path that differs.
pub fn subset(expected: &Value, actual: &Value, at: &str) -> Result<(), String> {
    let here = if at.is_empty() { "the answer" } else { at };
    match (expected, actual) {
        (Value::String(e), a) if e == "*" => {
            if a.is_null() {
                Err(format!("{here}: expected a value, found null"))
            } else {
                Ok(())
            }
        }
        (Value::String(e), Value::String(a))
            if e.len() > 2 && e.starts_with('*') && e.ends_with('*') =>
        {
            let inner = &e[1..e.len() - 1];
            if a.contains(inner) {
                Ok(())
            } else {
                Err(format!(
                    "{here}: expected a string containing {inner:?}, found {a:?}"
                ))
            }
        }
        (Value::String(e), Value::Number(n)) => {
            if *e == n.to_string() {
                Ok(())
            } else {
                Err(format!("{here}: expected {e}, found {n}"))
            }
        }
        (Value::Object(e), Value::Object(a)) => {
            for (k, ev) in e {
                let path = format!("{at}.{k}");
                match a.get(k) {
                    Some(av) => subset(ev, av, &path)?,
                    None => return Err(format!("{path}: missing")),
                }
            }
            Ok(())
        }
        (Value::Array(e), Value::Array(a)) => {
            for (i, ev) in e.iter().enumerate() {
                let path = format!("{at}[{i}]");
                if !a.iter().any(|av| subset(ev, av, &path).is_ok()) {
                    return Err(format!(
                        "{path}: no element of the {} matches {ev}",
                        if a.is_empty() { "empty array" } else { "array" }
                    ));
                }
            }
            Ok(())
        }
        (e, a) if e == a => Ok(()),
        (e, a) => Err(format!("{here}: expected {e}, found {a}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn vars() -> HashMap<String, String> {
        [
            ("index", "17"),
            ("digest", "sha256:ab"),
            ("keyid:k", "00ff"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
    }

    #[test]
    fn templates() {
        assert_eq!(
            expand("/v1/entries/{index}", &vars()).as_deref(),
            Ok("/v1/entries/17")
        );
        assert_eq!(
            expand("{keyid:k}-{digest}", &vars()).as_deref(),
            Ok("00ff-sha256:ab")
        );
        assert_eq!(expand("no braces", &vars()).as_deref(), Ok("no braces"));
        let e = expand("/v1/blocks/{block}", &vars()).expect_err("unset");
        assert!(
            e.contains("{block} is not set") && e.contains("digest, index, keyid:k"),
            "{e}"
        );
    }

    #[test]
    fn subsets_match_and_name_the_first_difference() {
        let actual = json!({"status": "accepted", "index": 17, "warnings": ["artifact-names: x"],
            "producers": [{"keyid": "aa", "revoked_at": null}, {"keyid": "00ff", "revoked_at": "2026"}]});
        let ok = expand_json(
            &json!({"status": "accepted", "index": "{index}", "warnings": ["*artifact-names*"],
            "producers": [{"keyid": "{keyid:k}", "revoked_at": "*"}]}),
            &vars(),
        )
        .expect("expands");
        assert_eq!(subset(&ok, &actual, ""), Ok(()));
        let e = subset(&json!({"status": "rejected"}), &actual, "").expect_err("differs");
        assert_eq!(e, ".status: expected \"rejected\", found \"accepted\"");
        let e = subset(
            &json!({"producers": [{"keyid": "aa", "revoked_at": "*"}]}),
            &actual,
            "",
        )
        .expect_err("not revoked");
        assert!(e.starts_with(".producers[0]: no element"), "{e}");
        assert!(subset(&json!({"index": "18"}), &actual, "").is_err());
        assert!(subset(&json!({"missing": 1}), &actual, "")
            .expect_err("missing")
            .contains(".missing: missing"));
    }
}
