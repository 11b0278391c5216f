//! The writer's Postgres side: load the log's state, look up digests, and write a
//! planned batch in one transaction. Runs on the connection that holds the sequencer's
//! advisory lock, so losing the connection loses the lock and the transaction together.

use std::collections::HashMap;

use ace_core::db::{stored_u64, DbError};
use ace_core::key_event::KeyEvent;
use ace_core::tiles;
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::{Client, GenericClient, Transaction};

use crate::batch::{ExistingEntry, LogState, Plan, SealedBlock};

pub use ace_core::db::latest_block;

/// Load the state, checking that the tiles reproduce the latest block's root.
pub async fn load_state<C: GenericClient>(c: &C) -> Result<Option<LogState>, DbError> {
    Ok(ace_core::db::load_log_head(c)
        .await?
        .map(|(last_block, tiles)| LogState { tiles, last_block }))
}

async fn insert_block<C: GenericClient>(c: &C, b: &SealedBlock) -> Result<(), DbError> {
    let h = &b.header;
    c.execute(
        "INSERT INTO ledger_blocks (height, first_index, tree_size, root_hash, block_hash, prev_block_hash, sealed_at, checkpoint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &(h.height as i64),
            &(h.first_index as i64),
            &(h.tree_size as i64),
            &h.root_hash.as_slice(),
            &b.block_hash.as_slice(),
            &h.prev_block_hash.as_slice(),
            &h.sealed_at,
            &b.checkpoint,
        ],
    )
    .await
    .map_err(DbError::query("inserting the block"))?;
    Ok(())
}

/// Write genesis if the log has no block yet; a no-op if another writer already did.
pub async fn ensure_genesis(c: &mut Client, genesis: &SealedBlock) -> Result<(), DbError> {
    let tx = c
        .transaction()
        .await
        .map_err(DbError::query("starting the genesis transaction"))?;
    if latest_block(&tx).await?.is_none() {
        insert_block(&tx, genesis).await?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing genesis"))
}

/// Key events not yet in the log, up to `upto` (the last one the batch's registry
/// snapshot saw), in order.
pub async fn pending_key_events<C: GenericClient>(
    c: &C,
    upto: u64,
) -> Result<Vec<KeyEvent>, DbError> {
    let rows = c
        .query(
            "SELECT id, kind, producer, keyid, at_ms, actor, detail FROM key_events \
             WHERE id > (SELECT coalesce(max(event_id), 0) FROM key_event_entries) AND id <= $1 \
             ORDER BY id",
            &[&(upto as i64)],
        )
        .await
        .map_err(DbError::query("reading pending key events"))?;
    rows.iter()
        .map(|r| {
            let id: i64 = r.get(0);
            KeyEvent::from_row(
                id,
                r.get(1),
                r.get(2),
                r.get(3),
                r.get(4),
                r.get(5),
                &r.get::<_, serde_json::Value>(6),
            )
            .map_err(|e| DbError::Corrupt(format!("key_events row {id}: {e}")))
        })
        .collect()
}

/// Whether some key event is not in the log yet.
pub async fn has_pending_key_events<C: GenericClient>(c: &C) -> Result<bool, DbError> {
    let row = c
        .query_one(
            "SELECT (SELECT coalesce(max(id), 0) FROM key_events) \
                  > (SELECT coalesce(max(event_id), 0) FROM key_event_entries)",
            &[],
        )
        .await
        .map_err(DbError::query("looking for pending key events"))?;
    Ok(row.get(0))
}

/// Entries already in the log among `digests`.
pub async fn existing<C: GenericClient>(
    c: &C,
    digests: &[String],
) -> Result<HashMap<String, ExistingEntry>, DbError> {
    let rows = c
        .query(
            "SELECT digest, idx, block_height, stream_seq FROM ledger_entries WHERE digest = ANY($1)",
            &[&digests],
        )
        .await
        .map_err(DbError::query("looking up digests for dedupe"))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let seq: Option<i64> = r.get(3);
        out.insert(
            r.get::<_, String>(0),
            ExistingEntry {
                index: stored_u64(r.get(1), "ledger_entries.idx")?,
                block: stored_u64(r.get(2), "ledger_entries.block_height")?,
                stream_seq: seq.and_then(|s| u64::try_from(s).ok()),
            },
        );
    }
    Ok(out)
}

/// The policy that decided a batch: its version goes with every entry, its text into
/// ledger_policies the first time the version admits anything.
pub struct PolicyRecord<'a> {
    pub version: &'a str,
    /// `Some` when this writer has not yet stored the version's text.
    pub source: Option<&'a str>,
}

/// Write a planned batch inside `tx`: entries and subjects by binary COPY, tiles and DLQ
/// rows through UNNEST, so a batch is a handful of statements whatever its size.
pub async fn write_plan(
    tx: &Transaction<'_>,
    plan: &Plan,
    policy: &PolicyRecord<'_>,
) -> Result<(), DbError> {
    if let Some(block) = &plan.block {
        insert_block(tx, block).await?;
        if let Some(source) = policy.source {
            tx.execute(
                "INSERT INTO ledger_policies (version, source) VALUES ($1, $2) ON CONFLICT (version) DO NOTHING",
                &[&policy.version, &source],
            )
            .await
            .map_err(DbError::query("recording the policy version"))?;
        }
        copy_entries(tx, plan, block.header.height as i64, policy.version).await?;
        let (events, idxs): (Vec<i64>, Vec<i64>) = plan
            .entries
            .iter()
            .filter_map(|e| e.key_event.map(|ev| (ev as i64, e.index as i64)))
            .unzip();
        if !events.is_empty() {
            tx.execute(
                "INSERT INTO key_event_entries (event_id, idx) SELECT * FROM unnest($1::bigint[], $2::bigint[])",
                &[&events, &idxs],
            )
            .await
            .map_err(DbError::query("recording where the key events are in the log"))?;
        }
        let mut t_level = Vec::with_capacity(plan.tiles.len());
        let mut t_idx = Vec::with_capacity(plan.tiles.len());
        let mut t_width = Vec::with_capacity(plan.tiles.len());
        let mut t_bytes = Vec::with_capacity(plan.tiles.len());
        for (id, hashes) in &plan.tiles {
            t_level.push(i16::from(id.level));
            t_idx.push(id.index as i64);
            t_width.push(id.width as i16);
            t_bytes.push(tiles::tile_to_bytes(hashes));
        }
        // A tile row of the same (level, idx, width) holds the same hashes, so an existing
        // one is left as it is.
        tx.execute(
            "INSERT INTO ledger_tiles (level, idx, width, hashes) \
             SELECT * FROM unnest($1::smallint[], $2::bigint[], $3::smallint[], $4::bytea[]) \
             ON CONFLICT DO NOTHING",
            &[&t_level, &t_idx, &t_width, &t_bytes],
        )
        .await
        .map_err(DbError::query("inserting tiles"))?;
    }
    if !plan.dlq.is_empty() {
        let n = plan.dlq.len();
        let mut seq = Vec::with_capacity(n);
        let mut stored_at = Vec::with_capacity(n);
        let mut delivered = Vec::with_capacity(n);
        let mut subject = Vec::with_capacity(n);
        let mut producer = Vec::with_capacity(n);
        let mut digest: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut code = Vec::with_capacity(n);
        let mut detail = Vec::with_capacity(n);
        let mut field: Vec<Option<&str>> = Vec::with_capacity(n);
        let mut envelope: Vec<&[u8]> = Vec::with_capacity(n);
        let mut headers = Vec::with_capacity(n);
        for d in &plan.dlq {
            seq.push(d.stream_seq as i64);
            stored_at.push(d.stored_at);
            delivered.push(d.delivered);
            subject.push(d.subject.as_str());
            producer.push(d.producer.as_str());
            digest.push(d.digest.as_deref());
            code.push(d.rejection.code.as_str());
            detail.push(d.rejection.detail.as_str());
            field.push(d.rejection.field.as_deref());
            envelope.push(&d.envelope);
            headers.push(&d.headers);
        }
        // A message is (stream sequence, JetStream's storage time): a redelivered message
        // that was already rejected keeps its first row, while a message that reuses the
        // sequence in a deleted and recreated stream (numbered from 1 again) gets its own
        // (migration V10; the conflict target is its unique index dlq_items_message).
        tx.execute(
            "INSERT INTO dlq_items (stream_seq, stored_at, subject, producer, digest, code, detail, field, envelope, headers, delivered) \
             SELECT * FROM unnest($1::bigint[], $2::timestamptz[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bytea[], $10::jsonb[], $11::bigint[]) \
             ON CONFLICT (stream_seq, stored_at) DO NOTHING",
            &[&seq, &stored_at, &subject, &producer, &digest, &code, &detail, &field, &envelope, &headers, &delivered],
        )
        .await
        .map_err(DbError::query("inserting DLQ rows"))?;
    }
    Ok(())
}

/// Entries and their subjects by binary COPY: for 1,000-entry batches it cost Postgres
/// less than one INSERT over UNNESTed arrays (no array parsing, no per-row expression
/// evaluation), and COPY fires the same insert triggers (docs/performance.md).
async fn copy_entries(
    tx: &Transaction<'_>,
    plan: &Plan,
    height: i64,
    policy_version: &str,
) -> Result<(), DbError> {
    let sink = tx
        .copy_in(
            "COPY ledger_entries (idx, digest, producer, envelope, leaf, integrated_time, block_height, payload_type, predicate_type, keyid, stream_seq, warnings, policy_version) \
             FROM STDIN (FORMAT binary)",
        )
        .await
        .map_err(DbError::query("starting the copy of entries"))?;
    let writer = BinaryCopyInWriter::new(
        sink,
        &[
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::BYTEA,
            Type::BYTEA,
            Type::INT8,
            Type::INT8,
            Type::TEXT,
            Type::TEXT,
            Type::TEXT,
            Type::INT8,
            Type::JSONB,
            Type::TEXT,
        ],
    );
    pin_mut!(writer);
    for e in &plan.entries {
        let idx = e.index as i64;
        let seq = e.stream_seq.map(|s| s as i64);
        let warnings = serde_json::json!(e.warnings);
        // The ledger's own entries are not judged by the admission policy.
        let version = e.key_event.is_none().then_some(policy_version);
        let row: [&(dyn ToSql + Sync); 13] = [
            &idx,
            &e.digest.as_str(),
            &e.producer.as_str(),
            &e.envelope.as_ref(),
            &e.leaf.as_slice(),
            &e.integrated_time,
            &height,
            &e.payload_type.as_str(),
            &e.predicate_type.as_deref(),
            &e.keyid.as_str(),
            &seq,
            &warnings,
            &version,
        ];
        writer
            .as_mut()
            .write(&row)
            .await
            .map_err(DbError::query("copying entries"))?;
    }
    writer
        .finish()
        .await
        .map_err(DbError::query("finishing the copy of entries"))?;

    if plan.entries.iter().all(|e| e.subjects.is_empty()) {
        return Ok(());
    }
    let sink = tx
        .copy_in("COPY ledger_subjects (idx, name, algorithm, value) FROM STDIN (FORMAT binary)")
        .await
        .map_err(DbError::query("starting the copy of subjects"))?;
    let writer = BinaryCopyInWriter::new(sink, &[Type::INT8, Type::TEXT, Type::TEXT, Type::TEXT]);
    pin_mut!(writer);
    for e in &plan.entries {
        let idx = e.index as i64;
        for s in &e.subjects {
            writer
                .as_mut()
                .write(&[
                    &idx,
                    &s.name.as_str(),
                    &s.algorithm.as_str(),
                    &s.value.as_str(),
                ])
                .await
                .map_err(DbError::query("copying subjects"))?;
        }
    }
    writer
        .finish()
        .await
        .map_err(DbError::query("finishing the copy of subjects"))?;
    Ok(())
}
