//! `acectl publish`: sign (or take) an envelope, publish it on the producer's intake
//! subject with `Nats-Msg-Id` and `Ace-Published-At`, and wait for the ledger's ack.

use std::path::PathBuf;
use std::time::Duration;

use ace_core::ack::{Ack, AckStatus};
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::ProducerId;
use ace_core::nats::Names;
use anyhow::{bail, Context, Result};
use clap::Args;
use futures::StreamExt;

use crate::NatsArgs;

#[derive(Args)]
pub struct PublishArgs {
    /// The publishing producer (its intake subject).
    #[arg(long)]
    pub producer: String,
    /// Sign this statement with --key…
    #[arg(long, requires = "key", conflicts_with = "envelope")]
    pub statement: Option<PathBuf>,
    #[arg(long)]
    pub key: Option<PathBuf>,
    #[arg(long, default_value = IN_TOTO_PAYLOAD_TYPE)]
    pub payload_type: String,
    /// …or publish this envelope file as it is.
    #[arg(long)]
    pub envelope: Option<PathBuf>,
    /// Seconds to wait for the ack.
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    /// A reader's base URL: when JetStream drops the message as a duplicate inside its
    /// window, ask the reader what became of the original (its index, or its rejection).
    #[arg(long, env = "ACE_READER_URL")]
    pub reader: Option<String>,
    /// PEM CA certificate(s) to trust for an https reader, instead of the public roots.
    #[arg(long, env = "ACE_READER_CA_FILE")]
    pub reader_ca_file: Option<PathBuf>,
    #[command(flatten)]
    pub nats: NatsArgs,
}

pub async fn run(a: PublishArgs) -> Result<i32> {
    let producer =
        ProducerId::parse(&a.producer).with_context(|| format!("--producer {:?}", a.producer))?;
    let names = Names::new(&a.nats.prefix)?;
    let raw: Vec<u8> = match (&a.envelope, &a.statement, &a.key) {
        (Some(path), _, _) => {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))?
        }
        (None, Some(st), Some(key)) => {
            let key = crate::keyfile::read_signing_key(key)?;
            let payload = std::fs::read(st).with_context(|| format!("reading {}", st.display()))?;
            Envelope::sign(&a.payload_type, &payload, &key).to_json()
        }
        _ => bail!("give --statement FILE --key FILE, or --envelope FILE"),
    };
    // For the duplicate report: `send` derives the same digest as its Nats-Msg-Id.
    let digest = Envelope::parse(&raw)
        .ok()
        .map(|e| e.digest().as_str().to_string());

    let client = crate::connect_nats(&a.nats).await?;
    let sent = send(
        &client,
        &names,
        producer.as_str(),
        raw,
        true,
        Duration::from_secs(a.timeout_secs),
    )
    .await?;
    match sent {
        Sent::JetStreamDuplicate { stream_seq } => {
            // JetStream dropped it inside its duplicate window (same Nats-Msg-Id): the
            // original message (stream_seq below) carries the ledger's verdict.
            let mut out = serde_json::json!({
                "digest": digest,
                "status": "duplicate",
                "stream_seq": stream_seq,
                "detail": "deduplicated by JetStream within its duplicate window; the original message with this stream_seq carries the ledger's ack",
            });
            if let (Some(url), Some(d)) = (&a.reader, &digest) {
                let reader = crate::http::Reader::with_ca(url, a.reader_ca_file.as_deref())?;
                let original =
                    original_outcome(&reader, d, Duration::from_secs(a.timeout_secs)).await?;
                if let Some(index) = original.get("index") {
                    out["index"] = index.clone();
                }
                out["original"] = original;
            }
            say!("{out}");
            Ok(0)
        }
        Sent::Acked(ack) => {
            say!("{}", String::from_utf8_lossy(&ack.to_json()));
            Ok(if ack.status == AckStatus::Rejected {
                3
            } else {
                0
            })
        }
        Sent::NoAck {
            ack_subject,
            stream_seq,
        } => {
            eprintln!(
                "acectl: no ack on {ack_subject} for stream_seq {stream_seq} within {}s (is the writer running?)",
                a.timeout_secs
            );
            Ok(4)
        }
    }
}

/// What became of one published envelope.
pub enum Sent {
    /// The ledger's ack.
    Acked(Ack),
    /// JetStream dropped it as a duplicate of a message inside its window.
    JetStreamDuplicate { stream_seq: u64 },
    /// Stored by JetStream, but no ack came in time.
    NoAck {
        ack_subject: String,
        stream_seq: u64,
    },
}

/// Publishes `raw` on the producer's intake subject (with `Ace-Published-At`, and, when
/// `msg_id`, `Nats-Msg-Id` = its digest if it parses) and waits up to `timeout` for the
/// ledger's ack. Without `msg_id` a republished envelope reaches the writer, which
/// answers `duplicate` with the original's index, instead of being dropped by JetStream.
pub async fn send(
    client: &async_nats::Client,
    names: &Names,
    producer: &str,
    raw: Vec<u8>,
    msg_id: bool,
    timeout: Duration,
) -> Result<Sent> {
    // The digest is the dedupe key; a malformed envelope is still published so that the
    // ledger's verdict (and DLQ row) is the one the producer sees.
    let digest = Envelope::parse(&raw)
        .ok()
        .map(|e| e.digest().as_str().to_string());
    let ack_subject = names.ack_subject(producer);
    let mut acks = client
        .subscribe(ack_subject.clone())
        .await
        .with_context(|| format!("subscribing to {ack_subject}"))?;
    let js = async_nats::jetstream::new(client.clone());
    let mut headers = async_nats::HeaderMap::new();
    if let (true, Some(d)) = (msg_id, &digest) {
        headers.insert("Nats-Msg-Id", d.as_str());
    }
    headers.insert(
        "Ace-Published-At",
        chrono::Utc::now()
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
            .as_str(),
    );
    let subject = names.intake_subject(producer);
    let puback = js
        .publish_with_headers(subject.clone(), headers, raw.into())
        .await
        .with_context(|| format!("publishing to {subject}"))?
        .await
        .with_context(|| format!("JetStream did not store the message on {subject}"))?;
    if puback.duplicate {
        return Ok(Sent::JetStreamDuplicate {
            stream_seq: puback.sequence,
        });
    }
    let wait = async {
        while let Some(m) = acks.next().await {
            let Ok(ack) = serde_json::from_slice::<Ack>(&m.payload) else {
                continue;
            };
            if ack.stream_seq == puback.sequence {
                return Some(ack);
            }
        }
        None
    };
    Ok(match tokio::time::timeout(timeout, wait).await {
        Ok(Some(ack)) => Sent::Acked(ack),
        _ => Sent::NoAck {
            ack_subject,
            stream_seq: puback.sequence,
        },
    })
}

/// What the reader says of `digest`, waiting (up to `timeout`) while it is still unknown:
/// the original message may not have been sequenced yet.
async fn original_outcome(
    reader: &crate::http::Reader,
    digest: &str,
    timeout: Duration,
) -> Result<serde_json::Value> {
    let path = format!("/v1/envelopes/{digest}");
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let a = reader.get(&path).await?;
        let v: serde_json::Value = serde_json::from_slice(&a.body)
            .with_context(|| format!("GET {}: the answer is not JSON", reader.url(&path)))?;
        match v.get("status").and_then(|s| s.as_str()) {
            Some("accepted" | "rejected") => return Ok(v),
            Some("unknown") if tokio::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Some("unknown") => return Ok(v),
            _ => bail!(
                "GET {}: HTTP {}: {}",
                reader.url(&path),
                a.status,
                String::from_utf8_lossy(&a.body)
            ),
        }
    }
}
