//! `acectl audit`'s check of the anchor receipts: each is for a stored block and its tree
//! size, and what can be checked cryptographically is: witness cosignatures against the
//! witness keys the auditor trusts (`--witness-key`), RFC 3161 tokens against the TSA
//! certificates it trusts (`--tsa-cert`). A receipt that could not be checked for want of
//! a key or certificate is counted, not trusted.

use std::collections::BTreeMap;

use ace_core::db::DbError;
use ace_core::tsa::{verify_token, TsaTrust};
use ace_core::witness::{note_body, CosignatureVerifier};
use base64::Engine as _;
use tokio_postgres::Client;

use crate::audit::{Location, Mismatch};

/// What the receipts check saw.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReceiptSummary {
    pub receipts: u64,
    /// Witness cosignatures verified with a given key.
    pub cosignatures: u64,
    /// Receipts by kind.
    pub by_kind: BTreeMap<String, u64>,
    /// Witnesses whose receipts could not be checked (no `--witness-key` for them).
    pub unchecked_witnesses: BTreeMap<String, u64>,
    /// RFC 3161 tokens verified against `--tsa-cert`.
    pub tokens: u64,
    /// RFC 3161 receipts not checked (no `--tsa-cert`).
    pub unchecked_tokens: u64,
}

fn mismatch(
    id: i64,
    sink: &str,
    height: i64,
    what: impl Into<String>,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Box<Mismatch> {
    Box::new(Mismatch {
        location: Location::Receipt {
            id,
            sink: sink.to_string(),
            height: height.max(0) as u64,
        },
        what: what.into(),
        expected: expected.into(),
        found: found.into(),
    })
}

/// Checks every receipt, in id order, against the block it names (inside the audit's
/// snapshot). The first problem is returned as a mismatch.
pub async fn check(
    c: &Client,
    witnesses: &[CosignatureVerifier],
    tsa: Option<&TsaTrust>,
) -> Result<Result<ReceiptSummary, Box<Mismatch>>, DbError> {
    let rows = c
        .query(
            "SELECT r.id, r.sink, r.kind, r.height, r.tree_size, r.receipt, b.tree_size, b.checkpoint \
             FROM anchor_receipts r JOIN ledger_blocks b ON b.height = r.height ORDER BY r.id",
            &[],
        )
        .await
        .map_err(DbError::query("reading anchor receipts"))?;
    let mut s = ReceiptSummary::default();
    for r in rows {
        let (id, sink, kind, height): (i64, String, String, i64) =
            (r.get(0), r.get(1), r.get(2), r.get(3));
        let (size, receipt, block_size, checkpoint): (i64, serde_json::Value, i64, String) =
            (r.get(4), r.get(5), r.get(6), r.get(7));
        s.receipts += 1;
        *s.by_kind.entry(kind.clone()).or_default() += 1;
        if size != block_size {
            return Ok(Err(mismatch(
                id,
                &sink,
                height,
                "the receipt's tree size is not its block's",
                format!("{block_size} (ledger_blocks.tree_size)"),
                format!("{size} (anchor_receipts.tree_size)"),
            )));
        }
        if kind == "rfc3161" {
            let Some(trust) = tsa else {
                s.unchecked_tokens += 1;
                continue;
            };
            let token = receipt
                .get("token")
                .and_then(|t| t.as_str())
                .and_then(|t| base64::engine::general_purpose::STANDARD.decode(t).ok());
            let Some(token) = token else {
                return Ok(Err(mismatch(
                    id,
                    &sink,
                    height,
                    "the receipt holds no token",
                    "\"token\": base64 of a DER TimeStampToken",
                    receipt.to_string().chars().take(120).collect::<String>(),
                )));
            };
            if let Err(e) = verify_token(&token, checkpoint.as_bytes(), None, trust) {
                return Ok(Err(mismatch(
                    id,
                    &sink,
                    height,
                    "the time-stamp token does not verify over the block's checkpoint",
                    "a token over SHA-256 of the checkpoint note, signed by a TSA certificate given with --tsa-cert",
                    e.to_string(),
                )));
            }
            s.tokens += 1;
            continue;
        }
        if kind != "witness" {
            continue;
        }
        let vkey = receipt.get("vkey").and_then(|v| v.as_str()).unwrap_or("");
        let Some(key) = witnesses.iter().find(|w| w.to_vkey() == vkey) else {
            let name = receipt
                .get("witness")
                .and_then(|v| v.as_str())
                .unwrap_or("(unnamed)")
                .to_string();
            *s.unchecked_witnesses.entry(name).or_default() += 1;
            continue;
        };
        let Some(body) = note_body(&checkpoint) else {
            return Ok(Err(mismatch(
                id,
                &sink,
                height,
                "the block's checkpoint has no note body",
                "a signed note",
                checkpoint.chars().take(80).collect::<String>(),
            )));
        };
        let lines: Vec<&str> = receipt
            .get("cosignatures")
            .and_then(|v| v.as_array())
            .map(|a| a.iter().filter_map(|l| l.as_str()).collect())
            .unwrap_or_default();
        let mut verified = 0;
        for line in &lines {
            match key.verify_line(line, body) {
                Ok(Some(_)) => verified += 1,
                Ok(None) => {}
                Err(e) => {
                    return Ok(Err(mismatch(
                        id,
                        &sink,
                        height,
                        "a cosignature does not verify over the block's checkpoint",
                        format!(
                            "a cosignature by {} over tree size {block_size}",
                            key.name()
                        ),
                        e.to_string(),
                    )))
                }
            }
        }
        if verified == 0 {
            return Ok(Err(mismatch(
                id,
                &sink,
                height,
                "the witness receipt holds no cosignature by its witness's key",
                format!("a line by {} (key hash {:08x})", key.name(), key.key_hash()),
                format!("{} line(s) by other keys", lines.len()),
            )));
        }
        s.cosignatures += verified;
    }
    Ok(Ok(s))
}
