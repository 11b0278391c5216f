//! Why an envelope was refused: the DLQ `reason` and the `rejected` acknowledgement.
//!
//! The codes are a wire contract (DESIGN.md "Rejection codes"): producers and dashboards
//! match on the strings, so they never change and no code is added without the contract.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// The reason class of a rejected envelope, written as its snake_case wire string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectionCode {
    /// The bytes are not a DSSE envelope (JSON, fields, base64).
    MalformedEnvelope,
    /// The message exceeds the configured size limit.
    TooLarge,
    /// `payloadType` is not one the ledger accepts.
    UnsupportedPayloadType,
    /// The payload is not a valid in-toto Statement v1.
    MalformedStatement,
    /// The subject names a producer the ledger does not know.
    UnknownProducer,
    /// No signature names a key the ledger knows.
    UnknownKey,
    /// The only known signing keys belong to another producer.
    WrongProducerKey,
    /// The producer's signing key was revoked at or before integration time.
    KeyRevoked,
    /// The producer's signing key is outside its validity window.
    KeyExpired,
    /// A signature by a known key does not verify.
    BadSignature,
    /// The envelope is well-formed and signed, but policy refuses it.
    PolicyDenied,
}

impl RejectionCode {
    /// Every code, in the order DESIGN.md lists them.
    pub const ALL: [RejectionCode; 11] = [
        RejectionCode::MalformedEnvelope,
        RejectionCode::TooLarge,
        RejectionCode::UnsupportedPayloadType,
        RejectionCode::MalformedStatement,
        RejectionCode::UnknownProducer,
        RejectionCode::UnknownKey,
        RejectionCode::WrongProducerKey,
        RejectionCode::KeyRevoked,
        RejectionCode::KeyExpired,
        RejectionCode::BadSignature,
        RejectionCode::PolicyDenied,
    ];

    /// The wire string (`reason.code`).
    pub fn as_str(&self) -> &'static str {
        match self {
            RejectionCode::MalformedEnvelope => "malformed_envelope",
            RejectionCode::TooLarge => "too_large",
            RejectionCode::UnsupportedPayloadType => "unsupported_payload_type",
            RejectionCode::MalformedStatement => "malformed_statement",
            RejectionCode::UnknownProducer => "unknown_producer",
            RejectionCode::UnknownKey => "unknown_key",
            RejectionCode::WrongProducerKey => "wrong_producer_key",
            RejectionCode::KeyRevoked => "key_revoked",
            RejectionCode::KeyExpired => "key_expired",
            RejectionCode::BadSignature => "bad_signature",
            RejectionCode::PolicyDenied => "policy_denied",
        }
    }
}

impl fmt::Display for RejectionCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A string that is not one of the eleven rejection codes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown rejection code {0:?}: expected one of the DESIGN.md codes (e.g. \"malformed_envelope\")")]
pub struct UnknownRejectionCode(pub String);

impl FromStr for RejectionCode {
    type Err = UnknownRejectionCode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectionCode::ALL
            .into_iter()
            .find(|code| code.as_str() == s)
            .ok_or_else(|| UnknownRejectionCode(s.to_owned()))
    }
}

/// A refused envelope: the code, a human-readable detail, and the offending field when one
/// can be named (`payloadType`, `signatures[2].sig`, `subject[0].digest.sha256`, …).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[error("{code}: {detail}")]
pub struct Rejection {
    pub code: RejectionCode,
    pub detail: String,
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub field: Option<String>,
}

impl Rejection {
    pub fn new(code: RejectionCode, detail: impl Into<String>) -> Self {
        Rejection {
            code,
            detail: detail.into(),
            field: None,
        }
    }

    #[must_use]
    pub fn with_field(self, field: impl Into<String>) -> Self {
        Rejection {
            field: Some(field.into()),
            ..self
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The eleven strings of DESIGN.md "Rejection codes", in its order.
    const DESIGN_CODES: [&str; 11] = [
        "malformed_envelope",
        "too_large",
        "unsupported_payload_type",
        "malformed_statement",
        "unknown_producer",
        "unknown_key",
        "wrong_producer_key",
        "key_revoked",
        "key_expired",
        "bad_signature",
        "policy_denied",
    ];

    #[test]
    fn wire_list_is_pinned_to_design() {
        let got: Vec<&str> = RejectionCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(got, DESIGN_CODES);
    }

    #[test]
    fn as_str_display_serde_and_from_str_agree() {
        for code in RejectionCode::ALL {
            assert_eq!(code.to_string(), code.as_str());
            let json = serde_json::to_string(&code).unwrap();
            assert_eq!(json, format!("\"{}\"", code.as_str()));
            assert_eq!(serde_json::from_str::<RejectionCode>(&json).unwrap(), code);
            assert_eq!(code.as_str().parse::<RejectionCode>().unwrap(), code);
        }
        let err = "Malformed_Envelope".parse::<RejectionCode>().unwrap_err();
        assert!(err.to_string().contains("Malformed_Envelope"));
    }

    #[test]
    fn rejection_wire_shape() {
        let r = Rejection::new(RejectionCode::BadSignature, "signature 0 does not verify");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"code":"bad_signature","detail":"signature 0 does not verify"}"#
        );
        let r = r.with_field("signatures[0].sig");
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"code":"bad_signature","detail":"signature 0 does not verify","field":"signatures[0].sig"}"#
        );
        assert_eq!(r.to_string(), "bad_signature: signature 0 does not verify");
        let back: Rejection = serde_json::from_str(r#"{"code":"too_large","detail":"x"}"#).unwrap();
        assert_eq!(back, Rejection::new(RejectionCode::TooLarge, "x"));
    }
}
