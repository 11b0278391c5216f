//! The producers page (each producer, its keys, when it was last seen, its intake and
//! rejection reasons) and the anchors page (each sink's receipts, lag and failures).

use std::collections::BTreeMap;

use ace_core::db::DbError;
use chrono::{DateTime, TimeZone, Utc};

use crate::db::Db;
use crate::error::DashError;
use crate::figures::{self, WriterFigures};
use crate::scrape::Scrape;

pub struct KeyView {
    pub keyid: String,
    pub valid_from: String,
    pub valid_until: String,
    pub revoked: String,
    /// "valid", "not yet valid", "expired" or "revoked".
    pub state: &'static str,
}

pub struct ProducerView {
    pub producer: String,
    pub status: String,
    pub created_at: String,
    pub last_entry: String,
    pub last_rejection: String,
    pub keys: Vec<KeyView>,
    pub accepted: String,
    pub duplicate: String,
    pub rejected: String,
    /// Entries appended and envelopes rejected in the last hour, and the busiest minute.
    pub hour_accepted: i64,
    pub hour_rejected: i64,
    pub peak_per_minute: i64,
    /// Rejections of the last 24 hours by code, most frequent first.
    pub reasons: Vec<(String, i64)>,
}

fn t(v: Option<DateTime<Utc>>) -> String {
    v.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "–".into())
}

pub async fn list(
    db: &Db,
    w: &WriterFigures,
    hour: &figures::Intake,
) -> Result<Vec<ProducerView>, DashError> {
    let c = db.client().await?;
    let rows = c
        .query(
            "SELECT p.producer, p.status, p.created_at, le.integrated_time, ld.received_at \
             FROM producers p \
             LEFT JOIN LATERAL (SELECT integrated_time FROM ledger_entries e WHERE e.producer = p.producer ORDER BY idx DESC LIMIT 1) le ON true \
             LEFT JOIN LATERAL (SELECT received_at FROM dlq_items d WHERE d.producer = p.producer ORDER BY id DESC LIMIT 1) ld ON true \
             WHERE p.producer <> '_ledger' \
             ORDER BY p.producer LIMIT 10000",
            &[],
        )
        .await
        .map_err(DbError::query("listing producers"))?;
    let keys = c
        .query(
            "SELECT producer, keyid, valid_from, valid_until, revoked_at, revoke_reason, now() FROM producer_keys \
             ORDER BY producer, valid_from",
            &[],
        )
        .await
        .map_err(DbError::query("listing producer keys"))?;
    let reasons = c
        .query(
            "SELECT producer, code, count(*) FROM dlq_items WHERE received_at >= now() - interval '24 hours' \
             GROUP BY 1, 2 ORDER BY 3 DESC",
            &[],
        )
        .await
        .map_err(DbError::query("counting rejections by reason"))?;
    let mut by_producer: BTreeMap<String, Vec<KeyView>> = BTreeMap::new();
    for k in keys {
        let now: DateTime<Utc> = k.get(6);
        let from: DateTime<Utc> = k.get(2);
        let until: Option<DateTime<Utc>> = k.get(3);
        let revoked: Option<DateTime<Utc>> = k.get(4);
        let reason: Option<String> = k.get(5);
        let state = if revoked.is_some_and(|r| r <= now) {
            "revoked"
        } else if from > now {
            "not yet valid"
        } else if until.is_some_and(|u| u <= now) {
            "expired"
        } else {
            "valid"
        };
        by_producer.entry(k.get(0)).or_default().push(KeyView {
            keyid: k.get(1),
            valid_from: t(Some(from)),
            valid_until: t(until),
            revoked: match (revoked, reason) {
                (Some(r), Some(why)) => format!("{}: {why}", t(Some(r))),
                (Some(r), None) => t(Some(r)),
                _ => "–".into(),
            },
            state,
        });
    }
    let mut why: BTreeMap<String, Vec<(String, i64)>> = BTreeMap::new();
    for r in reasons {
        why.entry(r.get(0)).or_default().push((r.get(1), r.get(2)));
    }
    Ok(rows
        .iter()
        .map(|r| {
            let p: String = r.get(0);
            let f = w.by_producer.get(&p).cloned().unwrap_or_default();
            let last_ms: Option<i64> = r.get(3);
            let per_minute = |m: &BTreeMap<i64, BTreeMap<String, i64>>| -> Vec<i64> {
                m.values().filter_map(|x| x.get(&p).copied()).collect()
            };
            let acc = per_minute(&hour.accepted);
            let rej = per_minute(&hour.rejected);
            ProducerView {
                hour_accepted: acc.iter().sum(),
                hour_rejected: rej.iter().sum(),
                peak_per_minute: acc.iter().copied().max().unwrap_or(0),
                status: r.get(1),
                created_at: t(Some(r.get(2))),
                last_entry: t(last_ms.and_then(|m| Utc.timestamp_millis_opt(m).single())),
                last_rejection: t(r.get(4)),
                keys: by_producer.remove(&p).unwrap_or_default(),
                accepted: format!("{}", f.accepted.round() as i64),
                duplicate: format!("{}", f.duplicate.round() as i64),
                rejected: format!("{}", f.rejected.round() as i64),
                reasons: why.remove(&p).unwrap_or_default(),
                producer: p,
            }
        })
        .collect())
}

pub struct SinkView {
    pub sink: String,
    pub anchored_height: i64,
    pub lag_blocks: i64,
    pub last_receipt: String,
    pub failures: String,
}

pub struct BlockReceipts {
    pub height: i64,
    pub sealed_at: String,
    /// (sink, kind, when)
    pub receipts: Vec<(String, String, String)>,
}

pub struct AnchorsView {
    pub head_height: Option<i64>,
    pub sinks: Vec<SinkView>,
    pub blocks: Vec<BlockReceipts>,
    /// Anchors whose metrics could not be read, and why.
    pub unreachable: Vec<String>,
}

/// Blocks shown with their receipts.
const RECENT_BLOCKS: i64 = 30;

pub async fn anchors(db: &Db, scrapes: &[Scrape]) -> Result<AnchorsView, DashError> {
    let c = db.client().await?;
    let head = figures::head(&c).await?;
    let top = head.as_ref().map(|h| h.height).unwrap_or(0);
    let sinks = figures::sinks(&c, top).await?;
    let failures = figures::anchor_failures(scrapes);
    let blocks = c
        .query(
            "SELECT height, sealed_at FROM ledger_blocks WHERE height > $1 ORDER BY height DESC",
            &[&(top - RECENT_BLOCKS)],
        )
        .await
        .map_err(DbError::query("reading recent blocks"))?;
    let receipts = c
        .query(
            "SELECT height, sink, kind, created_at FROM anchor_receipts WHERE height > $1 ORDER BY height DESC, id",
            &[&(top - RECENT_BLOCKS)],
        )
        .await
        .map_err(DbError::query("reading recent receipts"))?;
    let mut by_height: BTreeMap<i64, Vec<(String, String, String)>> = BTreeMap::new();
    for r in receipts {
        by_height
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), t(Some(r.get(3)))));
    }
    Ok(AnchorsView {
        head_height: head.map(|h| h.height),
        sinks: sinks
            .into_iter()
            .map(|s| SinkView {
                failures: failures
                    .get(&s.sink)
                    .map(|f| format!("{}", f.round() as i64))
                    .unwrap_or_else(|| "–".into()),
                last_receipt: t(Some(s.last_receipt)),
                sink: s.sink,
                anchored_height: s.anchored_height,
                lag_blocks: s.lag_blocks,
            })
            .collect(),
        blocks: blocks
            .iter()
            .map(|b| {
                let h: i64 = b.get(0);
                let ms: i64 = b.get(1);
                BlockReceipts {
                    height: h,
                    sealed_at: t(Utc.timestamp_millis_opt(ms).single()),
                    receipts: by_height.remove(&h).unwrap_or_default(),
                }
            })
            .collect(),
        unreachable: scrapes
            .iter()
            .filter_map(|s| s.result.as_ref().err().map(|e| format!("{}: {e}", s.url)))
            .collect(),
    })
}
