//! The acknowledgement the writer publishes on `<prefix>.ack.<producer>` for every
//! envelope it has settled (DESIGN.md, "Acknowledgement").

use serde::{Deserialize, Serialize};

use crate::rejection::Rejection;

/// What became of an envelope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AckStatus {
    /// Appended to the log now.
    Accepted,
    /// Already in the log; `index` and `block` name the original entry.
    Duplicate,
    /// In the DLQ; `reason` says why.
    Rejected,
}

impl AckStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            AckStatus::Accepted => "accepted",
            AckStatus::Duplicate => "duplicate",
            AckStatus::Rejected => "rejected",
        }
    }
}

/// Wire shape of an acknowledgement. `digest` is absent only when the envelope was too
/// malformed to compute one; producers then match on `stream_seq` (from their publish ack).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ack {
    pub digest: Option<String>,
    pub status: AckStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u64>,
    #[serde(default)]
    pub warnings: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Rejection>,
    pub stream_seq: u64,
}

impl Ack {
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising a struct of strings, integers and a Vec<String> cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rejection::RejectionCode;

    #[test]
    fn accepted_ack_has_index_and_block_but_no_reason() {
        let ack = Ack {
            digest: Some("sha256:ab".into()),
            status: AckStatus::Accepted,
            index: Some(7),
            block: Some(2),
            warnings: vec![],
            reason: None,
            stream_seq: 9,
        };
        let v: serde_json::Value = serde_json::from_slice(&ack.to_json()).unwrap();
        assert_eq!(
            v,
            serde_json::json!({"digest":"sha256:ab","status":"accepted","index":7,"block":2,"warnings":[],"stream_seq":9})
        );
    }

    #[test]
    fn rejected_ack_carries_code_and_detail() {
        let ack = Ack {
            digest: None,
            status: AckStatus::Rejected,
            index: None,
            block: None,
            warnings: vec![],
            reason: Some(
                Rejection::new(RejectionCode::MalformedEnvelope, "not JSON").with_field("envelope"),
            ),
            stream_seq: 3,
        };
        let v: serde_json::Value = serde_json::from_slice(&ack.to_json()).unwrap();
        assert_eq!(v["reason"]["code"], "malformed_envelope");
        assert_eq!(v["reason"]["field"], "envelope");
        assert_eq!(v["digest"], serde_json::Value::Null);
        let back: Ack = serde_json::from_value(v).unwrap();
        assert_eq!(back, ack);
    }
}
