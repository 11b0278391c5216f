//! An envelope's status history: every time it was rejected, retried, discarded or
//! accepted, in order, with who acted. Built from the DLQ rows with its digest, the
//! actions on them, and its log entry; nothing is kept only for this page.
//!
//! Duplicates are answered on the ack subject and counted in the writer's metrics, but
//! not stored, so they do not appear here.

use ace_core::db::DbError;
use chrono::{DateTime, TimeZone, Utc};
use serde::Serialize;

use crate::db::Db;
use crate::dlq::actions_of;
use crate::error::{bad, DashError};

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub enum Kind {
    Published,
    Rejected,
    Retried,
    Discarded,
    Accepted,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Published => "published",
            Kind::Rejected => "rejected",
            Kind::Retried => "retried",
            Kind::Discarded => "discarded",
            Kind::Accepted => "accepted",
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub at: DateTime<Utc>,
    pub kind: Kind,
    /// Who acted: an operator, or the writer.
    pub by: String,
    pub what: String,
    /// The DLQ item it concerns, if any.
    pub item: Option<i64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Timeline {
    pub digest: String,
    pub events: Vec<Event>,
    /// The log index, once accepted.
    pub index: Option<i64>,
}

/// `sha256:<64 hex>`, lowercase.
pub fn parse_digest(v: &str) -> Result<String, DashError> {
    let v = v.trim();
    let ok = v.len() == 71
        && v.starts_with("sha256:")
        && v[7..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b));
    if ok {
        Ok(v.to_string())
    } else {
        Err(bad(
            "digest",
            "must be sha256: followed by 64 lowercase hex digits",
        ))
    }
}

fn first_header(headers: &serde_json::Value, name: &str) -> Option<String> {
    headers
        .get(name)
        .and_then(|v| v.get(0))
        .and_then(|v| v.as_str())
        .map(String::from)
}

pub async fn of_digest(db: &Db, digest: &str) -> Result<Timeline, DashError> {
    let c = db.client().await?;
    let items = c
        .query(
            "SELECT id, received_at, code, detail, field, stream_seq, headers FROM dlq_items \
             WHERE digest = $1 ORDER BY id",
            &[&digest],
        )
        .await
        .map_err(DbError::query("reading the envelope's DLQ rows"))?;
    let mut events = Vec::new();
    let mut ids = Vec::new();
    for r in &items {
        let id: i64 = r.get(0);
        ids.push(id);
        let headers: serde_json::Value = r.get(6);
        let published = first_header(&headers, "Ace-Published-At")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&Utc));
        let retry_of = first_header(&headers, "Ace-Retry-Of");
        if let Some(at) = published {
            events.push(Event {
                at,
                kind: Kind::Published,
                by: if retry_of.is_some() {
                    "dashboard".into()
                } else {
                    "producer".into()
                },
                what: match &retry_of {
                    Some(of) => format!("re-published as the retry of item {of}"),
                    None => "published to the intake".into(),
                },
                item: Some(id),
            });
        }
        let field: Option<String> = r.get(4);
        events.push(Event {
            at: r.get(1),
            kind: Kind::Rejected,
            by: "writer".into(),
            what: format!(
                "{}: {}{} (stream seq {})",
                r.get::<_, String>(2),
                r.get::<_, String>(3),
                field.map(|f| format!(" [field {f}]")).unwrap_or_default(),
                r.get::<_, i64>(5)
            ),
            item: Some(id),
        });
    }
    let actions = actions_of(&c, &ids).await?;
    let item_of: std::collections::HashMap<i64, i64> = c
        .query(
            "SELECT id, dlq_id FROM dlq_actions WHERE dlq_id = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(DbError::query("reading the envelope's DLQ actions"))?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    for a in actions {
        let (kind, what) = match a.action.as_str() {
            "retry" => (
                Kind::Retried,
                format!(
                    "re-submitted to the intake (stream seq {})",
                    a.stream_seq
                        .map(|s| s.to_string())
                        .unwrap_or_else(|| "?".into())
                ),
            ),
            _ => (
                Kind::Discarded,
                format!("discarded: {}", a.note.unwrap_or_default()),
            ),
        };
        events.push(Event {
            at: a.at,
            kind,
            by: a.actor,
            what,
            item: item_of.get(&a.id).copied(),
        });
    }
    let entry = c
        .query_opt(
            "SELECT idx, integrated_time, block_height, stream_seq FROM ledger_entries WHERE digest = $1",
            &[&digest],
        )
        .await
        .map_err(DbError::query("reading the envelope's entry"))?;
    let mut index = None;
    if let Some(e) = entry {
        let idx: i64 = e.get(0);
        index = Some(idx);
        let ms: i64 = e.get(1);
        events.push(Event {
            at: Utc.timestamp_millis_opt(ms).single().unwrap_or_default(),
            kind: Kind::Accepted,
            by: "writer".into(),
            what: format!(
                "appended as entry {idx} in block {}{}",
                e.get::<_, i64>(2),
                e.get::<_, Option<i64>>(3)
                    .map(|s| format!(" (stream seq {s})"))
                    .unwrap_or_default()
            ),
            item: None,
        });
    }
    sort(&mut events);
    Ok(Timeline {
        digest: digest.to_string(),
        events,
        index,
    })
}

/// By time; at equal times (millisecond clocks, one transaction) in the order things
/// happen to an envelope.
pub fn sort(events: &mut [Event]) {
    events.sort_by(|a, b| a.at.cmp(&b.at).then(a.kind.cmp(&b.kind)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn digests_are_checked() {
        let d = format!("sha256:{}", "ab".repeat(32));
        assert_eq!(parse_digest(&d).expect("valid"), d);
        for bad in [
            "",
            "sha256:",
            "sha512:00",
            &format!("sha256:{}", "AB".repeat(32)),
            &format!("sha256:{}", "ab".repeat(33)),
        ] {
            assert!(parse_digest(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn equal_times_keep_the_natural_order() {
        let t = Utc::now();
        let ev = |kind| Event {
            at: t,
            kind,
            by: String::new(),
            what: String::new(),
            item: None,
        };
        let mut v = vec![ev(Kind::Accepted), ev(Kind::Retried), ev(Kind::Rejected)];
        sort(&mut v);
        let kinds: Vec<Kind> = v.iter().map(|e| e.kind).collect();
        assert_eq!(kinds, vec![Kind::Rejected, Kind::Retried, Kind::Accepted]);
    }
}
