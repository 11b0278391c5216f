//! Admission policy, evaluated on every verified envelope before anything is persisted.
//!
//! This is the built-in policy the writer is configured with from its environment:
//! which payload types are admitted, which in-toto predicate types, how many subjects a
//! statement may carry, and whether the producer is active. A denial is a
//! `policy_denied` rejection naming the rule; an unknown payload type is
//! `unsupported_payload_type`.

use crate::envelope::IN_TOTO_PAYLOAD_TYPE;
use crate::rejection::{Rejection, RejectionCode};
use crate::statement::Statement;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Payload types admitted. in-toto statements are parsed and indexed; any other
    /// listed type is stored opaque.
    pub allowed_payload_types: Vec<String>,
    /// Predicate type prefixes admitted for in-toto statements; empty admits every one.
    pub allowed_predicate_types: Vec<String>,
    /// Most subjects one statement may carry.
    pub max_subjects: usize,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            allowed_payload_types: vec![IN_TOTO_PAYLOAD_TYPE.to_string()],
            allowed_predicate_types: Vec::new(),
            max_subjects: 1024,
        }
    }
}

/// Whether the producer may publish at all (suspension is an operator's decision
/// recorded in the producers table).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProducerStatus {
    Active,
    Suspended,
}

impl Policy {
    /// Payload type gate, applied before the payload is parsed.
    pub fn check_payload_type(&self, payload_type: &str) -> Result<(), Rejection> {
        if self.allowed_payload_types.iter().any(|t| t == payload_type) {
            Ok(())
        } else {
            Err(Rejection::new(
                RejectionCode::UnsupportedPayloadType,
                format!(
                    "payload type {payload_type:?} is not admitted by this ledger (admitted: {})",
                    self.allowed_payload_types.join(", ")
                ),
            )
            .with_field("payloadType"))
        }
    }

    /// Rules on a verified envelope. Returns the warnings to carry with the entry.
    pub fn evaluate(
        &self,
        producer: &str,
        status: ProducerStatus,
        statement: Option<&Statement>,
    ) -> Result<Vec<String>, Rejection> {
        if status == ProducerStatus::Suspended {
            return Err(Rejection::new(
                RejectionCode::PolicyDenied,
                format!("rule producer_active: producer {producer} is suspended"),
            )
            .with_field("subject"));
        }
        if let Some(st) = statement {
            if !self.allowed_predicate_types.is_empty()
                && !self
                    .allowed_predicate_types
                    .iter()
                    .any(|p| st.predicate_type.starts_with(p.as_str()))
            {
                return Err(Rejection::new(
                    RejectionCode::PolicyDenied,
                    format!(
                        "rule allowed_predicate_types: predicate type {:?} matches none of {}",
                        st.predicate_type,
                        self.allowed_predicate_types.join(", ")
                    ),
                )
                .with_field("predicateType"));
            }
            if st.subject.len() > self.max_subjects {
                return Err(Rejection::new(
                    RejectionCode::PolicyDenied,
                    format!(
                        "rule max_subjects: statement has {} subjects, at most {} are admitted",
                        st.subject.len(),
                        self.max_subjects
                    ),
                )
                .with_field("subject"));
            }
        }
        Ok(Vec::new())
    }
}
