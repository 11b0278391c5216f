//! The anchor's reads and its one write (a receipt).

use ace_core::db::{stored_hash, stored_u64, DbError};
use ace_core::merkle::Hash;
use tokio_postgres::GenericClient;

/// A sealed block, as anchoring needs it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockRow {
    pub height: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub sealed_at_ms: i64,
    pub checkpoint: String,
}

const BLOCK: &str = "SELECT height, tree_size, root_hash, sealed_at, checkpoint FROM ledger_blocks";

fn block(r: &tokio_postgres::Row) -> Result<BlockRow, DbError> {
    let height = stored_u64(r.get(0), "ledger_blocks.height")?;
    Ok(BlockRow {
        height,
        tree_size: stored_u64(r.get(1), "ledger_blocks.tree_size")?,
        root_hash: stored_hash(r.get(2), &format!("block {height}: root_hash"))?,
        sealed_at_ms: r.get(3),
        checkpoint: r.get(4),
    })
}

pub async fn latest_block<C: GenericClient>(c: &C) -> Result<Option<BlockRow>, DbError> {
    c.query_opt(&format!("{BLOCK} ORDER BY height DESC LIMIT 1"), &[])
        .await
        .map_err(DbError::query("reading the latest block"))?
        .map(|r| block(&r))
        .transpose()
}

pub async fn block_at<C: GenericClient>(c: &C, height: u64) -> Result<Option<BlockRow>, DbError> {
    let h = i64::try_from(height).unwrap_or(i64::MAX);
    c.query_opt(&format!("{BLOCK} WHERE height = $1"), &[&h])
        .await
        .map_err(DbError::query("reading a block"))?
        .map(|r| block(&r))
        .transpose()
}

/// The last block a sink anchored (its highest receipt), where its work resumes.
pub async fn last_anchored<C: GenericClient>(
    c: &C,
    sink: &str,
) -> Result<Option<(u64, u64)>, DbError> {
    let row = c
        .query_opt(
            "SELECT height, tree_size FROM anchor_receipts WHERE sink = $1 \
             ORDER BY height DESC LIMIT 1",
            &[&sink],
        )
        .await
        .map_err(DbError::query("reading the sink's last receipt"))?;
    row.map(|r| {
        Ok((
            stored_u64(r.get(0), "anchor_receipts.height")?,
            stored_u64(r.get(1), "anchor_receipts.tree_size")?,
        ))
    })
    .transpose()
}

pub async fn insert_receipt<C: GenericClient>(
    c: &C,
    block: &BlockRow,
    sink: &str,
    kind: &str,
    receipt: &serde_json::Value,
) -> Result<(), DbError> {
    c.execute(
        "INSERT INTO anchor_receipts (height, tree_size, sink, kind, receipt) \
         VALUES ($1, $2, $3, $4, $5)",
        &[
            &(block.height as i64),
            &(block.tree_size as i64),
            &sink,
            &kind,
            receipt,
        ],
    )
    .await
    .map_err(DbError::query("recording the receipt"))?;
    Ok(())
}
