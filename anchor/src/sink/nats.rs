//! NATS sink: the signed checkpoint note on `<prefix>.checkpoint` (stream
//! `<PREFIX>_CHECKPOINTS`, made by `acectl nats init`), for mirrors and monitors. The
//! receipt is JetStream's acknowledgement: the message is stored.

use async_nats::jetstream;
use async_nats::HeaderMap;

use super::Anchoring;

#[derive(Debug, thiserror::Error)]
pub enum NatsSinkError {
    #[error("publishing to {subject}: {message}")]
    Publish { subject: String, message: String },
    #[error("JetStream did not store the checkpoint on {subject}: {message} (has `acectl nats init` made the checkpoints stream?)")]
    Ack { subject: String, message: String },
}

/// Publish and wait for JetStream to store it. The message id is `<origin>/<tree size>`,
/// so a retry after a lost acknowledgement is stored once.
pub async fn send(
    js: &jetstream::Context,
    subject: &str,
    a: &Anchoring,
) -> Result<serde_json::Value, NatsSinkError> {
    let mut headers = HeaderMap::new();
    headers.insert(
        "Nats-Msg-Id",
        format!("{}/{}", a.origin, a.tree_size).as_str(),
    );
    headers.insert("Ace-Height", a.height.to_string().as_str());
    headers.insert("Ace-Tree-Size", a.tree_size.to_string().as_str());
    let ack = js
        .publish_with_headers(
            subject.to_string(),
            headers,
            a.checkpoint.clone().into_bytes().into(),
        )
        .await
        .map_err(|e| NatsSinkError::Publish {
            subject: subject.to_string(),
            message: e.to_string(),
        })?
        .await
        .map_err(|e| NatsSinkError::Ack {
            subject: subject.to_string(),
            message: e.to_string(),
        })?;
    Ok(serde_json::json!({
        "subject": subject,
        "stream": ack.stream,
        "seq": ack.sequence,
        "duplicate": ack.duplicate,
    }))
}
