//! The envelopes a `publish` step sends: a fresh in-toto statement each (so each is a new
//! entry unless the step says otherwise), shaped by the step's fields, signed by the named
//! keys, or bytes given verbatim.

use std::collections::HashMap;

use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ed25519_dalek::SigningKey;
use rand::Rng;
use serde_json::{json, Value};

use crate::spec::Publish;

/// A run-unique tag, so that statements differ across runs and steps.
pub fn fresh_hex(bytes: usize) -> String {
    let mut b = vec![0u8; bytes];
    rand::thread_rng().fill(&mut b[..]);
    hex::encode(b)
}

/// The statement of envelope `n` of a step.
fn statement(p: &Publish, n: u32) -> Value {
    if let Some(s) = &p.statement {
        return s.clone();
    }
    let subjects = p.subjects.unwrap_or(1).max(1);
    let subject: Vec<Value> = (0..subjects)
        .map(|i| {
            let name = match &p.subject_name {
                Some(s) => s.clone(),
                None => format!("pkg:oci/sdf/artifact-{}-{n}-{i}", fresh_hex(4)),
            };
            let digest: serde_json::Map<String, Value> = match &p.digests {
                Some(d) => d
                    .iter()
                    .map(|(alg, v)| {
                        let v = match v.as_str() {
                            "{sha256}" => fresh_hex(32),
                            "{sha512}" => fresh_hex(64),
                            other => other.to_string(),
                        };
                        (alg.clone(), Value::String(v))
                    })
                    .collect(),
                None => [("sha256".to_string(), Value::String(fresh_hex(32)))]
                    .into_iter()
                    .collect(),
            };
            json!({"name": name, "digest": digest})
        })
        .collect();
    json!({
        "_type": "https://in-toto.io/Statement/v1",
        "subject": subject,
        "predicateType": p.predicate_type.clone().unwrap_or_else(|| "https://slsa.dev/provenance/v1".into()),
        "predicate": p.predicate.clone().unwrap_or_else(|| json!({"sdf": fresh_hex(8)})),
    })
}

/// The bytes of envelope `n`, or why they cannot be made (a key the step names that the
/// run does not have).
pub fn build(
    p: &Publish,
    n: u32,
    keys: &HashMap<String, SigningKey>,
    default_key: &str,
) -> Result<Vec<u8>, String> {
    if let Some(raw) = &p.raw {
        return Ok(raw.clone().into_bytes());
    }
    let names = p
        .key
        .as_ref()
        .map(|k| k.names())
        .unwrap_or_else(|| vec![default_key.to_string()]);
    let signers: Vec<&SigningKey> = names
        .iter()
        .map(|k| {
            keys.get(k)
                .ok_or_else(|| format!("no key named {k:?} (made by new_key, add_key, rotate_key, or a stack producer)"))
        })
        .collect::<Result<_, _>>()?;
    let payload_type = p
        .payload_type
        .clone()
        .unwrap_or_else(|| IN_TOTO_PAYLOAD_TYPE.to_string());
    let mut payload = match &p.payload {
        Some(text) => text.clone().into_bytes(),
        None => serde_json::to_vec(&statement(p, n)).map_err(|e| e.to_string())?,
    };
    let sign = |payload: &[u8]| {
        let mut env = Envelope::sign(&payload_type, payload, signers[0]);
        for k in &signers[1..] {
            env.add_signature(k);
        }
        env
    };
    let mut env = sign(&payload);
    if let Some(target) = p.pad_to {
        // Grow the predicate (or the opaque payload) until the envelope reaches the size.
        let missing = target.saturating_sub(env.to_json().len());
        if missing > 0 {
            if p.payload.is_some() {
                payload.extend(std::iter::repeat_n(b' ', missing));
            } else {
                let mut st = statement(p, n);
                // Base64 grows the payload by 4/3: pad by 3/4 of what is missing, plus slack.
                st["predicate"]["padding"] = Value::String("x".repeat(missing * 3 / 4 + 64));
                payload = serde_json::to_vec(&st).map_err(|e| e.to_string())?;
            }
            env = sign(&payload);
        }
    }
    match p.tamper.as_deref() {
        None => {}
        Some("signature") => {
            for s in &mut env.signatures {
                if let Some(b) = s.sig.first_mut() {
                    *b ^= 0x01;
                }
            }
        }
        Some(other) => return Err(format!("tamper: {other:?} (only `signature`)")),
    }
    Ok(env.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::SdfFile;

    fn step(yaml: &str) -> Publish {
        let text = format!("stack: {{}}\nscenarios:\n  - name: a\n    steps:\n      - publish: {yaml}\n        expect: {{ack: accepted}}\n");
        let mut f = SdfFile::parse("t.yml", &text).expect("parses");
        match f.scenarios.remove(0).steps.remove(0).action {
            crate::spec::Action::Publish(p) => *p,
            _ => unreachable!("a publish step"),
        }
    }

    fn keys() -> HashMap<String, SigningKey> {
        [
            ("a".to_string(), SigningKey::from_bytes(&[1; 32])),
            ("b".to_string(), SigningKey::from_bytes(&[2; 32])),
        ]
        .into_iter()
        .collect()
    }

    #[test]
    fn each_envelope_is_a_new_statement_signed_by_the_named_keys() {
        let p = step("{as: x, key: [a, b]}");
        let one = build(&p, 0, &keys(), "a").expect("built");
        let two = build(&p, 1, &keys(), "a").expect("built");
        let (e1, e2) = (
            Envelope::parse(&one).expect("parses"),
            Envelope::parse(&two).expect("parses"),
        );
        assert_ne!(e1.digest(), e2.digest());
        assert_eq!(e1.signatures.len(), 2);
        let st: Value = serde_json::from_slice(&e1.payload).expect("json");
        assert_eq!(st["predicateType"], "https://slsa.dev/provenance/v1");
        assert_eq!(
            st["subject"][0]["digest"]["sha256"].as_str().map(str::len),
            Some(64)
        );
    }

    #[test]
    fn shapes() {
        let padded = build(&step("{as: x, pad_to: 20000}"), 0, &keys(), "a").expect("built");
        assert!(
            padded.len() >= 20000 && padded.len() < 21000,
            "{}",
            padded.len()
        );
        let tampered = build(&step("{as: x, tamper: signature}"), 0, &keys(), "a").expect("built");
        let e = Envelope::parse(&tampered).expect("parses");
        let vk = SigningKey::from_bytes(&[1; 32]).verifying_key();
        let sig = ed25519_dalek::Signature::from_slice(&e.signatures[0].sig).expect("64 bytes");
        assert!(
            vk.verify_strict(&e.pae(), &sig).is_err(),
            "the signature no longer verifies"
        );
        let md5 = build(
            &step("{as: x, digests: {md5: abc, sha512: \"{sha512}\"}, subjects: 3}"),
            0,
            &keys(),
            "a",
        )
        .expect("built");
        let st: Value =
            serde_json::from_slice(&Envelope::parse(&md5).expect("parses").payload).expect("json");
        assert_eq!(st["subject"].as_array().map(Vec::len), Some(3));
        assert_eq!(st["subject"][0]["digest"]["md5"], "abc");
        assert_eq!(
            st["subject"][0]["digest"]["sha512"].as_str().map(str::len),
            Some(128)
        );
        assert!(build(&step("{as: x, key: nobody}"), 0, &keys(), "a").is_err());
        assert_eq!(
            build(&step("{as: x, raw: \"junk\"}"), 0, &keys(), "a").expect("raw"),
            b"junk"
        );
    }
}
