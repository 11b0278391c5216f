//! Inclusion and consistency proofs from stored tiles: O(log n) hashes read from at most a
//! handful of tiles, fetched in one round trip and cached, never a pass over the log.
//!
//! A tile named by (level, index, width) never changes: the cache keeps any tile it reads,
//! and a full tile serves every narrower request at its position (tiles of one log are
//! prefixes of each other). The latest checkpoint is the only moving part; it is re-read
//! when older than `head_max_age`.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use ace_core::merkle::{
    self, consistency_proof_node_ids, inclusion_proof_node_ids, verify_consistency_proof,
    verify_inclusion_proof, Hash, HashReader, NodeId,
};
use ace_core::tiles::{tile_from_bytes, tiles_for_nodes, Tile, TileId, TileSet, TILE_WIDTH};
use deadpool_postgres::Pool;
use quick_cache::sync::Cache;
use quick_cache::Weighter;

use crate::metrics::Metrics;
use crate::model::{ConsistencyProof, InclusionProof};
use crate::problem::ApiError;
use crate::store::{self, BlockHead};

/// (level, index, width): a tile's full identity, under which its contents never change.
type TileKey = (u8, u64, u16);

#[derive(Clone)]
struct TileWeighter;

impl Weighter<TileKey, Arc<Tile>> for TileWeighter {
    fn weight(&self, _key: &TileKey, tile: &Arc<Tile>) -> u64 {
        // The inner levels, computed on first use, roughly double a tile.
        (tile.hashes().len() as u64 * 64).max(1)
    }
}

/// Immutable tiles, their inner levels computed once.
pub struct TileCache {
    cache: Option<Cache<TileKey, Arc<Tile>, TileWeighter>>,
}

impl TileCache {
    pub fn new(bytes: u64) -> Self {
        let cache = (bytes > 0).then(|| {
            // A full tile with its inner levels is ~16 KiB.
            let items = (bytes / (16 << 10)).max(16) as usize;
            Cache::with_weighter(items, bytes, TileWeighter)
        });
        TileCache { cache }
    }

    fn get(&self, id: TileId) -> Option<Arc<Tile>> {
        let c = self.cache.as_ref()?;
        c.get(&(id.level, id.index, TILE_WIDTH as u16))
            .or_else(|| c.get(&(id.level, id.index, id.width)))
    }

    fn put(&self, id: TileId, tile: &Arc<Tile>) {
        if let Some(c) = &self.cache {
            c.insert((id.level, id.index, id.width), Arc::clone(tile));
        }
    }
}

/// The latest block, re-read when older than `max_age`, and blocks by tree size (immutable).
pub struct Heads {
    max_age: Duration,
    latest: Mutex<Option<(Instant, Arc<BlockHead>)>>,
    /// One refresh at a time: when the head goes stale under load, one request reads it
    /// and the others wait for that answer instead of all asking Postgres.
    refresh: tokio::sync::Mutex<()>,
    by_size: Cache<u64, Arc<BlockHead>>,
}

impl Heads {
    pub fn new(max_age: Duration) -> Self {
        Heads {
            max_age,
            latest: Mutex::new(None),
            refresh: tokio::sync::Mutex::new(()),
            by_size: Cache::new(16_384),
        }
    }

    /// The latest block, or [`ApiError::NoCheckpoint`] before genesis.
    pub async fn latest(&self, pool: &Pool) -> Result<Arc<BlockHead>, ApiError> {
        if self.max_age.is_zero() {
            return self.read_latest(pool).await;
        }
        if let Some(head) = self.fresh() {
            return Ok(head);
        }
        let _one = self.refresh.lock().await;
        // Another request may have refreshed it while this one waited.
        if let Some(head) = self.fresh() {
            return Ok(head);
        }
        self.read_latest(pool).await
    }

    fn fresh(&self) -> Option<Arc<BlockHead>> {
        let slot = self.latest.lock().ok()?;
        let (at, head) = slot.as_ref()?;
        (at.elapsed() < self.max_age).then(|| Arc::clone(head))
    }

    async fn read_latest(&self, pool: &Pool) -> Result<Arc<BlockHead>, ApiError> {
        let c = pool.get().await?;
        let head = store::latest_head(&c)
            .await?
            .map(Arc::new)
            .ok_or(ApiError::NoCheckpoint)?;
        if let Ok(mut slot) = self.latest.lock() {
            // Never step back to an older head read by a slower concurrent request.
            let newer = slot
                .as_ref()
                .is_none_or(|(_, held)| held.height <= head.height);
            if newer {
                *slot = Some((Instant::now(), Arc::clone(&head)));
            }
        }
        self.by_size.insert(head.tree_size, Arc::clone(&head));
        Ok(head)
    }

    /// The block whose tree size is `tree_size`: 400 naming `parameter` if no block has it
    /// (a size that is not checkpointed is a bad parameter, not a missing thing).
    pub async fn at_size(
        &self,
        pool: &Pool,
        tree_size: u64,
        parameter: &'static str,
    ) -> Result<Arc<BlockHead>, ApiError> {
        if let Some(h) = self.by_size.get(&tree_size) {
            return Ok(h);
        }
        let c = pool.get().await?;
        let head = store::head_at_size(&c, tree_size)
            .await?
            .map(Arc::new)
            .ok_or_else(|| {
                ApiError::bad(
                    parameter,
                    format!(
                        "no checkpoint has tree size {tree_size}: proofs are served only between \
                         checkpointed sizes (the tree_size of a block, see /v1/blocks)"
                    ),
                )
            })?;
        self.by_size.insert(tree_size, Arc::clone(&head));
        Ok(head)
    }
}

/// What proofs need: the pool, the caches, the metrics.
pub struct Prover {
    pub pool: Pool,
    pub tiles: TileCache,
    pub heads: Heads,
    pub metrics: Arc<Metrics>,
}

impl Prover {
    /// The tiles holding `nodes` at `tree_size`, from the cache or in one query.
    pub async fn tile_set(&self, nodes: &[NodeId], tree_size: u64) -> Result<TileSet, ApiError> {
        let ids = tiles_for_nodes(nodes, tree_size)
            .map_err(|e| ApiError::Corrupt(format!("planning tiles: {e}")))?;
        let tiles = self.tiles(&ids, tree_size).await?;
        let mut set = TileSet::new();
        for (id, tile) in ids.into_iter().zip(tiles) {
            set.insert_shared(id, tile)
                .map_err(|e| ApiError::Corrupt(format!("tile {}: {e}", id.path())))?;
        }
        Ok(set)
    }

    /// Tiles `ids` (each at least its width wide), in order, from the cache or in one query.
    /// `tree_size` is only for the error message when one is missing.
    pub async fn tiles(&self, ids: &[TileId], tree_size: u64) -> Result<Vec<Arc<Tile>>, ApiError> {
        let mut out: Vec<Option<Arc<Tile>>> = ids.iter().map(|&id| self.tiles.get(id)).collect();
        let missing: Vec<TileId> = ids
            .iter()
            .zip(&out)
            .filter(|(_, t)| t.is_none())
            .map(|(id, _)| *id)
            .collect();
        let hits = (ids.len() - missing.len()) as u64;
        self.metrics
            .tile_cache
            .with_label_values(&["hit"])
            .inc_by(hits);
        if !missing.is_empty() {
            self.metrics
                .tile_cache
                .with_label_values(&["miss"])
                .inc_by(missing.len() as u64);
            let c = self.pool.get().await?;
            let rows = store::tiles(&c, &missing).await?;
            drop(c);
            for (slot, want) in out.iter_mut().zip(ids) {
                if slot.is_some() {
                    continue;
                }
                let Some((got, bytes)) = rows
                    .iter()
                    .find(|(got, _)| got.level == want.level && got.index == want.index)
                else {
                    return Err(ApiError::Corrupt(format!(
                        "tile {} is not stored, though the tree of size {tree_size} needs it",
                        want.path()
                    )));
                };
                let mut hashes = tile_from_bytes(bytes)
                    .map_err(|e| ApiError::Corrupt(format!("tile {}: {e}", got.path())))?;
                // Keep a full tile whole (it serves every width); cut a partial one to the
                // width asked, the key it is cached under.
                let key = if got.is_full() {
                    *got
                } else {
                    hashes.truncate(usize::from(want.width));
                    *want
                };
                let tile = Arc::new(Tile::new(hashes));
                self.tiles.put(key, &tile);
                *slot = Some(tile);
            }
        }
        out.into_iter()
            .zip(ids)
            .map(|(t, id)| {
                t.ok_or_else(|| ApiError::Corrupt(format!("tile {} was not read", id.path())))
            })
            .collect()
    }

    /// Inclusion proof of entry `index` in the checkpointed tree of `tree_size` (default:
    /// the latest). The proof is checked against the block's root before it is served.
    pub async fn inclusion(
        &self,
        index: u64,
        tree_size: Option<u64>,
    ) -> Result<InclusionProof, ApiError> {
        let latest = self.heads.latest(&self.pool).await?;
        if index >= latest.tree_size {
            return Err(ApiError::not_found(
                "index",
                format!(
                    "no entry {index}: the log holds {} entries",
                    latest.tree_size
                ),
            ));
        }
        let head = match tree_size {
            None => latest,
            Some(n) if n <= index => {
                return Err(ApiError::bad(
                    "tree_size",
                    format!("entry {index} is not in a tree of {n} entries: tree_size must be greater than the index"),
                ))
            }
            Some(n) => self.heads.at_size(&self.pool, n, "tree_size").await?,
        };
        let size = head.tree_size;
        let mut nodes = inclusion_proof_node_ids(index, size)
            .map_err(|e| ApiError::bad("index", e.to_string()))?;
        let leaf_node = NodeId { level: 0, index };
        nodes.push(leaf_node);
        let set = self.tile_set(&nodes, size).await?;
        let corrupt = |e: merkle::MerkleError| ApiError::Corrupt(format!("entry {index}: {e}"));
        let hashes = merkle::inclusion_proof(index, size, &set).map_err(corrupt)?;
        let leaf: Hash = set
            .read_hashes(&[leaf_node])
            .map_err(corrupt)?
            .first()
            .copied()
            .ok_or_else(|| ApiError::Corrupt(format!("entry {index}: no leaf hash")))?;
        verify_inclusion_proof(&leaf, index, size, &hashes, &head.root_hash).map_err(|e| {
            ApiError::Corrupt(format!(
                "the stored tiles do not prove entry {index} in block {} (tree size {size}): {e}",
                head.height
            ))
        })?;
        Ok(InclusionProof {
            index,
            tree_size: size,
            leaf_hash: hex::encode(leaf),
            hashes: hashes.iter().map(hex::encode).collect(),
            root_hash: hex::encode(head.root_hash),
            checkpoint: head.checkpoint.to_string(),
        })
    }

    /// Consistency proof between two checkpointed tree sizes, checked against both roots.
    pub async fn consistency(&self, from: u64, to: u64) -> Result<ConsistencyProof, ApiError> {
        if from == 0 {
            return Err(ApiError::bad(
                "from",
                "must be at least 1: every tree extends the empty one, and RFC 9162 defines no proof from size 0",
            ));
        }
        if from > to {
            return Err(ApiError::bad(
                "from",
                format!("{from} is larger than to ({to}): a log only grows"),
            ));
        }
        let new = self.heads.at_size(&self.pool, to, "to").await?;
        let old = self.heads.at_size(&self.pool, from, "from").await?;
        let nodes = consistency_proof_node_ids(from, to)
            .map_err(|e| ApiError::bad("from", e.to_string()))?;
        let set = self.tile_set(&nodes, to).await?;
        let hashes = merkle::consistency_proof(from, to, &set)
            .map_err(|e| ApiError::Corrupt(format!("consistency {from} → {to}: {e}")))?;
        verify_consistency_proof(from, to, &hashes, &old.root_hash, &new.root_hash).map_err(
            |e| {
                ApiError::Corrupt(format!(
                    "the stored tiles do not prove block {} (size {from}) consistent with block {} (size {to}): {e}",
                    old.height, new.height
                ))
            },
        )?;
        Ok(ConsistencyProof {
            from,
            to,
            hashes: hashes.iter().map(hex::encode).collect(),
        })
    }
}
