//! DLQ triage: filtering and paging the dead-letter items, one item's detail, and the
//! operators' actions on them (retry, discard, bulk retry).
//!
//! Nothing is changed or deleted: an action is a new `dlq_actions` row, recorded in the
//! same transaction as its `operator_audit` row. An item's status is its latest action
//! (`retry` → retried, `discard` → discarded; none → open).
//!
//! A retry re-publishes the stored raw bytes to the item's own intake subject, so it goes
//! through every check again: an envelope rejected for an unknown key is accepted once
//! the key is registered, and one that is still bad lands in the DLQ again as a new item
//! (its headers carry `Ace-Retry-Of`). Each re-submission has its own `Nats-Msg-Id`
//! (`ace-retry-<action id>`), so JetStream's duplicate window cannot swallow it, and a
//! retry of an envelope already in the log is answered `duplicate` by the writer.

use std::collections::HashMap;

use ace_core::db::DbError;
use ace_core::envelope::Envelope;
use ace_core::rejection::RejectionCode;
use ace_core::statement::Statement;
use async_nats::jetstream;
use chrono::{DateTime, NaiveDateTime, Utc};
use serde::Serialize;

use crate::audit;
use crate::auth::Session;
use crate::db::Db;
use crate::error::{bad, DashError};

/// Items per page of the explorer.
pub const PAGE: i64 = 50;
/// Longest note kept with a discard (also a CHECK in V7).
pub const MAX_NOTE: usize = 2000;
/// The explorer counts matches up to this many, then says "more than".
const COUNT_CAP: i64 = 10_000;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Status {
    Open,
    Retried,
    Discarded,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Open => "open",
            Status::Retried => "retried",
            Status::Discarded => "discarded",
        }
    }
    fn of(action: Option<&str>) -> Status {
        match action {
            Some("retry") => Status::Retried,
            Some("discard") => Status::Discarded,
            _ => Status::Open,
        }
    }
}

/// The explorer's filter, validated. Empty fields mean "any".
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Filter {
    pub producer: Option<String>,
    pub code: Option<String>,
    pub status: Option<Status>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// Keyset cursor: items with a smaller id (older).
    pub before: Option<i64>,
}

/// Longest value any filter field takes.
const MAX_PARAM: usize = 100;

fn parse_time(field: &'static str, v: &str) -> Result<DateTime<Utc>, DashError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(v) {
        return Ok(t.with_timezone(&Utc));
    }
    // What an <input type="datetime-local"> sends; the dashboard's times are UTC.
    for fmt in ["%Y-%m-%dT%H:%M", "%Y-%m-%dT%H:%M:%S"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(v, fmt) {
            return Ok(t.and_utc());
        }
    }
    Err(bad(
        field,
        format!("{v:?} is not a time (RFC 3339, or YYYY-MM-DDTHH:MM in UTC)"),
    ))
}

impl Filter {
    /// From query or form fields; unknown fields are refused (a typo would otherwise
    /// silently widen a bulk retry).
    pub fn parse(
        params: &HashMap<String, String>,
        allowed_extra: &[&str],
    ) -> Result<Filter, DashError> {
        let mut f = Filter::default();
        for (k, v) in params {
            let v = v.trim();
            if v.len() > MAX_PARAM && k != "note" {
                return Err(DashError::BadRequest {
                    field: "filter",
                    why: format!("{k} is longer than {MAX_PARAM} characters"),
                });
            }
            if v.is_empty() {
                continue;
            }
            match k.as_str() {
                "producer" => {
                    if !(v.len() <= 63
                        && v.bytes().all(|b| {
                            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                        }))
                    {
                        return Err(bad("producer", format!("{v:?} is not a producer id")));
                    }
                    f.producer = Some(v.into());
                }
                "code" => {
                    let c: RejectionCode = v
                        .parse()
                        .map_err(|_| bad("code", format!("{v:?} is not a rejection code")))?;
                    f.code = Some(c.as_str().into());
                }
                "status" => {
                    f.status = Some(match v {
                        "open" => Status::Open,
                        "retried" => Status::Retried,
                        "discarded" => Status::Discarded,
                        _ => {
                            return Err(bad(
                                "status",
                                format!("{v:?} is not open, retried or discarded"),
                            ))
                        }
                    })
                }
                "from" => f.from = Some(parse_time("from", v)?),
                "to" => f.to = Some(parse_time("to", v)?),
                "before" => {
                    f.before = Some(
                        v.parse::<i64>()
                            .ok()
                            .filter(|n| *n > 0)
                            .ok_or_else(|| bad("before", format!("{v:?} is not an item id")))?,
                    )
                }
                other if allowed_extra.contains(&other) => {}
                other => {
                    return Err(DashError::BadRequest {
                        field: "filter",
                        why: format!("unknown field {other:?}"),
                    })
                }
            }
        }
        if let (Some(a), Some(b)) = (f.from, f.to) {
            if a >= b {
                return Err(bad("to", "must be after from"));
            }
        }
        Ok(f)
    }

    /// The filter as query-string pairs (without the cursor), for links and forms.
    pub fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        if let Some(p) = &self.producer {
            v.push(("producer", p.clone()));
        }
        if let Some(c) = &self.code {
            v.push(("code", c.clone()));
        }
        if let Some(s) = self.status {
            v.push(("status", s.as_str().to_string()));
        }
        if let Some(t) = self.from {
            v.push(("from", t.format("%Y-%m-%dT%H:%M").to_string()));
        }
        if let Some(t) = self.to {
            v.push(("to", t.format("%Y-%m-%dT%H:%M").to_string()));
        }
        v
    }

    /// How a bulk action names its target in the audit.
    pub fn describe(&self) -> String {
        let p = self.pairs();
        if p.is_empty() {
            "dlq:all".into()
        } else {
            let parts: Vec<String> = p.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!("dlq:{}", parts.join("&"))
        }
    }
}

/// One line of the explorer.
#[derive(Debug, Clone, Serialize)]
pub struct ItemRow {
    pub id: i64,
    pub received_at: DateTime<Utc>,
    pub producer: String,
    pub code: String,
    pub field: Option<String>,
    pub detail: String,
    pub digest: Option<String>,
    pub status: Status,
}

/// An [`ItemRow`] from columns 0-7 of a query: id, received_at, producer, code, field,
/// detail, digest, latest action.
fn item_row(r: &tokio_postgres::Row) -> ItemRow {
    ItemRow {
        id: r.get(0),
        received_at: r.get(1),
        producer: r.get(2),
        code: r.get(3),
        field: r.get(4),
        detail: r.get(5),
        digest: r.get(6),
        status: Status::of(r.get::<_, Option<&str>>(7)),
    }
}

#[derive(Debug, Clone)]
pub struct Page {
    pub items: Vec<ItemRow>,
    /// Cursor of the next (older) page.
    pub next: Option<i64>,
    /// Matching items, counted up to [`COUNT_CAP`].
    pub total: i64,
    pub total_capped: bool,
}

/// The WHERE clause every listing and the bulk retry share: $1 producer, $2 code,
/// $3 from, $4 to, $5 before, $6 status.
const MATCHES: &str = "FROM dlq_items d \
     LEFT JOIN LATERAL (SELECT a.action FROM dlq_actions a WHERE a.dlq_id = d.id ORDER BY a.id DESC LIMIT 1) la ON true \
     WHERE ($1::text IS NULL OR d.producer = $1) \
       AND ($2::text IS NULL OR d.code = $2) \
       AND ($3::timestamptz IS NULL OR d.received_at >= $3) \
       AND ($4::timestamptz IS NULL OR d.received_at < $4) \
       AND ($5::bigint IS NULL OR d.id < $5) \
       AND (CASE $6::text WHEN 'open' THEN la.action IS NULL \
                          WHEN 'retried' THEN la.action = 'retry' \
                          WHEN 'discarded' THEN la.action = 'discard' \
                          ELSE true END)";

pub async fn list(db: &Db, f: &Filter) -> Result<Page, DashError> {
    let c = db.client().await?;
    let status = f.status.map(Status::as_str);
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&f.producer, &f.code, &f.from, &f.to, &f.before, &status];
    let rows = c
        .query(
            &format!(
                "SELECT d.id, d.received_at, d.producer, d.code, d.field, d.detail, d.digest, la.action \
                 {MATCHES} ORDER BY d.id DESC LIMIT {}",
                PAGE + 1
            ),
            &params,
        )
        .await
        .map_err(DbError::query("listing DLQ items"))?;
    let mut items: Vec<ItemRow> = rows.iter().map(item_row).collect();
    let next = if items.len() as i64 > PAGE {
        items.truncate(PAGE as usize);
        items.last().map(|i| i.id)
    } else {
        None
    };
    let unpaged: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&f.producer, &f.code, &f.from, &f.to, &None::<i64>, &status];
    let total: i64 = c
        .query_one(
            &format!(
                "SELECT count(*) FROM (SELECT 1 {MATCHES} LIMIT {}) m",
                COUNT_CAP + 1
            ),
            &unpaged,
        )
        .await
        .map_err(DbError::query("counting DLQ items"))?
        .get(0);
    Ok(Page {
        items,
        next,
        total: total.min(COUNT_CAP),
        total_capped: total > COUNT_CAP,
    })
}

/// One action on an item, as its history shows it.
#[derive(Debug, Clone, Serialize)]
pub struct Action {
    pub id: i64,
    pub action: String,
    pub note: Option<String>,
    pub actor: String,
    pub at: DateTime<Utc>,
    pub stream_seq: Option<i64>,
    pub audit_seq: i64,
}

/// A signature of the stored envelope, with what the registry knows of its key.
#[derive(Debug, Clone, Serialize)]
pub struct SignatureView {
    pub keyid: String,
    pub sig_hex: String,
    /// The producer the key is registered to, if any.
    pub registered_to: Option<String>,
    pub revoked: bool,
}

/// The stored envelope, decoded as far as it goes.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Decoded {
    pub payload_type: Option<String>,
    pub signatures: Vec<SignatureView>,
    /// The statement, pretty-printed, when the payload is an in-toto statement.
    pub statement: Option<String>,
    pub predicate_type: Option<String>,
    /// The payload as text when it is not a statement (bounded).
    pub payload_text: Option<String>,
    /// Why decoding stopped, if it did.
    pub problem: Option<String>,
}

#[derive(Debug, Clone)]
pub struct Item {
    pub row: ItemRow,
    pub subject: String,
    pub stream_seq: i64,
    /// When JetStream stored the message: with `stream_seq` it tells two items apart
    /// whose sequences a recreated intake stream reused. None for items written before
    /// migration V10.
    pub stored_at: Option<DateTime<Utc>>,
    pub delivered: Option<i64>,
    pub headers: String,
    pub size: usize,
    /// The raw bytes as text (lossy), bounded, for an operator to read.
    pub raw_preview: String,
    pub decoded: Decoded,
    pub actions: Vec<Action>,
}

const PREVIEW: usize = 16 * 1024;

fn truncate(s: String, max: usize) -> String {
    if s.len() <= max {
        return s;
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes in all)", &s[..end], s.len())
}

/// Decodes without trusting: the bytes are what a producer (or an attacker) sent.
pub fn decode(raw: &[u8]) -> Decoded {
    let mut d = Decoded::default();
    let env = match Envelope::parse(raw) {
        Ok(e) => e,
        Err(r) => {
            d.problem = Some(format!(
                "not a DSSE envelope: {}{}",
                r.detail,
                r.field.map(|f| format!(" (field {f})")).unwrap_or_default()
            ));
            return d;
        }
    };
    d.payload_type = Some(env.payload_type.clone());
    d.signatures = env
        .signatures
        .iter()
        .map(|s| SignatureView {
            keyid: s.keyid.clone(),
            sig_hex: hex::encode(&s.sig),
            registered_to: None,
            revoked: false,
        })
        .collect();
    match Statement::parse(&env.payload) {
        Ok(st) => {
            d.predicate_type = Some(st.predicate_type.clone());
            let pretty = serde_json::from_slice::<serde_json::Value>(&env.payload)
                .and_then(|v| serde_json::to_string_pretty(&v))
                .unwrap_or_else(|_| String::from_utf8_lossy(&env.payload).into_owned());
            d.statement = Some(truncate(pretty, PREVIEW));
        }
        Err(r) => {
            d.problem = Some(format!(
                "payload is not an in-toto statement: {}{}",
                r.detail,
                r.field.map(|f| format!(" (field {f})")).unwrap_or_default()
            ));
            d.payload_text = Some(truncate(
                String::from_utf8_lossy(&env.payload).into_owned(),
                PREVIEW,
            ));
        }
    }
    d
}

pub async fn get(db: &Db, id: i64) -> Result<Item, DashError> {
    let c = db.client().await?;
    let r = c
        .query_opt(
            "SELECT d.id, d.received_at, d.producer, d.code, d.field, d.detail, d.digest, \
                    (SELECT a.action FROM dlq_actions a WHERE a.dlq_id = d.id ORDER BY a.id DESC LIMIT 1), \
                    d.subject, d.stream_seq, d.delivered, d.headers::text, d.envelope, d.stored_at \
             FROM dlq_items d WHERE d.id = $1",
            &[&id],
        )
        .await
        .map_err(DbError::query("reading a DLQ item"))?
        .ok_or_else(|| DashError::NotFound(format!("DLQ item {id}")))?;
    let raw: &[u8] = r.get(12);
    let mut decoded = decode(raw);
    if !decoded.signatures.is_empty() {
        let ids: Vec<String> = decoded.signatures.iter().map(|s| s.keyid.clone()).collect();
        let keys = c
            .query(
                "SELECT keyid, producer, revoked_at IS NOT NULL FROM producer_keys WHERE keyid = ANY($1)",
                &[&ids],
            )
            .await
            .map_err(DbError::query("looking up the envelope's keys"))?;
        for k in keys {
            let keyid: String = k.get(0);
            for s in decoded.signatures.iter_mut().filter(|s| s.keyid == keyid) {
                s.registered_to = Some(k.get(1));
                s.revoked = k.get(2);
            }
        }
    }
    let actions = actions_of(&c, &[id]).await?;
    Ok(Item {
        row: item_row(&r),
        subject: r.get(8),
        stream_seq: r.get(9),
        stored_at: r.get(13),
        delivered: r.get(10),
        headers: r.get(11),
        size: raw.len(),
        raw_preview: truncate(String::from_utf8_lossy(raw).into_owned(), PREVIEW),
        decoded,
        actions,
    })
}

/// Every action on the given items, oldest first.
pub async fn actions_of(c: &tokio_postgres::Client, ids: &[i64]) -> Result<Vec<Action>, DashError> {
    let rows = c
        .query(
            "SELECT id, action, note, actor, at, stream_seq, audit_seq, dlq_id FROM dlq_actions \
             WHERE dlq_id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .map_err(DbError::query("reading DLQ actions"))?;
    Ok(rows
        .iter()
        .map(|r| Action {
            id: r.get(0),
            action: r.get(1),
            note: r.get(2),
            actor: r.get(3),
            at: r.get(4),
            stream_seq: r.get(5),
            audit_seq: r.get(6),
        })
        .collect())
}

/// Where retries are re-published.
#[derive(Clone)]
pub struct Intake {
    pub js: jetstream::Context,
    /// The server's address, for error messages.
    pub url: String,
}

fn must_operate(who: &Session) -> Result<(), DashError> {
    if who.role == crate::auth::Role::Operator {
        Ok(())
    } else {
        Err(DashError::Forbidden(format!(
            "{} is a viewer: only operators may retry or discard",
            who.user
        )))
    }
}

/// What a retry did.
#[derive(Debug, Clone, Serialize)]
pub struct RetryReport {
    pub audit_seq: i64,
    /// (item id, intake stream sequence of its re-submission)
    pub resubmitted: Vec<(i64, i64)>,
    /// Matching items left for another bulk retry.
    pub remaining: bool,
}

/// Retries the given items (one operator action: one audit row).
async fn resubmit(
    db: &Db,
    intake: &Intake,
    who: &Session,
    ids: &[i64],
    audit_action: &str,
    audit_target: &str,
    mut audit_detail: serde_json::Value,
) -> Result<RetryReport, DashError> {
    let mut c = db.client().await?;
    let tx = c
        .transaction()
        .await
        .map_err(DbError::query("starting the retry's transaction"))?;
    let rows = tx
        .query(
            "SELECT id, subject, envelope FROM dlq_items WHERE id = ANY($1) ORDER BY id",
            &[&ids],
        )
        .await
        .map_err(DbError::query("reading the items to retry"))?;
    if rows.len() != ids.len() {
        let found: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
        let missing: Vec<String> = ids
            .iter()
            .filter(|i| !found.contains(i))
            .map(|i| i.to_string())
            .collect();
        return Err(DashError::NotFound(format!(
            "DLQ item(s) {}",
            missing.join(", ")
        )));
    }
    let mut action_ids = Vec::with_capacity(rows.len());
    let mut acks = Vec::with_capacity(rows.len());
    for r in &rows {
        let id: i64 = r.get(0);
        let subject: String = r.get(1);
        let envelope: Vec<u8> = r.get(2);
        let action_id: i64 = tx
            .query_one("SELECT nextval('dlq_actions_id_seq')", &[])
            .await
            .map_err(DbError::query("drawing a DLQ action id"))?
            .get(0);
        let mut headers = async_nats::HeaderMap::new();
        let msg_id = format!("ace-retry-{action_id}");
        headers.insert("Nats-Msg-Id", msg_id.as_str());
        headers.insert("Ace-Retry-Of", id.to_string().as_str());
        headers.insert(
            "Ace-Published-At",
            chrono::Utc::now()
                .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
                .as_str(),
        );
        let ack = intake
            .js
            .publish_with_headers(subject.clone(), headers, envelope.into())
            .await
            .map_err(|e| DashError::Nats {
                url: intake.url.clone(),
                what: "re-publishing a DLQ item",
                why: format!("item {id} to {subject}: {e}"),
            })?;
        action_ids.push((id, action_id, msg_id));
        acks.push(ack);
    }
    // Published ones are awaited together: one round trip, not one per item.
    let mut seqs = Vec::with_capacity(acks.len());
    for (ack, (id, _, _)) in
        futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future))
            .await
            .into_iter()
            .zip(&action_ids)
    {
        let ack = ack.map_err(|e| DashError::Nats {
            url: intake.url.clone(),
            what: "confirming a re-published DLQ item",
            why: format!("item {id}: {e}"),
        })?;
        seqs.push(ack.sequence as i64);
    }
    if let serde_json::Value::Object(m) = &mut audit_detail {
        m.insert("items".into(), serde_json::json!(ids));
        m.insert("stream_seqs".into(), serde_json::json!(seqs));
    }
    let audit_seq = audit::append(&tx, who, audit_action, audit_target, &audit_detail).await?;
    let item_ids: Vec<i64> = action_ids.iter().map(|a| a.0).collect();
    let act_ids: Vec<i64> = action_ids.iter().map(|a| a.1).collect();
    let msg_ids: Vec<&str> = action_ids.iter().map(|a| a.2.as_str()).collect();
    tx.execute(
        "INSERT INTO dlq_actions (id, dlq_id, action, actor, msg_id, stream_seq, audit_seq) \
         SELECT a, d, 'retry', $4, m, s, $6 FROM unnest($1::bigint[], $2::bigint[], $3::text[], $5::bigint[]) AS t(a, d, m, s)",
        &[&act_ids, &item_ids, &msg_ids, &who.user, &seqs, &audit_seq],
    )
    .await
    .map_err(DbError::query("recording the retries"))?;
    tx.commit()
        .await
        .map_err(DbError::query("committing the retries"))?;
    tracing::info!(actor = %who.user, items = ids.len(), audit_seq, "DLQ items re-submitted");
    Ok(RetryReport {
        audit_seq,
        resubmitted: item_ids.into_iter().zip(seqs).collect(),
        remaining: false,
    })
}

pub async fn retry(
    db: &Db,
    intake: &Intake,
    who: &Session,
    id: i64,
) -> Result<RetryReport, DashError> {
    must_operate(who)?;
    resubmit(
        db,
        intake,
        who,
        &[id],
        "dlq.retry",
        &format!("dlq:{id}"),
        serde_json::json!({}),
    )
    .await
}

/// Retries every *open* item the filter matches (at most `max`; the report says whether
/// more remain). Items already retried or discarded are left alone: a bulk action never
/// overrides an operator's earlier decision.
pub async fn bulk_retry(
    db: &Db,
    intake: &Intake,
    who: &Session,
    filter: &Filter,
    max: usize,
) -> Result<RetryReport, DashError> {
    must_operate(who)?;
    let f = Filter {
        status: Some(Status::Open),
        before: None,
        ..filter.clone()
    };
    let c = db.client().await?;
    let status = Some("open");
    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 6] =
        [&f.producer, &f.code, &f.from, &f.to, &None::<i64>, &status];
    let rows = c
        .query(
            &format!("SELECT d.id {MATCHES} ORDER BY d.id LIMIT {}", max + 1),
            &params,
        )
        .await
        .map_err(DbError::query("selecting the items to retry"))?;
    drop(c);
    let mut ids: Vec<i64> = rows.iter().map(|r| r.get(0)).collect();
    let remaining = ids.len() > max;
    ids.truncate(max);
    if ids.is_empty() {
        return Err(bad("filter", "no open DLQ item matches it"));
    }
    let mut report = resubmit(
        db,
        intake,
        who,
        &ids,
        "dlq.bulk_retry",
        &f.describe(),
        serde_json::json!({ "remaining": remaining }),
    )
    .await?;
    report.remaining = remaining;
    Ok(report)
}

/// Discards an item with the operator's note (required).
pub async fn discard(db: &Db, who: &Session, id: i64, note: &str) -> Result<i64, DashError> {
    must_operate(who)?;
    let note = note.trim();
    if note.is_empty() {
        return Err(bad("note", "a discard needs a note saying why"));
    }
    if note.len() > MAX_NOTE {
        return Err(bad("note", format!("longer than {MAX_NOTE} bytes")));
    }
    let mut c = db.client().await?;
    let tx = c
        .transaction()
        .await
        .map_err(DbError::query("starting the discard's transaction"))?;
    let exists = tx
        .query_opt("SELECT 1 FROM dlq_items WHERE id = $1", &[&id])
        .await
        .map_err(DbError::query("reading the item to discard"))?;
    if exists.is_none() {
        return Err(DashError::NotFound(format!("DLQ item {id}")));
    }
    let audit_seq = audit::append(
        &tx,
        who,
        "dlq.discard",
        &format!("dlq:{id}"),
        &serde_json::json!({ "note": note }),
    )
    .await?;
    tx.execute(
        "INSERT INTO dlq_actions (dlq_id, action, note, actor, audit_seq) VALUES ($1, 'discard', $2, $3, $4)",
        &[&id, &note, &who.user, &audit_seq],
    )
    .await
    .map_err(DbError::query("recording the discard"))?;
    tx.commit()
        .await
        .map_err(DbError::query("committing the discard"))?;
    tracing::info!(actor = %who.user, item = id, audit_seq, "DLQ item discarded");
    Ok(audit_seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(p: &[(&str, &str)]) -> HashMap<String, String> {
        p.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn filters_are_validated_field_by_field() {
        let f = Filter::parse(
            &params(&[
                ("producer", "acme"),
                ("code", "unknown_key"),
                ("status", "open"),
                ("from", "2026-12-01T10:00"),
                ("to", "2026-12-01T11:00:00Z"),
                ("before", "42"),
            ]),
            &[],
        )
        .expect("valid");
        assert_eq!(f.producer.as_deref(), Some("acme"));
        assert_eq!(f.status, Some(Status::Open));
        assert_eq!(f.before, Some(42));
        assert_eq!(
            f.describe(),
            "dlq:producer=acme&code=unknown_key&status=open&from=2026-12-01T10:00&to=2026-12-01T11:00"
        );
        for (k, v, field) in [
            ("producer", "Acme Corp", "producer"),
            ("code", "bad_vibes", "code"),
            ("status", "closed", "status"),
            ("from", "yesterday", "from"),
            ("before", "-1", "before"),
            ("color", "red", "filter"),
        ] {
            match Filter::parse(&params(&[(k, v)]), &[]) {
                Err(DashError::BadRequest { field: got, .. }) => assert_eq!(got, field, "{k}={v}"),
                other => panic!("{k}={v}: {other:?}"),
            }
        }
        assert!(Filter::parse(
            &params(&[("from", "2026-12-02T00:00"), ("to", "2026-12-01T00:00")]),
            &[]
        )
        .is_err());
        assert!(Filter::parse(&params(&[("producer", &"a".repeat(200))]), &[]).is_err());
        assert_eq!(
            Filter::parse(&params(&[("producer", ""), ("csrf", "x")]), &["csrf"]).expect("empty"),
            Filter::default()
        );
    }

    #[test]
    fn decoding_names_where_it_stopped() {
        let d = decode(b"{\"payloadType\": 5}");
        assert!(
            d.problem
                .as_deref()
                .is_some_and(|p| p.contains("payloadType")),
            "{d:?}"
        );
        let key = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]);
        let st = br#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"a","digest":{"sha256":"0000000000000000000000000000000000000000000000000000000000000000"}}],"predicateType":"https://example.com/p","predicate":{}}"#;
        let env = Envelope::sign(ace_core::envelope::IN_TOTO_PAYLOAD_TYPE, st, &key);
        let d = decode(&env.to_json());
        assert_eq!(d.predicate_type.as_deref(), Some("https://example.com/p"));
        assert_eq!(d.signatures.len(), 1);
        assert!(d.problem.is_none());
        let env = Envelope::sign(ace_core::envelope::IN_TOTO_PAYLOAD_TYPE, b"not json", &key);
        let d = decode(&env.to_json());
        assert_eq!(d.payload_text.as_deref(), Some("not json"));
        assert!(d.problem.is_some());
    }
}
