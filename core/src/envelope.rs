//! DSSE envelopes (secure-systems-lab/dsse, protocol v1) signed with ed25519.

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{DecodeError, Engine as _};
use ed25519_dalek::{Signer as _, SigningKey, SIGNATURE_LENGTH};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::canonical::push_json_string;
use crate::fields::{self, json_kind, required_nonempty_array};
use crate::ids::{EnvelopeDigest, KeyId};
use crate::rejection::{Rejection, RejectionCode};

const CODE: RejectionCode = RejectionCode::MalformedEnvelope;

/// The DSSE payload type of an in-toto Statement.
pub const IN_TOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";

/// The field name used when a problem concerns the whole document rather than one member.
pub const WHOLE_DOCUMENT: &str = "$";

/// DSSE pre-authentication encoding:
/// `"DSSEv1" SP LEN(type) SP type SP LEN(body) SP body`, LEN in decimal bytes.
/// This is what is signed and what the envelope digest hashes.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let type_len = payload_type.len().to_string();
    let body_len = payload.len().to_string();
    let mut out = Vec::with_capacity(
        "DSSEv1".len() + 4 + type_len.len() + payload_type.len() + body_len.len() + payload.len(),
    );
    out.extend_from_slice(b"DSSEv1 ");
    out.extend_from_slice(type_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload_type.as_bytes());
    out.push(b' ');
    out.extend_from_slice(body_len.as_bytes());
    out.push(b' ');
    out.extend_from_slice(payload);
    out
}

/// Lowercase hex SHA-256 of the envelope bytes exactly as received (`envelope_sha256`).
pub fn envelope_sha256(raw: &[u8]) -> String {
    hex::encode(Sha256::digest(raw))
}

/// One DSSE signature. `keyid` is an unauthenticated hint (DSSE), used only to find the key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EnvelopeSignature {
    pub keyid: String,
    pub sig: Vec<u8>,
}

/// A DSSE envelope with its payload decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Envelope {
    pub payload_type: String,
    pub payload: Vec<u8>,
    pub signatures: Vec<EnvelopeSignature>,
}

impl Envelope {
    /// Strict parse of DSSE JSON envelope bytes.
    ///
    /// Required: a JSON object with `payloadType` (non-empty string), `payload` (base64
    /// string, may decode to nothing) and `signatures` (non-empty array of objects, each
    /// with `sig`: base64 of a 64-byte ed25519 signature). `keyid` is optional in DSSE:
    /// absent reads as `""`; present, it must be a string.
    ///
    /// Base64: DSSE verifiers must accept the standard and the URL-safe alphabet; either is
    /// accepted, padded or unpadded. Mixing the alphabets, whitespace, and non-zero
    /// trailing bits are refused.
    ///
    /// Unknown members (top level and in signatures) are ignored, as DSSE extensions add
    /// some; duplicate keys anywhere are refused, because parsers disagree on which one
    /// counts.
    ///
    /// # Errors
    /// A [`Rejection`] with code `malformed_envelope` whose `field` names the member
    /// (`payloadType`, `payload`, `signatures`, `signatures[2].sig`, …), or `$` when the
    /// document as a whole is not a JSON object.
    pub fn parse(bytes: &[u8]) -> Result<Envelope, Rejection> {
        let obj = fields::json_object(CODE, bytes, "envelope")?;

        let payload_type = required_string(&obj, "payloadType", "payloadType")?;
        if payload_type.is_empty() {
            return Err(malformed("payloadType", "payloadType must not be empty"));
        }
        let payload_b64 = required_string(&obj, "payload", "payload")?;
        let payload = decode_base64(payload_b64)
            .map_err(|why| malformed("payload", format!("payload is not base64: {why}")))?;

        let sigs = required_nonempty_array(CODE, &obj, "signatures", "signature")?;
        let signatures = sigs
            .iter()
            .enumerate()
            .map(|(i, s)| parse_signature(i, s))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Envelope {
            payload_type: payload_type.to_owned(),
            payload,
            signatures,
        })
    }

    /// The PAE bytes the signatures cover.
    pub fn pae(&self) -> Vec<u8> {
        pae(&self.payload_type, &self.payload)
    }

    /// The dedupe key: SHA-256 of the PAE. Signatures do not contribute, so the same
    /// statement re-signed is the same entry.
    pub fn digest(&self) -> EnvelopeDigest {
        EnvelopeDigest::from_pae(&self.pae())
    }

    /// An envelope with one ed25519 signature whose keyid is [`KeyId::from_public_key`].
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Envelope {
        let mut env = Envelope {
            payload_type: payload_type.to_owned(),
            payload: payload.to_vec(),
            signatures: Vec::new(),
        };
        env.add_signature(key);
        env
    }

    /// Appends an ed25519 signature over the PAE by `key`.
    pub fn add_signature(&mut self, key: &SigningKey) {
        let sig = key.sign(&self.pae());
        self.signatures.push(EnvelopeSignature {
            keyid: KeyId::from_public_key(&key.verifying_key())
                .as_str()
                .to_owned(),
            sig: sig.to_bytes().to_vec(),
        });
    }

    /// Compact JSON: `payloadType`, `payload` (standard padded base64), `signatures`
    /// (`keyid`, `sig`) in that order, as producers publish it.
    pub fn to_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(64 + self.payload.len() * 4 / 3);
        out.push_str("{\"payloadType\":");
        push_json_string(&mut out, &self.payload_type);
        out.push_str(",\"payload\":\"");
        STANDARD.encode_string(&self.payload, &mut out);
        out.push_str("\",\"signatures\":[");
        for (i, s) in self.signatures.iter().enumerate() {
            if i > 0 {
                out.push(',');
            }
            out.push_str("{\"keyid\":");
            push_json_string(&mut out, &s.keyid);
            out.push_str(",\"sig\":\"");
            STANDARD.encode_string(&s.sig, &mut out);
            out.push_str("\"}");
        }
        out.push_str("]}");
        out.into_bytes()
    }
}

fn parse_signature(i: usize, value: &Value) -> Result<EnvelopeSignature, Rejection> {
    let at = format!("signatures[{i}]");
    let Value::Object(obj) = value else {
        return Err(malformed(
            &at,
            format!("{at} must be an object, found {}", json_kind(value)),
        ));
    };
    let keyid_field = format!("{at}.keyid");
    let keyid = match obj.get("keyid") {
        None => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(other) => {
            return Err(malformed(
                &keyid_field,
                format!("{keyid_field} must be a string, found {}", json_kind(other)),
            ))
        }
    };
    let sig_field = format!("{at}.sig");
    let sig_b64 = required_string(obj, "sig", &sig_field)?;
    let sig = decode_base64(sig_b64)
        .map_err(|why| malformed(&sig_field, format!("{sig_field} is not base64: {why}")))?;
    if sig.len() != SIGNATURE_LENGTH {
        return Err(malformed(
            &sig_field,
            format!(
                "{sig_field} decodes to {} bytes; an ed25519 signature is {SIGNATURE_LENGTH}",
                sig.len()
            ),
        ));
    }
    Ok(EnvelopeSignature { keyid, sig })
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

const ANY_PADDING: GeneralPurposeConfig =
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent);
const STANDARD_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::STANDARD, ANY_PADDING);
const URL_SAFE_ANY_PADDING: GeneralPurpose = GeneralPurpose::new(&alphabet::URL_SAFE, ANY_PADDING);

/// Decodes DSSE base64: standard or URL-safe alphabet, padded or not.
pub(crate) fn decode_base64(s: &str) -> Result<Vec<u8>, String> {
    let standard_only = s.contains(['+', '/']);
    let url_only = s.contains(['-', '_']);
    if standard_only && url_only {
        return Err("it mixes the standard (+ /) and URL-safe (- _) alphabets".to_owned());
    }
    let engine = if url_only {
        &URL_SAFE_ANY_PADDING
    } else {
        &STANDARD_ANY_PADDING
    };
    engine.decode(s).map_err(|e| match e {
        DecodeError::InvalidByte(at, b) => {
            format!(
                "character {:?} at offset {at} is not in the alphabet",
                char::from(b)
            )
        }
        DecodeError::InvalidLength(n) => format!("{n} symbols is not a valid base64 length"),
        DecodeError::InvalidLastSymbol(at, _) => {
            format!("the last symbol (offset {at}) has non-zero trailing bits")
        }
        DecodeError::InvalidPadding => "the padding is wrong".to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn key() -> SigningKey {
        SigningKey::from_bytes(&[9u8; 32])
    }

    fn sample() -> Envelope {
        Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"{\"hello\":\"world\"}", &key())
    }

    fn sample_value() -> Value {
        serde_json::from_slice(&sample().to_json()).unwrap()
    }

    fn reject_field(bytes: &[u8]) -> (String, String) {
        let r = Envelope::parse(bytes).unwrap_err();
        assert_eq!(r.code, RejectionCode::MalformedEnvelope, "{r:?}");
        (r.field.clone().expect("field named"), r.detail)
    }

    fn with(mutate: impl FnOnce(&mut Value)) -> Vec<u8> {
        let mut v = sample_value();
        mutate(&mut v);
        serde_json::to_vec(&v).unwrap()
    }

    #[test]
    fn pae_matches_the_dsse_protocol_example() {
        // secure-systems-lab/dsse protocol.md, "Test Vectors".
        assert_eq!(
            pae("http://example.com/HelloWorld", b"hello world"),
            b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
        );
        assert_eq!(pae("", b""), b"DSSEv1 0  0 ");
    }

    #[test]
    fn sign_parse_round_trip() {
        let env = sample();
        assert_eq!(Envelope::parse(&env.to_json()).unwrap(), env);
        assert_eq!(env.signatures.len(), 1);
        assert_eq!(
            env.signatures[0].keyid,
            KeyId::from_public_key(&key().verifying_key()).as_str()
        );
        assert_eq!(env.digest(), EnvelopeDigest::from_pae(&env.pae()));
    }

    #[test]
    fn digest_ignores_signatures() {
        let mut env = sample();
        let d = env.digest();
        env.add_signature(&SigningKey::from_bytes(&[1u8; 32]));
        assert_eq!(env.signatures.len(), 2);
        assert_eq!(env.digest(), d);
    }

    #[test]
    fn not_json_or_not_object() {
        for doc in [
            &b"not json"[..],
            b"",
            b"\xff\xfe",
            b"{\"payloadType\":",
            b"{} x",
        ] {
            let (field, detail) = reject_field(doc);
            assert_eq!(field, "$");
            assert!(detail.contains("not valid JSON"), "{detail}");
        }
        for doc in ["[]", "\"env\"", "null", "42"] {
            let (field, detail) = reject_field(doc.as_bytes());
            assert_eq!(field, "$");
            assert!(detail.contains("must be a JSON object"), "{detail}");
        }
    }

    #[test]
    fn payload_type_errors() {
        let missing = with(|v| {
            v.as_object_mut().unwrap().remove("payloadType");
        });
        assert_eq!(reject_field(&missing).0, "payloadType");
        assert!(reject_field(&missing).1.contains("missing"));
        assert_eq!(
            reject_field(&with(|v| v["payloadType"] = "".into())).0,
            "payloadType"
        );
        assert_eq!(
            reject_field(&with(|v| v["payloadType"] = 5.into())).0,
            "payloadType"
        );
    }

    #[test]
    fn payload_errors() {
        let missing = with(|v| {
            v.as_object_mut().unwrap().remove("payload");
        });
        assert_eq!(reject_field(&missing).0, "payload");
        for bad in ["@@@@", "aGVsbG8gd29ybGQ=x", "a", "aGVs bG8=", "+_8="] {
            let (field, detail) = reject_field(&with(|v| v["payload"] = bad.into()));
            assert_eq!(field, "payload", "{bad}");
            assert!(detail.contains("not base64"), "{detail}");
        }
        assert_eq!(
            reject_field(&with(|v| v["payload"] = Value::Null)).0,
            "payload"
        );
    }

    #[test]
    fn signatures_errors() {
        let missing = with(|v| {
            v.as_object_mut().unwrap().remove("signatures");
        });
        assert_eq!(reject_field(&missing).0, "signatures");
        let (field, detail) = reject_field(&with(|v| v["signatures"] = "x".into()));
        assert_eq!(field, "signatures");
        assert!(detail.contains("must be an array"), "{detail}");
        let (field, detail) = reject_field(&with(|v| v["signatures"] = Value::Array(vec![])));
        assert_eq!(field, "signatures");
        assert!(detail.contains("empty"), "{detail}");
        assert_eq!(
            reject_field(&with(|v| v["signatures"][0] = 3.into())).0,
            "signatures[0]"
        );
    }

    #[test]
    fn signature_member_errors() {
        let two = |mutate: fn(&mut Value)| {
            with(|v| {
                let first = v["signatures"][0].clone();
                let mut second = first.clone();
                mutate(&mut second);
                v["signatures"] = Value::Array(vec![first, second]);
            })
        };
        assert_eq!(
            reject_field(&two(|s| s["keyid"] = 7.into())).0,
            "signatures[1].keyid"
        );
        assert_eq!(
            reject_field(&two(|s| {
                s.as_object_mut().unwrap().remove("sig");
            }))
            .0,
            "signatures[1].sig"
        );
        assert_eq!(
            reject_field(&two(|s| s["sig"] = Value::Bool(true))).0,
            "signatures[1].sig"
        );
        let (field, detail) = reject_field(&two(|s| s["sig"] = "!!".into()));
        assert_eq!(field, "signatures[1].sig");
        assert!(detail.contains("not base64"), "{detail}");
        let (field, detail) = reject_field(&two(|s| s["sig"] = "".into()));
        assert_eq!(field, "signatures[1].sig");
        assert!(detail.contains("0 bytes"), "{detail}");
        let (field, detail) = reject_field(&two(|s| s["sig"] = "AAAA".into()));
        assert_eq!(field, "signatures[1].sig");
        assert!(detail.contains("3 bytes"), "{detail}");
    }

    #[test]
    fn duplicate_keys_are_named() {
        let json = String::from_utf8(sample().to_json()).unwrap();
        let dup_top = json.replacen(
            "{\"payloadType\"",
            "{\"payloadType\":\"x\",\"payloadType\"",
            1,
        );
        assert_eq!(reject_field(dup_top.as_bytes()).0, "payloadType");
        let dup_sig = json.replacen("{\"keyid\"", "{\"keyid\":\"a\",\"keyid\"", 1);
        let (field, detail) = reject_field(dup_sig.as_bytes());
        assert_eq!(field, "signatures[0].keyid");
        assert!(detail.contains("duplicate"), "{detail}");
    }

    #[test]
    fn keyid_may_be_absent_or_empty_and_unknown_members_are_ignored() {
        let env = Envelope::parse(&with(|v| {
            v["signatures"][0].as_object_mut().unwrap().remove("keyid");
            v["extra"] = "ignored".into();
            v["signatures"][0]["extension"] = Value::Object(Map::new());
        }))
        .unwrap();
        assert_eq!(env.signatures[0].keyid, "");
        assert_eq!(env.signatures[0].sig, sample().signatures[0].sig);
    }

    #[test]
    fn url_safe_and_unpadded_base64_are_accepted() {
        let payload: Vec<u8> = vec![0xfb, 0xff, 0xbf, 0x3e, 0x3f];
        let mut env = Envelope::sign("t", &payload, &key());
        let sig = env.signatures[0].sig.clone();
        let url = base64::engine::general_purpose::URL_SAFE.encode(&payload);
        assert_eq!(url, "-_-_Pj8=");
        for (p, s) in [
            (
                url.clone(),
                base64::engine::general_purpose::URL_SAFE.encode(&sig),
            ),
            (
                url.trim_end_matches('=').to_owned(),
                base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&sig),
            ),
            (
                STANDARD.encode(&payload).trim_end_matches('=').to_owned(),
                base64::engine::general_purpose::STANDARD_NO_PAD.encode(&sig),
            ),
        ] {
            let doc = format!(
                r#"{{"payloadType":"t","payload":"{p}","signatures":[{{"keyid":"{}","sig":"{s}"}}]}}"#,
                env.signatures[0].keyid
            );
            assert_eq!(Envelope::parse(doc.as_bytes()).unwrap(), env, "{doc}");
        }
        env.payload.clear();
        assert!(Envelope::parse(&env.to_json()).is_ok(), "empty payload");
    }

    #[test]
    fn to_json_escapes_strings() {
        let mut env = sample();
        env.payload_type = "a\"b\\c\n\u{1}é".to_owned();
        env.signatures[0].keyid = "\u{7f}\u{2028}".to_owned();
        let json = env.to_json();
        let v: Value = serde_json::from_slice(&json).unwrap();
        assert_eq!(v["payloadType"], "a\"b\\c\n\u{1}é");
        assert_eq!(Envelope::parse(&json).unwrap(), env);
    }

    #[test]
    fn envelope_sha256_is_over_raw_bytes() {
        assert_eq!(
            envelope_sha256(b""),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
    }

    fn arb_envelope() -> impl Strategy<Value = Envelope> {
        let sig = (".*", proptest::collection::vec(any::<u8>(), 64..=64))
            .prop_map(|(keyid, sig)| EnvelopeSignature { keyid, sig });
        (
            ".+",
            proptest::collection::vec(any::<u8>(), 0..512),
            proptest::collection::vec(sig, 1..4),
        )
            .prop_map(|(payload_type, payload, signatures)| Envelope {
                payload_type,
                payload,
                signatures,
            })
    }

    proptest! {
        #[test]
        fn parse_inverts_to_json(env in arb_envelope()) {
            prop_assert_eq!(Envelope::parse(&env.to_json()).unwrap(), env);
        }

        #[test]
        fn parse_never_panics_on_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = Envelope::parse(&bytes);
        }

        #[test]
        fn parse_never_panics_on_mutated_envelopes(
            env in arb_envelope(),
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let mut json = env.to_json();
            let i = at.index(json.len());
            json[i] = byte;
            if let Err(r) = Envelope::parse(&json) {
                prop_assert_eq!(r.code, RejectionCode::MalformedEnvelope);
                prop_assert!(r.field.is_some());
            }
        }
    }
}
