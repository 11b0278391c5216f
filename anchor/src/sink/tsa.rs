//! RFC 3161 sink: a TimeStampReq over SHA-256 of the signed checkpoint note, with a fresh
//! nonce, POSTed as `application/timestamp-query`; the answer is verified (status,
//! imprint, nonce, signature, certificate chain to `trust_file`) before its token becomes
//! the receipt.

use ace_core::tsa::{request, verify_response, TsaError, TsaTrust};
use base64::Engine as _;

use super::Anchoring;

#[derive(Debug, thiserror::Error)]
pub enum TsaSinkError {
    #[error("POST {url}: {source}")]
    Send { url: String, source: reqwest::Error },
    #[error("POST {url} answered {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("{url}: {source}")]
    Token { url: String, source: TsaError },
}

pub async fn send(
    http: &reqwest::Client,
    url: &reqwest::Url,
    trust: &TsaTrust,
    a: &Anchoring,
) -> Result<serde_json::Value, TsaSinkError> {
    let data = a.checkpoint.as_bytes();
    let token_err = |source| TsaSinkError::Token {
        url: url.to_string(),
        source,
    };
    let req = request(data, rand::random::<u64>()).map_err(token_err)?;
    let send_err = |source| TsaSinkError::Send {
        url: url.to_string(),
        source,
    };
    let resp = http
        .post(url.clone())
        .header("content-type", "application/timestamp-query")
        .body(req.der.clone())
        .send()
        .await
        .map_err(send_err)?;
    let status = resp.status().as_u16();
    let body = resp.bytes().await.map_err(send_err)?;
    if status != 200 {
        return Err(TsaSinkError::Status {
            url: url.to_string(),
            status,
            body: String::from_utf8_lossy(&body).chars().take(300).collect(),
        });
    }
    let token = verify_response(&body, &req, data, trust).map_err(token_err)?;
    Ok(serde_json::json!({
        "url": url.as_str(),
        "token": base64::engine::general_purpose::STANDARD.encode(&token.token_der),
        "imprint": format!("sha256:{}", hex::encode(req.imprint)),
        "nonce": token.nonce.map(|n| n.to_string()),
        "gen_time": chrono::DateTime::from_timestamp_millis(token.gen_time_ms)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true)),
        "serial": token.serial_hex,
        "policy": token.policy_oid,
        "tsa": token.signer_subject,
    }))
}
