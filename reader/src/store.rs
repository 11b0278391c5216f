//! The reader's queries. Each is an indexed lookup or a bounded range in index order: none
//! can be made to read the whole log. Statements are unnamed (see [`query_unnamed`]), so
//! that the reader works through a transaction-pooling pgbouncer.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use ace_core::db::{stored_hash, stored_u64, DbError};
use ace_core::merkle::Hash;
use ace_core::tiles::TileId;
use base64::Engine;
use deadpool_postgres::Client;
use tokio_postgres::types::{ToSql, Type};
use tokio_postgres::Row;

use crate::model::{
    group_subjects, rfc3339_ms, Anchor, Block, Entry, EnvelopeStatus, PolicyText, ProducerKey,
    Reason,
};

/// A block as proofs need it.
#[derive(Debug, Clone)]
pub struct BlockHead {
    pub height: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub checkpoint: Arc<str>,
}

async fn query(
    c: &Client,
    what: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, DbError> {
    query_unnamed(c, what, sql, params).await
}

/// Parameter types by SQL text, for the whole process: they depend on the schema only.
static PARAM_TYPES: OnceLock<Mutex<HashMap<String, Vec<Type>>>> = OnceLock::new();

/// Runs `sql` as an unnamed statement: Parse, Bind, Execute and Sync in one message batch,
/// so a transaction-pooling pgbouncer (before 1.21, which cannot carry named prepared
/// statements between server connections) runs it all on one server connection. A named
/// statement would be parsed on one server connection and bound on another ("prepared
/// statement does not exist"), or collide with another process's of the same name. The
/// cost is a parse per query, which for these indexed lookups is small.
pub(crate) async fn query_unnamed(
    c: &tokio_postgres::Client,
    what: &'static str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<Row>, DbError> {
    let types = param_types(c, what, sql).await?;
    let typed: Vec<(&(dyn ToSql + Sync), Type)> = params.iter().copied().zip(types).collect();
    c.query_typed(sql, &typed)
        .await
        .map_err(DbError::query(what))
}

/// `sql`'s parameter types, learnt once per process from a statement prepared and closed
/// inside one transaction (which a transaction pooler keeps on one server connection).
async fn param_types(
    c: &tokio_postgres::Client,
    what: &'static str,
    sql: &str,
) -> Result<Vec<Type>, DbError> {
    let cache = PARAM_TYPES.get_or_init(Default::default);
    if let Some(t) = cache.lock().ok().and_then(|m| m.get(sql).cloned()) {
        return Ok(t);
    }
    c.batch_execute("BEGIN READ ONLY")
        .await
        .map_err(DbError::query(what))?;
    let types = c.prepare(sql).await.map(|stmt| stmt.params().to_vec());
    // The statement was dropped above, so its Close goes out before the transaction ends.
    let end = c
        .batch_execute(if types.is_ok() { "COMMIT" } else { "ROLLBACK" })
        .await;
    let types = types.map_err(DbError::query(what))?;
    end.map_err(DbError::query(what))?;
    if let Ok(mut m) = cache.lock() {
        m.insert(sql.to_owned(), types.clone());
    }
    Ok(types)
}

const BLOCK_HEAD: &str = "SELECT height, tree_size, root_hash, checkpoint FROM ledger_blocks";

fn block_head(r: &Row) -> Result<BlockHead, DbError> {
    let height = stored_u64(r.get(0), "ledger_blocks.height")?;
    Ok(BlockHead {
        height,
        tree_size: stored_u64(r.get(1), "ledger_blocks.tree_size")?,
        root_hash: stored_hash(r.get(2), &format!("block {height}: root_hash"))?,
        checkpoint: Arc::from(r.get::<_, String>(3)),
    })
}

pub async fn latest_head(c: &Client) -> Result<Option<BlockHead>, DbError> {
    let sql = format!("{BLOCK_HEAD} ORDER BY height DESC LIMIT 1");
    let rows = query(c, "reading the latest block", &sql, &[]).await?;
    rows.first().map(block_head).transpose()
}

pub async fn head_at_size(c: &Client, tree_size: u64) -> Result<Option<BlockHead>, DbError> {
    let sql = format!("{BLOCK_HEAD} WHERE tree_size = $1");
    let size = i64::try_from(tree_size).unwrap_or(i64::MAX);
    let rows = query(c, "reading a block by tree size", &sql, &[&size]).await?;
    rows.first().map(block_head).transpose()
}

/// Tiles for `ids`, each the narrowest stored copy at least as wide as asked, in one round
/// trip. A missing id is simply absent from the answer.
pub async fn tiles(c: &Client, ids: &[TileId]) -> Result<Vec<(TileId, Vec<u8>)>, DbError> {
    let (levels, indexes, widths) = ace_core::db::tile_params(ids);
    let rows = query(
        c,
        "reading tiles",
        ace_core::db::TILES_SQL,
        &[&levels, &indexes, &widths],
    )
    .await?;
    ace_core::db::tile_rows(&rows)
}

/// Leaf records of entries `[first, first + count)`, in index order.
pub async fn leaves(c: &Client, first: u64, count: u16) -> Result<Vec<(u64, Vec<u8>)>, DbError> {
    let lo = i64::try_from(first).unwrap_or(i64::MAX);
    let hi = lo.saturating_add(i64::from(count));
    let rows = query(
        c,
        "reading leaves",
        "SELECT idx, leaf FROM ledger_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        &[&lo, &hi],
    )
    .await?;
    rows.iter()
        .map(|r| Ok((stored_u64(r.get(0), "ledger_entries.idx")?, r.get(1))))
        .collect()
}

const ENTRY_COLUMNS: &str =
    "e.idx, e.digest, e.producer, e.integrated_time, e.block_height, e.leaf, e.warnings, e.policy_version";

fn entry(r: &Row) -> Result<Entry, DbError> {
    let index = stored_u64(r.get(0), "ledger_entries.idx")?;
    let leaf: Vec<u8> = r.get(5);
    Ok(Entry {
        index,
        digest: r.get(1),
        producer: r.get(2),
        integrated_time: r.get(3),
        block: stored_u64(r.get(4), "ledger_entries.block_height")?,
        leaf: String::from_utf8(leaf)
            .map_err(|_| DbError::Corrupt(format!("entry {index}: the leaf is not UTF-8")))?,
        envelope: None,
        subjects: Vec::new(),
        warnings: r.get(6),
        policy_version: r.get(7),
    })
}

async fn attach_subjects(c: &Client, entries: &mut [Entry]) -> Result<(), DbError> {
    if entries.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = entries.iter().map(|e| e.index as i64).collect();
    let rows = query(
        c,
        "reading subjects",
        "SELECT idx, name, algorithm, value FROM ledger_subjects WHERE idx = ANY($1) \
         ORDER BY idx, name, algorithm, value",
        &[&ids],
    )
    .await?;
    let mut by_index: HashMap<i64, Vec<(String, String, String)>> = HashMap::new();
    for r in rows {
        by_index
            .entry(r.get(0))
            .or_default()
            .push((r.get(1), r.get(2), r.get(3)));
    }
    for e in entries {
        if let Some(rows) = by_index.remove(&(e.index as i64)) {
            e.subjects = group_subjects(rows);
        }
    }
    Ok(())
}

/// The entry at `index`, with its envelope bytes.
pub async fn entry_at(c: &Client, index: u64) -> Result<Option<Entry>, DbError> {
    let Ok(idx) = i64::try_from(index) else {
        return Ok(None);
    };
    let sql = format!("SELECT {ENTRY_COLUMNS}, e.envelope FROM ledger_entries e WHERE e.idx = $1");
    let rows = query(c, "reading an entry", &sql, &[&idx]).await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let mut e = entry(r)?;
    let raw: Vec<u8> = r.get(8);
    e.envelope = Some(base64::engine::general_purpose::STANDARD.encode(raw));
    let mut one = [e];
    attach_subjects(c, &mut one).await?;
    let [e] = one;
    Ok(Some(e))
}

/// Search filters, all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct Search {
    pub producer: Option<String>,
    /// (algorithm, lowercase hex value)
    pub subject: Option<(String, String)>,
    pub predicate_type: Option<String>,
    /// Only entries with a larger index.
    pub after: Option<u64>,
    pub limit: u32,
}

/// One page of matching entries in index order, and whether more follow.
pub async fn search(c: &Client, s: &Search) -> Result<(Vec<Entry>, bool), DbError> {
    let after: i64 = s.after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
    let fetch = i64::from(s.limit) + 1;
    let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &fetch];
    let mut conds: Vec<String> = Vec::new();
    if let Some(p) = &s.producer {
        params.push(p);
        conds.push(format!("e.producer = ${}", params.len()));
    }
    if let Some(p) = &s.predicate_type {
        params.push(p);
        conds.push(format!("e.predicate_type = ${}", params.len()));
    }
    let extra: String = conds.iter().map(|c| format!(" AND {c}")).collect();
    // Each shape below walks one index in idx order and stops after `limit + 1` rows.
    let sql = match &s.subject {
        Some((alg, value)) => {
            params.push(alg);
            let a = params.len();
            params.push(value);
            let v = params.len();
            format!(
                "SELECT DISTINCT ON (s.idx) {ENTRY_COLUMNS} FROM ledger_subjects s \
                 JOIN ledger_entries e ON e.idx = s.idx \
                 WHERE s.algorithm = ${a} AND s.value = ${v} AND s.idx > $1{extra} \
                 ORDER BY s.idx LIMIT $2"
            )
        }
        None => format!(
            "SELECT {ENTRY_COLUMNS} FROM ledger_entries e WHERE e.idx > $1{extra} \
             ORDER BY e.idx LIMIT $2"
        ),
    };
    let rows = query(c, "searching entries", &sql, &params).await?;
    let more = rows.len() > s.limit as usize;
    let mut entries = rows
        .iter()
        .take(s.limit as usize)
        .map(entry)
        .collect::<Result<Vec<_>, _>>()?;
    attach_subjects(c, &mut entries).await?;
    Ok((entries, more))
}

pub async fn envelope_status(c: &Client, digest: &str) -> Result<EnvelopeStatus, DbError> {
    let rows = query(
        c,
        "looking up a digest",
        "SELECT idx FROM ledger_entries WHERE digest = $1",
        &[&digest],
    )
    .await?;
    if let Some(r) = rows.first() {
        return Ok(EnvelopeStatus {
            digest: digest.to_owned(),
            status: "accepted",
            index: Some(stored_u64(r.get(0), "ledger_entries.idx")?),
            reason: None,
        });
    }
    let rows = query(
        c,
        "looking up a digest in the DLQ",
        "SELECT code, detail, field FROM dlq_items WHERE digest = $1 ORDER BY id DESC LIMIT 1",
        &[&digest],
    )
    .await?;
    Ok(match rows.first() {
        Some(r) => EnvelopeStatus {
            digest: digest.to_owned(),
            status: "rejected",
            index: None,
            reason: Some(Reason {
                code: r.get(0),
                detail: r.get(1),
                field: r.get(2),
            }),
        },
        None => EnvelopeStatus {
            digest: digest.to_owned(),
            status: "unknown",
            index: None,
            reason: None,
        },
    })
}

const BLOCK_COLUMNS: &str = "SELECT height, first_index, tree_size, root_hash, block_hash, \
                             prev_block_hash, sealed_at, checkpoint FROM ledger_blocks";

fn block(r: &Row) -> Result<Block, DbError> {
    let height = stored_u64(r.get(0), "ledger_blocks.height")?;
    let h = |i: usize, what: &str| -> Result<String, DbError> {
        Ok(hex::encode(stored_hash(
            r.get(i),
            &format!("block {height}: {what}"),
        )?))
    };
    Ok(Block {
        height,
        first_index: stored_u64(r.get(1), "ledger_blocks.first_index")?,
        tree_size: stored_u64(r.get(2), "ledger_blocks.tree_size")?,
        root_hash: h(3, "root_hash")?,
        block_hash: h(4, "block_hash")?,
        prev_block_hash: h(5, "prev_block_hash")?,
        sealed_at: r.get(6),
        checkpoint: r.get(7),
        anchors: Vec::new(),
    })
}

/// Receipts per block are few (one per sink, or a handful after retries); this bounds a
/// page's answer all the same.
const MAX_RECEIPTS_PER_PAGE: i64 = 10_000;

async fn attach_anchors(c: &Client, blocks: &mut [Block]) -> Result<(), DbError> {
    if blocks.is_empty() {
        return Ok(());
    }
    let heights: Vec<i64> = blocks.iter().map(|b| b.height as i64).collect();
    let rows = query(
        c,
        "reading anchor receipts",
        "SELECT height, sink, kind, tree_size, receipt, (extract(epoch FROM created_at) * 1000)::bigint \
         FROM anchor_receipts WHERE height = ANY($1) ORDER BY height, id LIMIT $2",
        &[&heights, &MAX_RECEIPTS_PER_PAGE],
    )
    .await?;
    let mut by_height: HashMap<i64, Vec<Anchor>> = HashMap::new();
    for r in rows {
        by_height.entry(r.get(0)).or_default().push(Anchor {
            sink: r.get(1),
            kind: r.get(2),
            tree_size: stored_u64(r.get(3), "anchor_receipts.tree_size")?,
            receipt: r.get(4),
            created_at: rfc3339_ms(r.get(5)),
        });
    }
    for b in blocks {
        if let Some(a) = by_height.remove(&(b.height as i64)) {
            b.anchors = a;
        }
    }
    Ok(())
}

pub async fn block_at(c: &Client, height: u64) -> Result<Option<Block>, DbError> {
    let Ok(h) = i64::try_from(height) else {
        return Ok(None);
    };
    let sql = format!("{BLOCK_COLUMNS} WHERE height = $1");
    let rows = query(c, "reading a block", &sql, &[&h]).await?;
    let Some(r) = rows.first() else {
        return Ok(None);
    };
    let mut one = [block(r)?];
    attach_anchors(c, &mut one).await?;
    let [b] = one;
    Ok(Some(b))
}

/// Blocks above `after` (from genesis when `None`), in height order, and whether more follow.
pub async fn blocks(
    c: &Client,
    after: Option<u64>,
    limit: u32,
) -> Result<(Vec<Block>, bool), DbError> {
    let after: i64 = after.map_or(-1, |a| i64::try_from(a).unwrap_or(i64::MAX));
    let fetch = i64::from(limit) + 1;
    let sql = format!("{BLOCK_COLUMNS} WHERE height > $1 ORDER BY height LIMIT $2");
    let rows = query(c, "listing blocks", &sql, &[&after, &fetch]).await?;
    let more = rows.len() > limit as usize;
    let mut out = rows
        .iter()
        .take(limit as usize)
        .map(block)
        .collect::<Result<Vec<_>, _>>()?;
    attach_anchors(c, &mut out).await?;
    Ok((out, more))
}

/// Every registered producer key. The registry is operator-made and small; it is not the log.
pub async fn producer_keys(c: &Client) -> Result<Vec<ProducerKey>, DbError> {
    let rows = query(
        c,
        "reading producer keys",
        "SELECT producer, keyid, public_key, \
                floor(extract(epoch FROM valid_from) * 1000)::bigint, \
                floor(extract(epoch FROM valid_until) * 1000)::bigint, \
                floor(extract(epoch FROM revoked_at) * 1000)::bigint \
         FROM producer_keys ORDER BY producer, valid_from, keyid",
        &[],
    )
    .await?;
    Ok(rows
        .iter()
        .map(|r| ProducerKey {
            producer: r.get(0),
            keyid: r.get(1),
            public_key: hex::encode(r.get::<_, Vec<u8>>(2)),
            valid_from: rfc3339_ms(r.get(3)),
            valid_until: r.get::<_, Option<i64>>(4).map(rfc3339_ms),
            revoked_at: r.get::<_, Option<i64>>(5).map(rfc3339_ms),
        })
        .collect())
}

/// The text of one policy version, if any entry was admitted under it.
pub async fn policy(c: &Client, version: &str) -> Result<Option<PolicyText>, DbError> {
    let rows = query(
        c,
        "reading a policy version",
        "SELECT version, source, (extract(epoch FROM first_used_at) * 1000)::bigint \
         FROM ledger_policies WHERE version = $1",
        &[&version],
    )
    .await?;
    Ok(rows.first().map(|r| PolicyText {
        version: r.get(0),
        source: r.get(1),
        first_used_at: rfc3339_ms(r.get(2)),
    }))
}
