//! C2SP tlog-tiles (tile height 8): tile paths, tile contents, reading node hashes out of tiles,
//! and the writer's right edge. Pure: no storage, no I/O.
//!
//! A level-L tile holds up to 256 consecutive hashes of Merkle level 8L nodes (level 0: leaf
//! hashes). The Merkle levels between 8L and 8L + 8 are not stored; they are recomputed from the
//! tile. Tile paths are built and parsed only here.

use std::collections::btree_map::Entry;
use std::collections::BTreeMap;
use std::sync::{Arc, OnceLock};

use crate::merkle::{
    fold_right, node_hash, root_from_leaf_hashes, Hash, HashReader, MerkleError, NodeId,
};

/// Merkle levels per tile.
pub const TILE_HEIGHT: u8 = 8;
/// Hashes in a full tile.
pub const TILE_WIDTH: u64 = 256;
/// Highest tile level a tree of at most `u64::MAX` leaves has (Merkle levels 56..=63).
pub const MAX_TILE_LEVEL: u8 = 7;

const HASH_LEN: usize = 32;
const LEVELS: usize = MAX_TILE_LEVEL as usize + 1;
const FULL: u16 = TILE_WIDTH as u16;

/// `x >> bits`, 0 once every bit is shifted out (tile arithmetic shifts by up to 64).
fn shr(x: u64, bits: u32) -> u64 {
    x.checked_shr(bits).unwrap_or(0)
}

/// Highest tile index at `level` in a tree of at most `u64::MAX` leaves.
fn max_tile_index(level: u8) -> u64 {
    shr(u64::MAX, 8 * (u32::from(level) + 1))
}

/// A tile of hashes: Merkle level `8 * level`, positions `[index * 256, index * 256 + width)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TileId {
    pub level: u8,
    pub index: u64,
    /// 1..=256; 256 is a full tile.
    pub width: u16,
}

impl TileId {
    /// A tile id checked against the limits [`TileId::parse`] enforces.
    ///
    /// # Errors
    /// [`TileError::InvalidTile`] naming the field that is out of range.
    pub fn new(level: u8, index: u64, width: u16) -> Result<Self, TileError> {
        let id = TileId {
            level,
            index,
            width,
        };
        id.validate()?;
        Ok(id)
    }

    fn validate(&self) -> Result<(), TileError> {
        let reason = if self.level > MAX_TILE_LEVEL {
            format!("level {} is above {MAX_TILE_LEVEL}", self.level)
        } else if self.index > max_tile_index(self.level) {
            format!(
                "index {} is beyond the last tile of level {} in a tree of at most 2^64-1 entries",
                self.index, self.level
            )
        } else if self.width == 0 || self.width > FULL {
            format!("width {} is not in 1..=256", self.width)
        } else {
            return Ok(());
        };
        Err(TileError::InvalidTile { id: *self, reason })
    }

    /// The C2SP path, `tile/<L>/<N>[.p/<W>]`. Only meaningful for a valid id (see
    /// [`TileId::new`]); a width of 0 gives a path that [`TileId::parse`] rejects.
    pub fn path(&self) -> String {
        let mut s = format!("tile/{}/", self.level);
        push_index_and_width(&mut s, self.index, self.width);
        s
    }

    /// Parses a canonical C2SP tile path; anything another encoder could not have produced is
    /// rejected, so each tile has exactly one path.
    ///
    /// # Errors
    /// [`TileError::BadPath`] saying which part is wrong.
    pub fn parse(path: &str) -> Result<TileId, TileError> {
        let bad = |reason: String| TileError::BadPath {
            path: path.to_owned(),
            reason,
        };
        let rest = path
            .strip_prefix("tile/")
            .ok_or_else(|| bad("must start with \"tile/\"".into()))?;
        let (level, rest) = rest
            .split_once('/')
            .ok_or_else(|| bad("has no tile index after the level".into()))?;
        if level == "entries" {
            return Err(bad("is an entry bundle path, not a Merkle tile path".into()));
        }
        let level = parse_decimal(level)
            .ok_or_else(|| {
                bad(format!(
                    "level {level:?} is not a decimal from 0 to {MAX_TILE_LEVEL} without leading zeros"
                ))
            })
            .and_then(|l| {
                u8::try_from(l)
                    .ok()
                    .filter(|&l| l <= MAX_TILE_LEVEL)
                    .ok_or_else(|| {
                        bad(format!(
                            "level {l} is above {MAX_TILE_LEVEL}, the highest a tree of at most 2^64-1 entries has"
                        ))
                    })
            })?;
        let (index, width) = parse_index_and_width(rest, max_tile_index(level)).map_err(bad)?;
        Ok(TileId {
            level,
            index,
            width,
        })
    }

    pub fn is_full(&self) -> bool {
        self.width == FULL
    }
}

/// `<N>[.p/<W>]`: N in zero-padded 3-digit groups, all but the last prefixed with `x`.
fn push_index_and_width(s: &mut String, index: u64, width: u16) {
    let digits = index.to_string();
    let padded = format!("{}{digits}", "0".repeat((3 - digits.len() % 3) % 3));
    let groups: Vec<&str> = padded
        .as_bytes()
        .chunks(3)
        .filter_map(|g| std::str::from_utf8(g).ok())
        .collect();
    for (i, g) in groups.iter().enumerate() {
        if i + 1 < groups.len() {
            s.push('x');
            s.push_str(g);
            s.push('/');
        } else {
            s.push_str(g);
        }
    }
    if width < FULL {
        s.push_str(&format!(".p/{width}"));
    }
}

/// A decimal with no sign, no leading zeros and only ASCII digits (`str::parse` accepts `+1`).
fn parse_decimal(s: &str) -> Option<u64> {
    let canonical =
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) && (s == "0" || !s.starts_with('0'));
    if canonical {
        s.parse().ok()
    } else {
        None
    }
}

fn parse_index_and_width(s: &str, max_index: u64) -> Result<(u64, u16), String> {
    let (groups, width) = match s.split_once(".p/") {
        Some((groups, w)) => {
            let width = parse_decimal(w)
                .and_then(|w| u16::try_from(w).ok())
                .filter(|w| (1..FULL).contains(w))
                .ok_or_else(|| {
                    format!("partial width {w:?} is not a decimal in 1..=255 without leading zeros")
                })?;
            (groups, width)
        }
        None => (s, FULL),
    };
    let groups: Vec<&str> = groups.split('/').collect();
    // u64::MAX has 20 digits: 7 groups.
    if groups.len() > 7 {
        return Err(format!(
            "index has {} path elements, at most 7 fit in 64 bits",
            groups.len()
        ));
    }
    let mut index: u64 = 0;
    for (i, group) in groups.iter().enumerate() {
        let last = i + 1 == groups.len();
        let digits = if last {
            Some(*group)
        } else {
            group.strip_prefix('x')
        };
        let digits = digits
            .filter(|d| d.len() == 3 && d.bytes().all(|b| b.is_ascii_digit()))
            .ok_or_else(|| {
                if last {
                    format!("index element {group:?} is not 3 digits (and is the last element, which has no 'x')")
                } else {
                    format!("index element {group:?} is not 'x' and 3 digits")
                }
            })?;
        if i == 0 && !last && digits == "000" {
            return Err(format!("index element {group:?} is a leading zero group"));
        }
        let value: u64 = digits
            .parse()
            .map_err(|_| format!("index element {group:?} is not a number"))?;
        index = index
            .checked_mul(1000)
            .and_then(|n| n.checked_add(value))
            .ok_or_else(|| "index does not fit in 64 bits".to_owned())?;
    }
    if index > max_index {
        return Err(format!(
            "index {index} is beyond the last tile ({max_index}) of a tree of at most 2^64-1 entries"
        ));
    }
    Ok((index, width))
}

/// Path of entry bundle `index`: `tile/entries/<N>[.p/<W>]`, `width` 256 for a full bundle.
pub fn entries_path(index: u64, width: u16) -> String {
    let mut s = "tile/entries/".to_owned();
    push_index_and_width(&mut s, index, width);
    s
}

/// Parses a canonical entry bundle path into (index, width).
///
/// # Errors
/// [`TileError::BadPath`] saying which part is wrong.
pub fn parse_entries_path(path: &str) -> Result<(u64, u16), TileError> {
    let bad = |reason: String| TileError::BadPath {
        path: path.to_owned(),
        reason,
    };
    let rest = path
        .strip_prefix("tile/entries/")
        .ok_or_else(|| bad("must start with \"tile/entries/\"".into()))?;
    parse_index_and_width(rest, max_tile_index(0)).map_err(bad)
}

/// Tile errors. `BadPath` is the client's fault (HTTP 400); `MissingTile`, `TileTooShort`,
/// `TileConflict` and `BadTileLength` on stored data mean storage is incomplete or corrupt.
#[derive(Debug, thiserror::Error)]
pub enum TileError {
    /// Not a canonical tile or entry bundle path.
    #[error("bad tile path {path:?}: {reason}")]
    BadPath { path: String, reason: String },
    /// A tile id outside the limits of a tree of at most 2^64-1 entries.
    #[error("invalid tile (level {}, index {}, width {}): {reason}", .id.level, .id.index, .id.width)]
    InvalidTile { id: TileId, reason: String },
    /// Tile bytes that are not 1..=256 whole hashes.
    #[error("tile data is {len} bytes, expected a multiple of 32 between 32 and 8192")]
    BadTileLength { len: usize },
    /// Fewer hashes given than the tile's width.
    #[error("tile {tile} needs {width} hashes, got {got}")]
    TileTooShort {
        tile: String,
        width: u16,
        got: usize,
    },
    /// Two copies of a tile disagree on a hash they both hold.
    #[error("two copies of tile {tile} differ at position {position}")]
    TileConflict { tile: String, position: usize },
    /// A tile needed to rebuild the right edge is not in the set.
    #[error("tile {tile} is missing")]
    MissingTile { tile: String },
    /// The node is not a complete subtree of the tree.
    #[error("{node} is not complete in a tree of size {tree_size}")]
    NodeNotInTree { node: NodeId, tree_size: u64 },
    /// Appending would pass 2^64-1 entries.
    #[error("appending {appended} entries to a tree of size {tree_size} overflows 64 bits")]
    TreeSizeOverflow { tree_size: u64, appended: usize },
}

/// The tile, with the width it has at `tree_size`, that holds `node` or lets it be recomputed
/// (a node at Merkle level l is in tile level l / 8; for l % 8 != 0 it is folded from the
/// tile's hashes).
///
/// # Errors
/// [`TileError::NodeNotInTree`] if `node` is not complete in the tree of `tree_size`.
pub fn tile_for_node(node: NodeId, tree_size: u64) -> Result<TileId, TileError> {
    if !node.is_complete_in(tree_size) {
        return Err(TileError::NodeNotInTree { node, tree_size });
    }
    let level = node.level / TILE_HEIGHT;
    let height_in_tile = u32::from(node.level % TILE_HEIGHT);
    // Completeness bounds index << height_in_tile by tree_size >> 8 * level: no overflow.
    let first_position = node.index << height_in_tile;
    let index = first_position >> TILE_HEIGHT;
    let hashes_at_level = shr(tree_size, 8 * u32::from(level));
    let width = (hashes_at_level - index * TILE_WIDTH).min(TILE_WIDTH);
    Ok(TileId {
        level,
        index,
        width: width as u16,
    })
}

/// The tiles holding `nodes` at `tree_size`, deduplicated and sorted.
///
/// # Errors
/// [`TileError::NodeNotInTree`] for the first node that is not in the tree.
pub fn tiles_for_nodes(nodes: &[NodeId], tree_size: u64) -> Result<Vec<TileId>, TileError> {
    let mut tiles = nodes
        .iter()
        .map(|&n| tile_for_node(n, tree_size))
        .collect::<Result<Vec<_>, _>>()?;
    tiles.sort_unstable();
    tiles.dedup();
    Ok(tiles)
}

/// The partial tiles (one per level with a non-zero remainder) on the right edge of a tree of
/// `tree_size` leaves, lowest level first.
pub fn partial_tile_ids(tree_size: u64) -> Vec<TileId> {
    (0..=MAX_TILE_LEVEL)
        .filter_map(|level| {
            let width = shr(tree_size, 8 * u32::from(level)) % TILE_WIDTH;
            (width > 0).then(|| TileId {
                level,
                index: shr(tree_size, 8 * (u32::from(level) + 1)),
                width: width as u16,
            })
        })
        .collect()
}

/// The wire form of a tile: its hashes concatenated.
pub fn tile_to_bytes(hashes: &[Hash]) -> Vec<u8> {
    hashes.concat()
}

/// Parses a tile's wire form.
///
/// # Errors
/// [`TileError::BadTileLength`] unless the data is 1..=256 whole hashes (C2SP serves no
/// empty tiles).
pub fn tile_from_bytes(bytes: &[u8]) -> Result<Vec<Hash>, TileError> {
    let len = bytes.len();
    if len == 0 || !len.is_multiple_of(HASH_LEN) || len > FULL as usize * HASH_LEN {
        return Err(TileError::BadTileLength { len });
    }
    Ok(bytes
        .chunks_exact(HASH_LEN)
        .filter_map(|c| Hash::try_from(c).ok())
        .collect())
}

/// A set of fetched tiles, keyed by (level, index), each kept at the widest width given.
#[derive(Debug, Clone, Default)]
pub struct TileSet {
    tiles: BTreeMap<(u8, u64), Arc<Tile>>,
}

/// One tile's hashes, with the Merkle levels inside the tile computed on first use.
///
/// Shareable (`Arc`) so that a cache of immutable full tiles pays for the inner levels once,
/// not once per proof.
#[derive(Debug)]
pub struct Tile {
    hashes: Vec<Hash>,
    /// `inner[h - 1]`: the complete nodes h levels above the tile's hashes. Computed on first
    /// use, all at once: one proof already needs a node at nearly every height of its bottom
    /// tile, so this costs a single proof no more, and makes further reads lookups.
    inner: OnceLock<Vec<Vec<Hash>>>,
}

impl Tile {
    pub fn new(hashes: Vec<Hash>) -> Self {
        Tile {
            hashes,
            inner: OnceLock::new(),
        }
    }

    pub fn hashes(&self) -> &[Hash] {
        &self.hashes
    }

    /// Computes the inner levels now (for a cache that wants to pay for them once, up front).
    pub fn warm(&self) {
        let _ = self.node(1, 0);
    }

    /// Bytes held, the inner levels included once computed (for cache accounting).
    pub fn weight(&self) -> usize {
        let inner: usize = self
            .inner
            .get()
            .map_or(0, |levels| levels.iter().map(Vec::len).sum());
        (self.hashes.len() + inner) * 32 + std::mem::size_of::<Self>()
    }

    /// The node `height` levels above the tile's hashes, `position` in units of 2^height.
    fn node(&self, height: u32, position: usize) -> Option<Hash> {
        if height == 0 {
            return self.hashes.get(position).copied();
        }
        let inner = self.inner.get_or_init(|| {
            let mut levels: Vec<Vec<Hash>> = Vec::new();
            for _ in 1..TILE_HEIGHT {
                let below = levels.last().unwrap_or(&self.hashes);
                let above = below
                    .chunks_exact(2)
                    .map(|pair| node_hash(&pair[0], &pair[1]))
                    .collect();
                levels.push(above);
            }
            levels
        });
        inner.get(height as usize - 1)?.get(position).copied()
    }
}

impl TileSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a tile. A stored tile wider than `id` may be given (tiles of one log are prefixes
    /// of each other); it is truncated to `id.width`. If the set already holds the tile, the
    /// wider copy is kept, after checking the two agree.
    ///
    /// # Errors
    /// [`TileError::InvalidTile`], [`TileError::TileTooShort`] or [`TileError::TileConflict`].
    pub fn insert(&mut self, id: TileId, mut hashes: Vec<Hash>) -> Result<(), TileError> {
        id.validate()?;
        let width = usize::from(id.width);
        if hashes.len() < width {
            return Err(TileError::TileTooShort {
                tile: id.path(),
                width: id.width,
                got: hashes.len(),
            });
        }
        hashes.truncate(width);
        self.put(id, Arc::new(Tile::new(hashes)))
    }

    /// Adds a shared tile at least `id.width` wide, without copying or truncating it. Reading a
    /// node through a wider tile is sound: tiles of one log are prefixes of each other, and the
    /// proofs read only nodes complete at their tree size.
    ///
    /// # Errors
    /// As [`TileSet::insert`].
    pub fn insert_shared(&mut self, id: TileId, tile: Arc<Tile>) -> Result<(), TileError> {
        id.validate()?;
        if tile.hashes.len() > usize::from(FULL) {
            return Err(TileError::BadTileLength {
                len: tile.hashes.len() * 32,
            });
        }
        if tile.hashes.len() < usize::from(id.width) {
            return Err(TileError::TileTooShort {
                tile: id.path(),
                width: id.width,
                got: tile.hashes.len(),
            });
        }
        self.put(id, tile)
    }

    fn put(&mut self, id: TileId, tile: Arc<Tile>) -> Result<(), TileError> {
        match self.tiles.entry((id.level, id.index)) {
            Entry::Vacant(slot) => {
                slot.insert(tile);
            }
            Entry::Occupied(mut slot) => {
                let held = &slot.get().hashes;
                if let Some(position) = held.iter().zip(&tile.hashes).position(|(a, b)| a != b) {
                    return Err(TileError::TileConflict {
                        tile: id.path(),
                        position,
                    });
                }
                if tile.hashes.len() > held.len() {
                    slot.insert(tile);
                }
            }
        }
        Ok(())
    }

    /// The first `id.width` hashes of the tile, if the set holds it at least that wide.
    pub fn tile(&self, id: TileId) -> Option<&[Hash]> {
        self.tiles
            .get(&(id.level, id.index))?
            .hashes
            .get(..usize::from(id.width))
    }

    fn node_hash(&self, node: NodeId) -> Option<Hash> {
        if node.level >= 64 {
            return None;
        }
        let level = node.level / TILE_HEIGHT;
        let height = u32::from(node.level % TILE_HEIGHT);
        // Tile index and position at the tile's own Merkle level, then in units of 2^height.
        let first = u128::from(node.index) << height;
        let index = u64::try_from(first >> TILE_HEIGHT).ok()?;
        let position = (first % u128::from(TILE_WIDTH)) as usize >> height;
        self.tiles.get(&(level, index))?.node(height, position)
    }
}

impl HashReader for TileSet {
    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MerkleError> {
        ids.iter()
            .map(|&id| self.node_hash(id).ok_or(MerkleError::MissingNode(id)))
            .collect()
    }
}

/// The writer's in-memory right edge: the partial tile at each level.
///
/// Holds at most 255 hashes per level, so a clone (to roll back when a database transaction
/// fails) copies under 8 KiB per level in use: 24 KiB up to 2^24 entries, 64 KiB at worst.
#[derive(Debug, Clone, Default)]
pub struct TileAppender {
    tree_size: u64,
    /// `edge[L]` holds `(tree_size >> 8L) % 256` hashes of Merkle level 8L.
    edge: [Vec<Hash>; LEVELS],
}

impl TileAppender {
    /// The empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Rebuilds the right edge from the tiles of [`partial_tile_ids`]`(tree_size)`, as fetched
    /// from storage (wider copies are truncated).
    ///
    /// # Errors
    /// [`TileError::MissingTile`] naming the first partial tile `tiles` lacks.
    pub fn from_partial_tiles(tree_size: u64, tiles: &TileSet) -> Result<Self, TileError> {
        let mut edge: [Vec<Hash>; LEVELS] = Default::default();
        for id in partial_tile_ids(tree_size) {
            let hashes = tiles
                .tile(id)
                .ok_or_else(|| TileError::MissingTile { tile: id.path() })?;
            if let Some(slot) = edge.get_mut(usize::from(id.level)) {
                *slot = hashes.to_vec();
            }
        }
        Ok(TileAppender { tree_size, edge })
    }

    pub fn tree_size(&self) -> u64 {
        self.tree_size
    }

    /// Appends leaf hashes. Returns every tile whose contents changed, each once with its final
    /// contents for this append: each tile that became full, then the partial tile of each
    /// level that changed. Storing all of them makes every tile of the new size readable.
    ///
    /// # Errors
    /// [`TileError::TreeSizeOverflow`] if the tree would pass 2^64-1 entries; nothing is
    /// appended then.
    pub fn append(&mut self, leaf_hashes: &[Hash]) -> Result<Vec<(TileId, Vec<Hash>)>, TileError> {
        u64::try_from(leaf_hashes.len())
            .ok()
            .and_then(|n| self.tree_size.checked_add(n))
            .ok_or(TileError::TreeSizeOverflow {
                tree_size: self.tree_size,
                appended: leaf_hashes.len(),
            })?;
        let mut out = Vec::new();
        let mut changed = [false; LEVELS];
        for leaf in leaf_hashes {
            self.tree_size += 1;
            let mut carry = *leaf;
            for (level, tile) in self.edge.iter_mut().enumerate() {
                tile.push(carry);
                changed[level] = true;
                if tile.len() < FULL as usize {
                    break;
                }
                // The top level never fills: 256 level-7 hashes would be 2^64 entries.
                let full = std::mem::take(tile);
                carry = root_from_leaf_hashes(&full);
                let id = TileId {
                    level: level as u8,
                    index: shr(self.tree_size - 1, 8 * (level as u32 + 1)),
                    width: FULL,
                };
                out.push((id, full));
            }
        }
        for (level, tile) in self.edge.iter().enumerate() {
            if changed[level] && !tile.is_empty() {
                let id = TileId {
                    level: level as u8,
                    index: shr(self.tree_size, 8 * (level as u32 + 1)),
                    width: tile.len() as u16,
                };
                out.push((id, tile.clone()));
            }
        }
        Ok(out)
    }

    /// Root of the current tree, from the right edge alone.
    pub fn root(&self) -> Hash {
        // The root's complete subtrees, largest first: each level's partial tile splits into
        // perfect runs by the bits of its width, and higher levels cover earlier leaves.
        let mut parts = Vec::new();
        for tile in self.edge.iter().rev() {
            let mut rest = tile.as_slice();
            while !rest.is_empty() {
                let run = 1 << (usize::BITS - 1 - rest.len().leading_zeros());
                let (perfect, tail) = rest.split_at(run);
                parts.push(root_from_leaf_hashes(perfect));
                rest = tail;
            }
        }
        fold_right(&parts).unwrap_or_else(crate::merkle::empty_root)
    }

    /// Length of each level's partial tile.
    #[cfg(test)]
    fn edge_widths(&self) -> Vec<usize> {
        self.edge.iter().map(Vec::len).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::merkle::{
        consistency_proof, consistency_proof_node_ids, inclusion_proof, inclusion_proof_node_ids,
        leaf_hash, root_node_ids, tree_root, verify_consistency_proof, verify_inclusion_proof,
        MemoryTree,
    };
    use proptest::prelude::*;
    use std::sync::OnceLock;

    /// splitmix64: deterministic "random" chunk sizes and samples without a rand dependency.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        }

        fn below(&mut self, n: u64) -> u64 {
            self.next() % n
        }
    }

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_le_bytes())).collect()
    }

    /// Leaves and their in-memory tree, built once: hashing dominates test time in debug builds.
    fn reference() -> &'static (Vec<Hash>, MemoryTree) {
        static REFERENCE: OnceLock<(Vec<Hash>, MemoryTree)> = OnceLock::new();
        REFERENCE.get_or_init(|| {
            let all = leaves(4096);
            let mut mem = MemoryTree::new();
            all.iter().for_each(|h| mem.push(*h));
            (all, mem)
        })
    }

    fn insert_all(set: &mut TileSet, tiles: Vec<(TileId, Vec<Hash>)>) {
        for (id, hashes) in tiles {
            set.insert(id, hashes).unwrap();
        }
    }

    fn contents(set: &TileSet) -> Vec<((u8, u64), &[Hash])> {
        set.tiles
            .iter()
            .map(|(k, t)| (*k, t.hashes.as_slice()))
            .collect()
    }

    /// A TileSet holding only the tiles (at their widths for `tree_size`) that `nodes` need,
    /// taken from `storage`: what a reader fetching by path would get.
    fn fetch(storage: &TileSet, nodes: &[NodeId], tree_size: u64) -> TileSet {
        let mut set = TileSet::new();
        for id in tiles_for_nodes(nodes, tree_size).unwrap() {
            let hashes = storage
                .tile(id)
                .unwrap_or_else(|| panic!("storage lacks {}", id.path()))
                .to_vec();
            set.insert(id, hashes).unwrap();
        }
        set
    }

    /// What `fetch` checks, without hashing: storage holds the tile `tile_for_node` names for
    /// each node, at least as wide as that node needs and no wider than the tree allows.
    fn assert_fetchable(storage: &TileSet, nodes: &[NodeId], tree_size: u64) {
        for &node in nodes {
            let id = tile_for_node(node, tree_size).unwrap();
            assert!(
                storage.tile(id).is_some(),
                "{node} at {tree_size}: no {}",
                id.path()
            );
            let height = node.level % TILE_HEIGHT;
            let end = ((node.index + 1) << height) - id.index * TILE_WIDTH;
            assert!(end <= u64::from(id.width), "{node} beyond {}", id.path());
            let at_level = tree_size >> (8 * id.level);
            assert!(id.index * TILE_WIDTH + u64::from(id.width) <= at_level);
        }
    }

    #[test]
    fn paths_encode_as_c2sp_examples() {
        let t = |level, index, width| TileId::new(level, index, width).unwrap().path();
        assert_eq!(t(0, 0, 256), "tile/0/000");
        assert_eq!(t(0, 1_234_067, 256), "tile/0/x001/x234/067");
        assert_eq!(t(1, 5, 7), "tile/1/005.p/7");
        assert_eq!(t(2, 1000, 255), "tile/2/x001/000.p/255");
        assert_eq!(t(3, 999, 1), "tile/3/999.p/1");
        assert_eq!(t(7, 0, 255), "tile/7/000.p/255");
        assert_eq!(
            t(0, max_tile_index(0), 256),
            "tile/0/x072/x057/x594/x037/x927/935"
        );
        assert_eq!(entries_path(1_234_067, 256), "tile/entries/x001/x234/067");
        assert_eq!(entries_path(0, 12), "tile/entries/000.p/12");
        assert!(TileId::new(0, 0, 256).unwrap().is_full());
        assert!(!TileId::new(0, 0, 255).unwrap().is_full());
    }

    #[test]
    fn paths_round_trip() {
        let mut rng = Rng(7);
        let mut ids = vec![];
        for level in 0..=MAX_TILE_LEVEL {
            let max = max_tile_index(level);
            for index in [
                0,
                1,
                9,
                10,
                99,
                100,
                999,
                1000,
                1001,
                999_999,
                1_000_000,
                max.saturating_sub(1),
                max,
            ] {
                for width in [1, 2, 100, 255, 256] {
                    ids.push(TileId {
                        level,
                        index: index.min(max),
                        width,
                    });
                }
            }
            for _ in 0..200 {
                let width = 1 + rng.below(256) as u16;
                let index = if max == 0 {
                    0
                } else {
                    rng.below(max) >> rng.below(56)
                };
                ids.push(TileId {
                    level,
                    index,
                    width,
                });
            }
        }
        for id in ids {
            let path = id.path();
            assert_eq!(TileId::parse(&path).unwrap(), id, "{path}");
            let entries = entries_path(id.index >> (8 * id.level), id.width);
            assert_eq!(
                parse_entries_path(&entries).unwrap(),
                (id.index >> (8 * id.level), id.width),
                "{entries}"
            );
        }
    }

    #[test]
    fn non_canonical_paths_are_rejected() {
        let bad = [
            ("", "must start"),
            ("/tile/0/000", "must start"),
            ("tiles/0/000", "must start"),
            ("tile/0", "no tile index"),
            ("tile/0/", "not 3 digits"),
            ("tile//000", "level"),
            ("tile/00/000", "level"),
            ("tile/01/000", "level"),
            ("tile/+1/000", "level"),
            ("tile/-1/000", "level"),
            ("tile/ 1/000", "level"),
            ("tile/8/000", "above 7"),
            ("tile/63/000", "above 7"),
            ("tile/99999999999999999999999/000", "level"),
            ("tile/entries/000", "entry bundle"),
            ("tile/0/00", "not 3 digits"),
            ("tile/0/0000", "not 3 digits"),
            ("tile/0/0", "not 3 digits"),
            ("tile/0/00a", "not 3 digits"),
            ("tile/0/+01", "not 3 digits"),
            ("tile/0/x001", "not 3 digits"),
            ("tile/0/001/234", "not 'x'"),
            ("tile/0/X001/234", "not 'x'"),
            ("tile/0/x01/234", "not 'x'"),
            ("tile/0/x000/234", "leading zero"),
            ("tile/0/x000/x001/234", "leading zero"),
            ("tile/0/x001//234", "not 'x'"),
            ("tile/0/000/", "not 'x'"),
            ("tile/0/x001/x000/x000/x000/x000/x000/x000/000", "at most 7"),
            ("tile/0/x999/x999/x999/x999/x999/x999/999", "64 bits"),
            (
                "tile/0/x072/x057/x594/x037/x927/936",
                "beyond the last tile",
            ),
            ("tile/7/001", "beyond the last tile"),
            ("tile/1/x281/x474/x976/x710/656", "beyond the last tile"),
            ("tile/0/000.p/0", "partial width"),
            ("tile/0/000.p/256", "partial width"),
            ("tile/0/000.p/300", "partial width"),
            ("tile/0/000.p/07", "partial width"),
            ("tile/0/000.p/", "partial width"),
            ("tile/0/000.p/+7", "partial width"),
            ("tile/0/000.p/7/", "partial width"),
            ("tile/0/000.p/7.p/8", "partial width"),
            ("tile/0/000.p7", "not 3 digits"),
            ("tile/0/000.q/7", "not 'x'"),
            ("tile/0/000.P/7", "not 'x'"),
            ("tile/0/x001.p/5/000", "partial width"),
            ("tile/\u{0660}/000", "level"),
            ("tile/0/\u{0660}00", "not 3 digits"),
        ];
        for (path, reason) in bad {
            let e = TileId::parse(path).expect_err(path);
            let msg = e.to_string();
            assert!(msg.contains(reason), "{path:?}: {msg}");
            assert!(msg.contains(&format!("{path:?}")), "{path:?}: {msg}");
        }
        for path in [
            "tile/0/000",
            "tile/entries/00",
            "tile/entries/000.p/0",
            "tile/entries/x000/001",
            "tile/entries/x072/x057/x594/x037/x927/936",
        ] {
            let e = parse_entries_path(path).expect_err(path);
            assert!(e.to_string().contains(&format!("{path:?}")), "{e}");
        }
        assert_eq!(
            parse_entries_path("tile/entries/x001/000.p/3").unwrap(),
            (1000, 3)
        );
    }

    #[test]
    fn invalid_tile_ids_are_rejected() {
        for (level, index, width) in [(8, 0, 256), (0, 0, 0), (0, 0, 257), (7, 1, 1)] {
            let e = TileId::new(level, index, width).unwrap_err();
            assert!(matches!(e, TileError::InvalidTile { .. }), "{e}");
            let mut set = TileSet::new();
            assert!(set
                .insert(
                    TileId {
                        level,
                        index,
                        width
                    },
                    vec![[0; 32]; 300]
                )
                .is_err());
        }
    }

    #[test]
    fn tile_bytes_round_trip_and_reject_bad_lengths() {
        let hashes = leaves(256);
        for n in [1, 7, 255, 256] {
            let bytes = tile_to_bytes(&hashes[..n]);
            assert_eq!(bytes.len(), 32 * n);
            assert_eq!(tile_from_bytes(&bytes).unwrap(), hashes[..n]);
        }
        for len in [0, 1, 31, 33, 8191, 8193, 8224] {
            assert!(matches!(
                tile_from_bytes(&vec![0; len]),
                Err(TileError::BadTileLength { len: l }) if l == len
            ));
        }
    }

    #[test]
    fn partial_tiles_follow_the_spec_examples() {
        let p = |level, index, width| TileId {
            level,
            index,
            width,
        };
        assert_eq!(partial_tile_ids(0), vec![]);
        assert_eq!(partial_tile_ids(7), vec![p(0, 0, 7)]);
        assert_eq!(partial_tile_ids(256), vec![p(1, 0, 1)]);
        assert_eq!(
            partial_tile_ids(70_000),
            vec![p(0, 273, 112), p(1, 1, 17), p(2, 0, 1)]
        );
        let top = partial_tile_ids(u64::MAX);
        assert_eq!(top.len(), 8);
        assert!(top.iter().all(|t| t.width == 255 && t.validate().is_ok()));
        assert_eq!(top[7], p(7, 0, 255));
    }

    #[test]
    fn tile_for_node_picks_the_tile_and_its_width() {
        let n = |level, index| NodeId { level, index };
        let t = |level, index, width| TileId {
            level,
            index,
            width,
        };
        assert_eq!(tile_for_node(n(0, 5), 7).unwrap(), t(0, 0, 7));
        assert_eq!(tile_for_node(n(2, 1), 1000).unwrap(), t(0, 0, 256));
        assert_eq!(tile_for_node(n(0, 999), 1000).unwrap(), t(0, 3, 232));
        assert_eq!(tile_for_node(n(8, 0), 1000).unwrap(), t(1, 0, 3));
        assert_eq!(tile_for_node(n(9, 0), 1024).unwrap(), t(1, 0, 4));
        assert_eq!(tile_for_node(n(7, 1), 256).unwrap(), t(0, 0, 256));
        assert_eq!(tile_for_node(n(63, 0), u64::MAX).unwrap(), t(7, 0, 255));
        assert_eq!(
            tile_for_node(n(0, u64::MAX - 1), u64::MAX).unwrap(),
            t(0, max_tile_index(0), 255)
        );
        for (node, size) in [
            (n(0, 7), 7),
            (n(3, 0), 7),
            (n(8, 0), 255),
            (n(64, 0), u64::MAX),
        ] {
            let e = tile_for_node(node, size).unwrap_err();
            assert!(matches!(e, TileError::NodeNotInTree { .. }), "{e}");
        }
        let tiles = tiles_for_nodes(&[n(0, 3), n(1, 0), n(8, 0), n(0, 300)], 600).unwrap();
        assert_eq!(tiles, vec![t(0, 0, 256), t(0, 1, 256), t(1, 0, 2)]);
    }

    #[test]
    fn tile_set_keeps_the_widest_copy_and_rejects_conflicts() {
        let h = leaves(256);
        let mut set = TileSet::new();
        set.insert(
            TileId {
                level: 0,
                index: 0,
                width: 5,
            },
            h.clone(),
        )
        .unwrap();
        assert_eq!(
            set.tile(TileId {
                level: 0,
                index: 0,
                width: 5
            })
            .unwrap(),
            &h[..5]
        );
        assert!(set
            .tile(TileId {
                level: 0,
                index: 0,
                width: 6
            })
            .is_none());
        set.insert(
            TileId {
                level: 0,
                index: 0,
                width: 9,
            },
            h[..9].to_vec(),
        )
        .unwrap();
        set.insert(
            TileId {
                level: 0,
                index: 0,
                width: 3,
            },
            h[..3].to_vec(),
        )
        .unwrap();
        assert_eq!(
            set.tile(TileId {
                level: 0,
                index: 0,
                width: 9
            })
            .unwrap(),
            &h[..9]
        );
        let e = set
            .insert(
                TileId {
                    level: 0,
                    index: 0,
                    width: 8,
                },
                h[1..9].to_vec(),
            )
            .unwrap_err();
        assert!(
            matches!(e, TileError::TileConflict { position: 0, .. }),
            "{e}"
        );
        let e = set
            .insert(
                TileId {
                    level: 0,
                    index: 1,
                    width: 8,
                },
                h[..7].to_vec(),
            )
            .unwrap_err();
        assert_eq!(e.to_string(), "tile tile/0/001.p/8 needs 8 hashes, got 7");
        let e = set
            .read_hashes(&[NodeId { level: 3, index: 1 }])
            .unwrap_err();
        assert!(matches!(e, MerkleError::MissingNode(_)), "{e}");
        let e = TileAppender::from_partial_tiles(300, &set).unwrap_err();
        assert_eq!(e.to_string(), "tile tile/0/001.p/44 is missing");
    }

    /// A cache may hand a proof the full tile where the tree it proves against saw only a
    /// prefix: proofs through wider shared tiles equal those through exact-width copies.
    #[test]
    fn shared_wider_tiles_give_the_same_proofs() {
        let (all, mem) = reference();
        let mut full_tiles = TileAppender::new();
        let mut widest: BTreeMap<(u8, u64), Arc<Tile>> = BTreeMap::new();
        for (id, hashes) in full_tiles.append(all).unwrap() {
            widest.insert((id.level, id.index), Arc::new(Tile::new(hashes)));
        }
        for size in [1u64, 255, 256, 257, 1000, 4095] {
            for index in [0, size / 3, size - 1] {
                let nodes = inclusion_proof_node_ids(index, size).unwrap();
                let mut shared = TileSet::new();
                for id in tiles_for_nodes(&nodes, size).unwrap() {
                    let tile = Arc::clone(&widest[&(id.level, id.index)]);
                    shared.insert_shared(id, tile).unwrap();
                }
                let proof = inclusion_proof(index, size, &shared).unwrap();
                assert_eq!(proof, inclusion_proof(index, size, mem).unwrap());
                verify_inclusion_proof(
                    &all[index as usize],
                    index,
                    size,
                    &proof,
                    &mem.root_at(size).unwrap(),
                )
                .unwrap();
            }
        }
        let tile = Arc::new(Tile::new(all[..10].to_vec()));
        let wide = TileId {
            level: 0,
            index: 0,
            width: 11,
        };
        let e = TileSet::new().insert_shared(wide, tile).unwrap_err();
        assert!(matches!(e, TileError::TileTooShort { .. }), "{e}");
        let t = Tile::new(all[..256].to_vec());
        let cold = t.weight();
        t.warm();
        assert_eq!(t.weight() - cold, 254 * 32);
    }

    #[test]
    fn append_reports_overflow_without_appending() {
        let mut set = TileSet::new();
        for id in partial_tile_ids(u64::MAX - 1) {
            set.insert(id, leaves(u64::from(id.width))).unwrap();
        }
        let mut a = TileAppender::from_partial_tiles(u64::MAX - 1, &set).unwrap();
        let before = a.root();
        let e = a.append(&leaves(2)).unwrap_err();
        assert!(matches!(e, TileError::TreeSizeOverflow { .. }), "{e}");
        assert_eq!((a.tree_size(), a.root()), (u64::MAX - 1, before));
        let out = a.append(&leaves(1)).unwrap();
        assert_eq!(a.tree_size(), u64::MAX);
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].0,
            TileId {
                level: 0,
                index: max_tile_index(0),
                width: 255
            }
        );
        assert_eq!(a.edge_widths(), vec![255; 8]);
    }

    /// Near the top of the u64 range the right edge alone must give the root that the tiles
    /// give, across tile boundaries at every level.
    #[test]
    fn huge_tree_sizes_append_without_overflow() {
        let mut rng = Rng(99);
        let starts = [
            (1u64 << 40) - 3,
            (1 << 48) - 256 * 256 - 5,
            (1 << 56) - 2,
            u64::MAX - 70_000,
            u64::MAX - 300,
        ];
        for start in starts {
            let mut storage = TileSet::new();
            for id in partial_tile_ids(start) {
                let fake: Vec<Hash> = (0..id.width)
                    .map(|i| leaf_hash(&[id.level, i as u8, 0xaa]))
                    .collect();
                storage.insert(id, fake).unwrap();
            }
            let mut a = TileAppender::from_partial_tiles(start, &storage).unwrap();
            assert_eq!(a.root(), tree_root(start, &storage).unwrap());
            let mut size = start;
            while size < start.saturating_add(600).min(u64::MAX - 1) {
                let chunk = (1 + rng.below(300)).min(u64::MAX - size);
                let out = a.append(&leaves(chunk)).unwrap();
                size += chunk;
                insert_all(&mut storage, out);
                assert_eq!(a.tree_size(), size);
                assert_eq!(a.root(), tree_root(size, &storage).unwrap(), "size {size}");
                let fresh = TileAppender::from_partial_tiles(size, &storage).unwrap();
                assert_eq!(fresh.root(), a.root());
            }
        }
    }

    /// For every size: the root from the appender, from the in-memory tree and from the tiles
    /// append returned all equal the brute-force root; and the size reached instead by random
    /// chunks gives the same root and the same stored tiles.
    #[test]
    fn every_size_to_1000_roots_and_tiles_match() {
        let (all, mem) = reference();
        let mut rng = Rng(1);
        let mut step = TileAppender::new();
        let mut storage = TileSet::new();
        // A chunked appender at its last chunk boundary; each size is one more chunk from it.
        let (mut chunked, mut chunked_storage, mut boundary) =
            (TileAppender::new(), TileSet::new(), 0);
        let mut next_boundary = 1;
        for n in 1..=1000u64 {
            insert_all(&mut storage, step.append(&[all[n as usize - 1]]).unwrap());
            let root = root_from_leaf_hashes(&all[..n as usize]);
            assert_eq!(step.root(), root, "appender root {n}");
            assert_eq!(mem.root_at(n).unwrap(), root, "memory root {n}");
            assert_eq!(tree_root(n, &storage).unwrap(), root, "tile root {n}");
            assert_fetchable(&storage, &root_node_ids(n), n);

            let mut c = chunked.clone();
            let mut cs = chunked_storage.clone();
            insert_all(
                &mut cs,
                c.append(&all[boundary as usize..n as usize]).unwrap(),
            );
            assert_eq!(c.root(), root, "chunked root {n}");
            assert_eq!(contents(&cs), contents(&storage), "chunked tiles {n}");
            if n == next_boundary {
                (chunked, chunked_storage, boundary) = (c, cs, n);
                next_boundary = n + [1, 2, 7, 100, 255, 256, 257, 520][rng.below(8) as usize];
            }
        }
    }

    /// Stepwise appends: after each single leaf, the TileSet of everything append returned
    /// serves the inclusion proofs of that size (every index up to 300, a sample beyond),
    /// equal to the in-memory tree's, also when only the tiles `tiles_for_nodes` names are
    /// fetched.
    #[test]
    fn every_size_to_1000_inclusion_from_tiles_matches_memory_tree() {
        let (all, mem) = reference();
        let mut rng = Rng(3);
        let mut step = TileAppender::new();
        let mut storage = TileSet::new();
        for n in 1..=1000u64 {
            insert_all(&mut storage, step.append(&[all[n as usize - 1]]).unwrap());
            let root = mem.root_at(n).unwrap();
            let indexes: Vec<u64> = if n <= 300 {
                (0..n).collect()
            } else {
                (0..10).map(|_| rng.below(n)).chain([0, n - 1]).collect()
            };
            for i in indexes {
                let expected = inclusion_proof(i, n, mem).unwrap();
                assert_eq!(
                    inclusion_proof(i, n, &storage).unwrap(),
                    expected,
                    "({i}, {n})"
                );
                assert_fetchable(&storage, &inclusion_proof_node_ids(i, n).unwrap(), n);
                verify_inclusion_proof(&all[i as usize], i, n, &expected, &root).unwrap();
            }
            if n % 5 == 0 {
                let i = rng.below(n);
                let fetched = fetch(&storage, &inclusion_proof_node_ids(i, n).unwrap(), n);
                let proof = inclusion_proof(i, n, &fetched).unwrap();
                assert_eq!(proof, inclusion_proof(i, n, mem).unwrap());
            }
        }
    }

    #[test]
    fn consistency_from_tiles_matches_memory_tree() {
        let (all, mem) = reference();
        let mut rng = Rng(2);
        let mut a = TileAppender::new();
        let mut storage = TileSet::new();
        let mut roots = vec![crate::merkle::empty_root()];
        for n in 1..=1000u64 {
            insert_all(&mut storage, a.append(&[all[n as usize - 1]]).unwrap());
            roots.push(a.root());
            let olds: Vec<u64> = if n <= 130 {
                (1..=n).collect()
            } else {
                (0..4)
                    .map(|_| 1 + rng.below(n))
                    .chain([1, n - 1, n])
                    .collect()
            };
            for m in olds {
                let expected = consistency_proof(m, n, mem).unwrap();
                assert_eq!(
                    consistency_proof(m, n, &storage).unwrap(),
                    expected,
                    "({m}, {n})"
                );
                let ids = consistency_proof_node_ids(m, n).unwrap();
                assert_fetchable(&storage, &ids, n);
                verify_consistency_proof(m, n, &expected, &roots[m as usize], &roots[n as usize])
                    .unwrap();
            }
            if n % 5 == 0 {
                let m = 1 + rng.below(n);
                let fetched = fetch(&storage, &consistency_proof_node_ids(m, n).unwrap(), n);
                let proof = consistency_proof(m, n, &fetched).unwrap();
                assert_eq!(proof, consistency_proof(m, n, mem).unwrap());
            }
        }
    }

    proptest! {
        // Each case appends thousands of leaves; hashing is slow in debug builds.
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn tile_and_memory_roots_and_proofs_agree(
            n in 1u64..2500, i_seed in any::<u64>(), m_seed in any::<u64>(), seed in any::<u64>(),
        ) {
            let (all, mem) = reference();
            let mut rng = Rng(seed);
            let mut a = TileAppender::new();
            let mut storage = TileSet::new();
            let mut done = 0;
            while done < n {
                let chunk = (1 + rng.below(700)).min(n - done);
                let batch = &all[done as usize..(done + chunk) as usize];
                insert_all(&mut storage, a.append(batch).unwrap());
                done += chunk;
            }
            let root = mem.root_at(n).unwrap();
            prop_assert_eq!(a.root(), root);
            prop_assert_eq!(tree_root(n, &storage).unwrap(), root);
            let i = i_seed % n;
            let ids = inclusion_proof_node_ids(i, n).unwrap();
            let proof = inclusion_proof(i, n, &fetch(&storage, &ids, n)).unwrap();
            prop_assert_eq!(&proof, &inclusion_proof(i, n, mem).unwrap());
            prop_assert!(verify_inclusion_proof(&all[i as usize], i, n, &proof, &root).is_ok());
            let m = 1 + m_seed % n;
            let ids = consistency_proof_node_ids(m, n).unwrap();
            let proof = consistency_proof(m, n, &fetch(&storage, &ids, n)).unwrap();
            prop_assert_eq!(&proof, &consistency_proof(m, n, mem).unwrap());
            let old = mem.root_at(m).unwrap();
            prop_assert!(verify_consistency_proof(m, n, &proof, &old, &root).is_ok());
        }

        #[test]
        fn rebuilt_appender_continues_identically(
            first in 0u64..1500, second in 0u64..1000, seed in any::<u64>(),
        ) {
            let (all, mem) = reference();
            let head = &all[..first as usize];
            let tail = &all[first as usize..(first + second) as usize];
            let mut a = TileAppender::new();
            let mut storage = TileSet::new();
            insert_all(&mut storage, a.append(head).unwrap());
            let mut b = TileAppender::from_partial_tiles(first, &storage).unwrap();
            prop_assert_eq!(b.root(), a.root());
            prop_assert_eq!(b.edge_widths(), a.edge_widths());
            let mut rng = Rng(seed);
            let mut done = 0;
            while done < second {
                let chunk = rng.below(second - done + 1).max(1);
                let batch = &tail[done as usize..(done + chunk) as usize];
                prop_assert_eq!(a.append(batch).unwrap(), b.append(batch).unwrap());
                done += chunk;
            }
            prop_assert_eq!(b.root(), a.root());
            prop_assert_eq!(b.root(), mem.root_at(first + second).unwrap());
        }
    }

    proptest! {
        #[test]
        fn tile_paths_round_trip(level in 0u8..=MAX_TILE_LEVEL, raw in any::<u64>(), width in 1u16..=256) {
            let index = raw % (max_tile_index(level) + 1);
            let id = TileId::new(level, index, width).unwrap();
            prop_assert_eq!(TileId::parse(&id.path()).unwrap(), id);
        }

        #[test]
        fn tile_parse_never_panics(s in "tile/[0-9ex/.p]{0,40}") {
            if let Ok(id) = TileId::parse(&s) {
                prop_assert_eq!(id.path(), s);
            }
        }
    }
}
