//! Webhook sink: `POST <url>` with the checkpoint as JSON, authenticated by HMAC-SHA256.
//!
//! Headers: `Ace-Timestamp: <unix seconds>` and
//! `Ace-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>." || body)>`. The timestamp
//! is inside the MAC so a receiver can refuse replays of old deliveries (docs/anchor.md).
//! Any 2xx answer is the receipt.

use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;

use super::Anchoring;

/// Bytes of a receiver's answer kept in the receipt.
const KEPT_RESPONSE_BYTES: usize = 2048;

#[derive(Debug, thiserror::Error)]
pub enum WebhookError {
    #[error("POST {url}: {source}")]
    Send { url: String, source: reqwest::Error },
    #[error("POST {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("Ace-Signature {0:?} is not sha256=<64 hex digits>")]
    MalformedSignature(String),
    #[error("Ace-Signature does not match the body and timestamp for this secret")]
    BadSignature,
}

/// The JSON body. Field order is fixed by the struct, so a body is reproducible.
#[derive(Debug, Serialize)]
pub struct Body<'a> {
    pub origin: &'a str,
    pub height: u64,
    pub tree_size: u64,
    /// Lowercase hex.
    pub root_hash: String,
    pub sealed_at: i64,
    /// The signed checkpoint note.
    pub checkpoint: &'a str,
}

pub fn body(a: &Anchoring) -> Vec<u8> {
    let b = Body {
        origin: &a.origin,
        height: a.height,
        tree_size: a.tree_size,
        root_hash: hex::encode(a.root_hash),
        sealed_at: a.sealed_at_ms,
        checkpoint: &a.checkpoint,
    };
    // Serialising a struct of strings and integers cannot fail.
    serde_json::to_vec(&b).unwrap_or_default()
}

fn mac(secret: &[u8], timestamp: i64, body: &[u8]) -> Hmac<Sha256> {
    // HMAC takes keys of any length.
    let mut m = Hmac::<Sha256>::new_from_slice(secret).expect("HMAC accepts any key length");
    m.update(timestamp.to_string().as_bytes());
    m.update(b".");
    m.update(body);
    m
}

/// The `Ace-Signature` header value for a delivery.
pub fn signature(secret: &[u8], timestamp: i64, body: &[u8]) -> String {
    format!(
        "sha256={}",
        hex::encode(mac(secret, timestamp, body).finalize().into_bytes())
    )
}

/// What a receiver runs: the header matches the body and timestamp under `secret`
/// (compared in constant time). Checking the timestamp's age is the receiver's policy.
pub fn verify_signature(
    secret: &[u8],
    timestamp: i64,
    body: &[u8],
    header: &str,
) -> Result<(), WebhookError> {
    let tag = header
        .strip_prefix("sha256=")
        .filter(|h| h.len() == 64)
        .and_then(|h| hex::decode(h).ok())
        .ok_or_else(|| WebhookError::MalformedSignature(header.chars().take(80).collect()))?;
    mac(secret, timestamp, body)
        .verify_slice(&tag)
        .map_err(|_| WebhookError::BadSignature)
}

/// Deliver one checkpoint; the receipt on a 2xx answer.
pub async fn send(
    http: &reqwest::Client,
    url: &reqwest::Url,
    secret: &[u8],
    a: &Anchoring,
) -> Result<serde_json::Value, WebhookError> {
    let body = body(a);
    let timestamp = chrono::Utc::now().timestamp();
    let sig = signature(secret, timestamp, &body);
    let send_err = |source| WebhookError::Send {
        url: url.to_string(),
        source,
    };
    let resp = http
        .post(url.clone())
        .header("content-type", "application/json")
        .header("ace-timestamp", timestamp.to_string())
        .header("ace-signature", &sig)
        .body(body)
        .send()
        .await
        .map_err(send_err)?;
    let status = resp.status().as_u16();
    let text = resp.text().await.map_err(send_err)?;
    let kept: String = text.chars().take(KEPT_RESPONSE_BYTES).collect();
    if !(200..300).contains(&status) {
        return Err(WebhookError::Status {
            url: url.to_string(),
            status,
            body: kept.chars().take(300).collect(),
        });
    }
    Ok(serde_json::json!({
        "url": url.as_str(),
        "status": status,
        "timestamp": timestamp,
        "signature": sig,
        "response": kept,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_bind_secret_timestamp_and_body() {
        let sig = signature(b"k", 1700000000, b"{}");
        // HMAC-SHA256("k", "1700000000.{}"), computed independently with openssl:
        // printf '1700000000.{}' | openssl dgst -sha256 -hmac k
        assert_eq!(
            sig,
            "sha256=c6ef4734033cee2367414a0939385eca0397754aa7a59716da7463a9298b5146"
        );
        verify_signature(b"k", 1700000000, b"{}", &sig).unwrap();
        assert!(matches!(
            verify_signature(b"other", 1700000000, b"{}", &sig),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify_signature(b"k", 1700000001, b"{}", &sig),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify_signature(b"k", 1700000000, b"{ }", &sig),
            Err(WebhookError::BadSignature)
        ));
        assert!(matches!(
            verify_signature(b"k", 1, b"{}", "md5=00"),
            Err(WebhookError::MalformedSignature(_))
        ));
    }
}
