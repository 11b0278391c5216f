//! DSSE envelopes (secure-systems-lab/dsse, protocol v1) signed with ed25519.

use std::borrow::Cow;

use base64::alphabet;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig, STANDARD};
use base64::engine::DecodePaddingMode;
use base64::{DecodeError, Engine as _};
use ed25519_dalek::{Signer as _, SigningKey, SIGNATURE_LENGTH};
use serde::de::{MapAccess, SeqAccess};
use sha2::{Digest, Sha256};

use crate::canonical::{
    parse_strict_with, push_json_string, JsonKind, KeySeed, KeySet, Scan, Shape, Strict,
};
use crate::fields;
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
        // One pass keeps only the three members (strings borrowed when unescaped) and
        // parses the rest strictly without building it; the checks then run in the same
        // order as when the whole document was a `serde_json::Value` tree, so every input
        // gets the same result (the differential test in this module holds it to that).
        let members = match parse_strict_with(bytes, DocumentShape)
            .map_err(|e| fields::strict_rejection(CODE, "envelope", &e))?
        {
            Document::Object(members) => members,
            Document::Not(kind) => {
                return Err(malformed(
                    WHOLE_DOCUMENT,
                    format!("envelope must be a JSON object, found {}", kind.name()),
                ))
            }
        };

        let payload_type = required_string(members.payload_type, || "payloadType".to_owned())?;
        if payload_type.is_empty() {
            return Err(malformed("payloadType", "payloadType must not be empty"));
        }
        let payload_b64 = required_string(members.payload, || "payload".to_owned())?;
        let payload = decode_base64(&payload_b64)
            .map_err(|why| malformed("payload", format!("payload is not base64: {why}")))?;

        let slots = match members.signatures {
            None => return Err(malformed("signatures", "signatures is missing")),
            Some(Signatures::Array(slots)) if slots.is_empty() => {
                return Err(malformed(
                    "signatures",
                    "signatures is empty: at least one signature is required",
                ))
            }
            Some(Signatures::Array(slots)) => slots,
            Some(Signatures::Not(kind)) => {
                return Err(malformed(
                    "signatures",
                    format!("signatures must be an array, found {}", kind.name()),
                ))
            }
        };
        let signatures = slots
            .into_iter()
            .enumerate()
            .map(|(i, slot)| parse_signature(i, slot))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Envelope {
            payload_type: payload_type.into_owned(),
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

/// What the checks need of a member that must be a string.
enum Found<'de> {
    Str(Cow<'de, str>),
    Not(JsonKind),
}

#[derive(Default)]
struct Members<'de> {
    payload_type: Option<Found<'de>>,
    payload: Option<Found<'de>>,
    signatures: Option<Signatures<'de>>,
}

enum Document<'de> {
    Object(Members<'de>),
    Not(JsonKind),
}

enum Signatures<'de> {
    Array(Vec<Slot<'de>>),
    Not(JsonKind),
}

/// One element of `signatures`.
enum Slot<'de> {
    Object {
        keyid: Option<Found<'de>>,
        sig: Option<Found<'de>>,
    },
    Not(JsonKind),
}

struct DocumentShape;
struct FoundShape;
struct SignaturesShape;
struct SlotShape;

impl<'de> Shape<'de> for DocumentShape {
    type Out = Document<'de>;

    fn other(kind: JsonKind) -> Self::Out {
        Document::Not(kind)
    }

    fn object<A: MapAccess<'de>>(
        self,
        strict: Strict<'_>,
        mut map: A,
    ) -> Result<Self::Out, A::Error> {
        let mut members = Members::default();
        let mut unknown = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match &*key {
                "payloadType" => {
                    keep_member(
                        strict,
                        &mut map,
                        &key,
                        &mut members.payload_type,
                        FoundShape,
                    )?;
                }
                "payload" => keep_member(strict, &mut map, &key, &mut members.payload, FoundShape)?,
                "signatures" => {
                    keep_member(
                        strict,
                        &mut map,
                        &key,
                        &mut members.signatures,
                        SignaturesShape,
                    )?;
                }
                _ => strict.skip_member(&mut map, &mut unknown, key)?,
            }
        }
        Ok(Document::Object(members))
    }
}

impl<'de> Shape<'de> for FoundShape {
    type Out = Found<'de>;

    fn other(kind: JsonKind) -> Self::Out {
        Found::Not(kind)
    }

    fn string(self, s: Cow<'de, str>) -> Self::Out {
        Found::Str(s)
    }
}

impl<'de> Shape<'de> for SignaturesShape {
    type Out = Signatures<'de>;

    fn other(kind: JsonKind) -> Self::Out {
        Signatures::Not(kind)
    }

    fn array<A: SeqAccess<'de>>(
        self,
        strict: Strict<'_>,
        mut seq: A,
    ) -> Result<Self::Out, A::Error> {
        let mut slots = Vec::with_capacity(1);
        loop {
            let parsed = seq.next_element_seed(Scan::new(strict, SlotShape));
            match strict.in_element(slots.len(), parsed)? {
                Some(slot) => slots.push(slot),
                None => return Ok(Signatures::Array(slots)),
            }
        }
    }
}

impl<'de> Shape<'de> for SlotShape {
    type Out = Slot<'de>;

    fn other(kind: JsonKind) -> Self::Out {
        Slot::Not(kind)
    }

    fn object<A: MapAccess<'de>>(
        self,
        strict: Strict<'_>,
        mut map: A,
    ) -> Result<Self::Out, A::Error> {
        let (mut keyid, mut sig) = (None, None);
        let mut unknown = KeySet::default();
        while let Some(key) = map.next_key_seed(KeySeed)? {
            match &*key {
                "keyid" => keep_member(strict, &mut map, &key, &mut keyid, FoundShape)?,
                "sig" => keep_member(strict, &mut map, &key, &mut sig, FoundShape)?,
                _ => strict.skip_member(&mut map, &mut unknown, key)?,
            }
        }
        Ok(Slot::Object { keyid, sig })
    }
}

/// Parses the value of a member the checks need into `slot`; a second occurrence is a
/// duplicate key.
fn keep_member<'de, A: MapAccess<'de>, S: Shape<'de>>(
    strict: Strict<'_>,
    map: &mut A,
    key: &str,
    slot: &mut Option<S::Out>,
    shape: S,
) -> Result<(), A::Error> {
    if slot.is_some() {
        return Err(strict.duplicate(key));
    }
    let parsed = map.next_value_seed(Scan::new(strict, shape));
    *slot = Some(strict.in_member(key, parsed)?);
    Ok(())
}

fn parse_signature(i: usize, slot: Slot<'_>) -> Result<EnvelopeSignature, Rejection> {
    // Field names are formatted only on the way to an error: valid envelopes are the
    // common case.
    let (keyid, sig) = match slot {
        Slot::Object { keyid, sig } => (keyid, sig),
        Slot::Not(kind) => {
            let at = format!("signatures[{i}]");
            return Err(malformed(
                &at,
                format!("{at} must be an object, found {}", kind.name()),
            ));
        }
    };
    let keyid = match keyid {
        None => String::new(),
        Some(Found::Str(s)) => s.into_owned(),
        Some(Found::Not(kind)) => {
            let field = format!("signatures[{i}].keyid");
            return Err(malformed(
                &field,
                format!("{field} must be a string, found {}", kind.name()),
            ));
        }
    };
    let sig_field = || format!("signatures[{i}].sig");
    let sig_b64 = required_string(sig, sig_field)?;
    let sig = decode_base64(&sig_b64).map_err(|why| {
        let field = sig_field();
        malformed(&field, format!("{field} is not base64: {why}"))
    })?;
    if sig.len() != SIGNATURE_LENGTH {
        let field = sig_field();
        return Err(malformed(
            &field,
            format!(
                "{field} decodes to {} bytes; an ed25519 signature is {SIGNATURE_LENGTH}",
                sig.len()
            ),
        ));
    }
    Ok(EnvelopeSignature { keyid, sig })
}

/// A member that must be a string; `field` makes the name errors give it.
fn required_string<'de>(
    found: Option<Found<'de>>,
    field: impl FnOnce() -> String,
) -> Result<Cow<'de, str>, Rejection> {
    match found {
        Some(Found::Str(s)) => Ok(s),
        None => {
            let field = field();
            Err(malformed(&field, format!("{field} is missing")))
        }
        Some(Found::Not(kind)) => {
            let field = field();
            Err(malformed(
                &field,
                format!("{field} must be a string, found {}", kind.name()),
            ))
        }
    }
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
    // One pass over the bytes: `str::contains` with a set of chars cost more than the
    // decode itself on a typical payload. The symbols are ASCII, so a byte test finds
    // exactly what the char test found.
    let (mut standard_only, mut url_only) = (false, false);
    for b in s.bytes() {
        standard_only |= matches!(b, b'+' | b'/');
        url_only |= matches!(b, b'-' | b'_');
    }
    decode_base64_in(s, standard_only, url_only)
}

/// Decodes `s` in the alphabet its symbols name: `standard_only` and `url_only` say
/// whether it holds symbols only the standard (`+ /`) or only the URL-safe (`- _`)
/// alphabet has.
fn decode_base64_in(s: &str, standard_only: bool, url_only: bool) -> Result<Vec<u8>, String> {
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
    use crate::fields::{json_kind, required_nonempty_array};
    use proptest::prelude::*;
    use serde_json::{Map, Value};

    /// The parser as it was before the single-pass one: strict `Value` tree first, then
    /// the checks. Kept as the reference the differential tests hold `Envelope::parse` to.
    fn parse_via_value(bytes: &[u8]) -> Result<Envelope, Rejection> {
        let obj = fields::json_object(CODE, bytes, "envelope")?;

        let payload_type = fields::required_string(CODE, &obj, "payloadType", "payloadType")?;
        if payload_type.is_empty() {
            return Err(malformed("payloadType", "payloadType must not be empty"));
        }
        let payload_b64 = fields::required_string(CODE, &obj, "payload", "payload")?;
        let payload = decode_base64_via_contains(payload_b64)
            .map_err(|why| malformed("payload", format!("payload is not base64: {why}")))?;

        let sigs = required_nonempty_array(CODE, &obj, "signatures", "signature")?;
        let signatures = sigs
            .iter()
            .enumerate()
            .map(|(i, s)| signature_via_value(i, s))
            .collect::<Result<Vec<_>, _>>()?;

        Ok(Envelope {
            payload_type: payload_type.to_owned(),
            payload,
            signatures,
        })
    }

    /// `decode_base64` as it was, the reference for the byte-scan version.
    fn decode_base64_via_contains(s: &str) -> Result<Vec<u8>, String> {
        decode_base64_in(s, s.contains(['+', '/']), s.contains(['-', '_']))
    }

    fn signature_via_value(i: usize, value: &Value) -> Result<EnvelopeSignature, Rejection> {
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
        let sig_b64 = fields::required_string(CODE, obj, "sig", &sig_field)?;
        let sig = decode_base64_via_contains(sig_b64)
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

    /// Both parsers on `bytes`: the whole results, `Ok` envelope or rejection, must agree.
    fn agree(bytes: &[u8]) -> Result<(), TestCaseError> {
        prop_assert_eq!(
            Envelope::parse(bytes),
            parse_via_value(bytes),
            "input {:?}",
            String::from_utf8_lossy(bytes)
        );
        Ok(())
    }

    #[test]
    fn agrees_with_the_value_parser_on_edge_cases() {
        let good = String::from_utf8(sample().to_json()).unwrap();
        let sig = STANDARD.encode(&sample().signatures[0].sig);
        let mut docs: Vec<String> = vec![
            good.clone(),
            format!(" \n{good}\t "),
            format!("{good}x"),
            format!("{good}{good}"),
            "[{\"a\":1,\"a\":2}]".into(),
            "[[0,{\"z\":0,\"z\":0}]]".into(),
            "{\"x\":{\"y\":[1,{\"q\":{},\"q\":[]}]}}".into(),
            "{\"pay\\u006coad\":\"\",\"payload\":\"\"}".into(),
            "{\"payloadType\":1e400}".into(),
            "{\"payloadType\":-1e400}".into(),
            "{\"payloadType\":18446744073709551616}".into(),
            "{\"payloadType\":-9223372036854775809}".into(),
            "{\"payloadType\":\"\\ud800\"}".into(),
            "{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{\"sig\":\"\"},{\"sig\":3,\"sig\":4}]}".into(),
            format!("{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{{\"sig\":\"{sig}\",\"x\":{{\"k\":1,\"k\":2}}}}]}}"),
            format!("{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{{\"sig\":\"{}\"}}]}}", sig.replace('/', "\\/")),
            format!("{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{{\"sig\":\"{sig}\",\"keyid\":null}}]}}"),
            format!("{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{{\"s\\u0069g\":\"{sig}\",\"sig\":\"{sig}\"}}]}}"),
        ];
        // A wide object switches `KeySet` to its tree; the duplicate is past the switch.
        let many: Vec<String> = (0..40).map(|i| format!("\"k{i}\":{i}")).collect();
        docs.push(format!("{{{},\"k3\":0}}", many.join(",")));
        docs.push(format!("{{\"u\":{{{},\"k39\":0}}}}", many.join(",")));
        docs.push(format!("{{{}}}", many.join(",")));
        // Depth: serde_json's limit of 128 nested containers, either side of it.
        for depth in [126, 127, 128, 129, 200] {
            docs.push(format!("{}{}", "[".repeat(depth), "]".repeat(depth)));
            docs.push(format!(
                "{{\"u\":{}{}}}",
                "[".repeat(depth),
                "]".repeat(depth)
            ));
            docs.push(format!(
                "{{\"signatures\":[{{\"x\":{}{}}}]}}",
                "{\"a\":".repeat(depth),
                "}".repeat(depth)
            ));
        }
        for kind in ["null", "true", "1", "-1", "1.5", "\"s\"", "[]", "{}"] {
            docs.push(kind.into());
            docs.push(format!("{{\"payloadType\":{kind}}}"));
            docs.push(format!("{{\"payloadType\":\"t\",\"payload\":{kind}}}"));
            docs.push(format!(
                "{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":{kind}}}"
            ));
            docs.push(format!(
                "{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{kind}]}}"
            ));
            docs.push(format!(
                "{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{{\"keyid\":{kind}}}]}}"
            ));
            docs.push(format!(
                "{{\"payloadType\":\"t\",\"payload\":\"\",\"signatures\":[{{\"sig\":{kind}}}]}}"
            ));
        }
        for doc in &docs {
            agree(doc.as_bytes()).unwrap();
        }
    }

    /// A key as JSON text: the member names the parser looks for (some spelled with
    /// escapes), and a few others so that unknown members and duplicates both occur.
    fn arb_key() -> impl Strategy<Value = String> {
        prop_oneof![
            4 => prop::sample::select(vec![
                "payloadType", "payload", "signatures", "keyid", "sig",
                "pay\\u006coad", "si\\u0067", "payload\\u0054ype", "a", "b", "",
            ])
            .prop_map(|k| format!("\"{k}\"")),
            1 => "[a-z]{0,2}".prop_map(|k| format!("\"{k}\"")),
        ]
    }

    /// Base64 text in the spellings the parser meets: standard, URL-safe, unpadded, with
    /// `\/` escapes, and a few broken ones.
    fn arb_base64(len: std::ops::Range<usize>) -> impl Strategy<Value = String> {
        (proptest::collection::vec(any::<u8>(), len), 0..10u8).prop_map(|(bytes, how)| {
            use base64::engine::general_purpose::{STANDARD_NO_PAD, URL_SAFE, URL_SAFE_NO_PAD};
            match how {
                0..=2 => STANDARD.encode(&bytes),
                3 => URL_SAFE.encode(&bytes),
                4 => URL_SAFE_NO_PAD.encode(&bytes),
                5 => STANDARD_NO_PAD.encode(&bytes),
                6 | 7 => STANDARD.encode(&bytes).replace('/', "\\/"),
                8 => format!("{}=", STANDARD.encode(&bytes)),
                _ => STANDARD.encode(&bytes).replacen('A', "-", 1),
            }
        })
    }

    fn arb_scalar() -> impl Strategy<Value = String> {
        prop_oneof![
            prop::sample::select(vec![
                "null",
                "true",
                "false",
                "0",
                "-0",
                "1.5e3",
                "1e400",
                "-1e400",
                "18446744073709551616",
                "-9223372036854775809",
                "\"\"",
                "\"t\"",
                "\"a\\u0000\\n\"",
                "\"\\ud83d\\ude00\"",
                "\"\\ud800\"",
                "\"AAAA\"",
            ])
            .prop_map(str::to_owned),
            any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()),
            arb_base64(0..8).prop_map(|b| format!("\"{b}\"")),
        ]
    }

    /// Any JSON text whose objects draw their keys from [`arb_key`], so duplicates occur
    /// at every depth.
    fn arb_json() -> impl Strategy<Value = String> {
        arb_scalar().prop_recursive(4, 32, 4, |inner| {
            prop_oneof![
                proptest::collection::vec(inner.clone(), 0..4)
                    .prop_map(|v| format!("[{}]", v.join(","))),
                proptest::collection::vec((arb_key(), inner), 0..4).prop_map(|kv| {
                    let members: Vec<String> =
                        kv.into_iter().map(|(k, v)| format!("{k}:{v}")).collect();
                    format!("{{{}}}", members.join(","))
                }),
            ]
        })
    }

    fn object(members: Vec<(String, String)>) -> String {
        let members: Vec<String> = members
            .into_iter()
            .map(|(k, v)| format!("{k}:{v}"))
            .collect();
        format!("{{{}}}", members.join(","))
    }

    /// A member list from `required` (each present or not), plus extra members with any
    /// key (so known ones may repeat), in any order.
    fn members(
        required: Vec<BoxedStrategy<(String, String)>>,
        extra: BoxedStrategy<(String, String)>,
    ) -> impl Strategy<Value = Vec<(String, String)>> {
        let required: Vec<_> = required
            .into_iter()
            .map(|s| prop::option::weighted(0.9, s))
            .collect();
        let extra = prop_oneof![
            2 => Just(Vec::new()),
            1 => proptest::collection::vec(extra, 1..3),
        ];
        (required, extra)
            .prop_map(|(required, extra)| {
                let mut all: Vec<_> = required.into_iter().flatten().collect();
                all.extend(extra);
                all
            })
            .prop_shuffle()
    }

    fn member(
        key: &'static str,
        value: impl Strategy<Value = String> + 'static,
    ) -> BoxedStrategy<(String, String)> {
        value.prop_map(move |v| (format!("\"{key}\""), v)).boxed()
    }

    fn either(good: impl Strategy<Value = String> + 'static) -> BoxedStrategy<String> {
        prop_oneof![8 => good, 1 => arb_json()].boxed()
    }

    /// Objects shaped like envelopes: the real members, mostly of the right type, with
    /// wrong types, duplicates, escapes and unknown members mixed in.
    fn arb_envelope_like() -> impl Strategy<Value = String> {
        let extra = (arb_key(), arb_json()).boxed();
        let keyid = either(any::<String>().prop_map(|s| serde_json::to_string(&s).unwrap()));
        let sig = either(
            prop_oneof![8 => arb_base64(64..65), 1 => arb_base64(60..68)]
                .prop_map(|b| format!("\"{b}\"")),
        );
        let slot = members(
            vec![member("keyid", keyid), member("sig", sig)],
            extra.clone(),
        )
        .prop_map(object);
        let signatures = either(
            proptest::collection::vec(prop_oneof![6 => slot, 1 => arb_json()], 1..3)
                .prop_map(|v| format!("[{}]", v.join(","))),
        );
        let payload_type = either(prop_oneof![
            4 => Just(format!("\"{IN_TOTO_PAYLOAD_TYPE}\"")),
            1 => Just("\"\"".to_owned()),
            1 => Just("\"\\u0074\\/\"".to_owned()),
        ]);
        let payload = either(arb_base64(0..48).prop_map(|b| format!("\"{b}\"")));
        (
            members(
                vec![
                    member("payloadType", payload_type),
                    member("payload", payload),
                    member("signatures", signatures),
                ],
                extra,
            )
            .prop_map(object),
            prop_oneof![
                8 => Just(""),
                1 => prop::sample::select(vec![" ", "\n", " x", "{}", ","]),
            ],
        )
            .prop_map(|(doc, tail)| format!("{doc}{tail}"))
    }

    #[derive(Debug, Clone)]
    enum Edit {
        Set(prop::sample::Index, u8),
        Insert(prop::sample::Index, u8),
        Delete(prop::sample::Index),
    }

    fn arb_edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Set(i, b)),
            (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| Edit::Insert(i, b)),
            any::<prop::sample::Index>().prop_map(Edit::Delete),
        ]
    }

    fn apply(json: &mut Vec<u8>, edit: &Edit) {
        match *edit {
            Edit::Set(i, b) if !json.is_empty() => {
                let i = i.index(json.len());
                json[i] = b;
            }
            Edit::Insert(i, b) => json.insert(i.index(json.len() + 1), b),
            Edit::Delete(i) if !json.is_empty() => {
                json.remove(i.index(json.len()));
            }
            _ => {}
        }
    }

    proptest! {
        #[test]
        fn decode_base64_agrees_with_the_char_scan(
            s in prop_oneof![
                any::<String>(),
                "[A-Za-z0-9+/=_ -]{0,12}",
                arb_base64(0..16),
            ],
        ) {
            prop_assert_eq!(decode_base64(&s), decode_base64_via_contains(&s));
        }

        #[test]
        fn agrees_with_the_value_parser_on_bytes(
            bytes in proptest::collection::vec(any::<u8>(), 0..256),
        ) {
            agree(&bytes)?;
        }

        #[test]
        fn agrees_with_the_value_parser_on_json_like_bytes(
            bytes in proptest::collection::vec(
                prop::sample::select(b"{}[]:,\" \\/u0123456789aefnlrstdyApgkiE.+-=".to_vec()),
                0..128,
            ),
        ) {
            agree(&bytes)?;
        }

        #[test]
        fn agrees_with_the_value_parser_on_edited_envelopes(
            env in arb_envelope(),
            edits in proptest::collection::vec(arb_edit(), 1..4),
        ) {
            let mut json = env.to_json();
            for edit in &edits {
                apply(&mut json, edit);
            }
            agree(&json)?;
        }

        #[test]
        fn agrees_with_the_value_parser_on_envelope_like_objects(doc in arb_envelope_like()) {
            agree(doc.as_bytes())?;
        }

        #[test]
        fn agrees_with_the_value_parser_on_edited_envelope_like_objects(
            doc in arb_envelope_like(),
            edits in proptest::collection::vec(arb_edit(), 1..3),
        ) {
            let mut bytes = doc.into_bytes();
            for edit in &edits {
                apply(&mut bytes, edit);
            }
            agree(&bytes)?;
        }
    }
}
