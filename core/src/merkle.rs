//! RFC 6962 / RFC 9162 Merkle tree math. Pure: no storage, no I/O.
//!
//! Every proof element of RFC 9162 is the hash of a node of the (unbalanced) tree; a node on the
//! right edge is not a perfect subtree, so it is stored nowhere. Storage only ever holds complete
//! (perfect) subtrees ([`NodeId`]), and right-edge nodes are folded from the complete subtrees
//! they decompose into. The `*_node_ids` functions therefore name exactly what to fetch, and the
//! proof builders read those through a one-method [`HashReader`].

use std::collections::HashMap;
use std::fmt;

use sha2::{Digest, Sha256};

/// A SHA-256 node or leaf hash.
pub type Hash = [u8; 32];

/// Leaf hash: SHA-256(0x00 ‖ leaf).
pub fn leaf_hash(leaf: &[u8]) -> Hash {
    let mut h = Sha256::new();
    h.update([0u8]);
    h.update(leaf);
    h.finalize().into()
}

/// Interior node hash: SHA-256(0x01 ‖ left ‖ right).
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    let mut h = Sha256::new();
    h.update([1u8]);
    h.update(left);
    h.update(right);
    h.finalize().into()
}

/// Root of the empty tree: SHA-256 of the empty string.
pub fn empty_root() -> Hash {
    Sha256::digest([]).into()
}

/// A complete (perfect) subtree: covers leaves [index << level, (index + 1) << level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId {
    pub level: u8,
    pub index: u64,
}

impl NodeId {
    /// Whether every leaf under this node is in a tree of `tree_size` leaves.
    pub fn is_complete_in(&self, tree_size: u64) -> bool {
        // u128: a level-63 node may end at 2^64.
        self.level < 64 && (u128::from(self.index) + 1) << self.level <= u128::from(tree_size)
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "node (level {}, index {})", self.level, self.index)
    }
}

/// Storage of complete-subtree hashes.
///
/// One batched method so that a backend can serve a whole proof in one round trip.
pub trait HashReader {
    /// The hashes of `ids`, in the same order.
    ///
    /// # Errors
    /// [`MerkleError::MissingNode`] if a hash is not available.
    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MerkleError>;
}

impl<T: HashReader + ?Sized> HashReader for &T {
    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MerkleError> {
        (**self).read_hashes(ids)
    }
}

/// Lets a caller that fetched node hashes asynchronously hand them to the proof builders.
impl<S: std::hash::BuildHasher> HashReader for HashMap<NodeId, Hash, S> {
    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MerkleError> {
        ids.iter()
            .map(|id| self.get(id).copied().ok_or(MerkleError::MissingNode(*id)))
            .collect()
    }
}

/// Merkle errors. Requests for impossible indexes or sizes are the caller's fault (HTTP 400);
/// `MissingNode` and `ReaderCount` are storage faults (HTTP 500/503); the verification errors
/// mean a proof, root or leaf is not what it claims (reject it).
#[derive(Debug, thiserror::Error)]
pub enum MerkleError {
    /// Asked for a leaf the tree does not have.
    #[error("index {index} is not in a tree of size {tree_size}")]
    IndexOutOfRange { index: u64, tree_size: u64 },
    /// RFC 9162 defines no consistency proof from the empty tree.
    #[error(
        "consistency proof from tree size 0 to {to} is not defined (RFC 9162 2.1.4 needs 0 < from <= to)"
    )]
    ConsistencyFromZero { to: u64 },
    /// The old tree is larger than the new one.
    #[error("consistency proof needs from <= to, got from {from} > to {to}")]
    BadSizes { from: u64, to: u64 },
    /// Asked a bounded tree for a size it has not reached.
    #[error("tree size {size} is beyond the {tree_size} leaves held")]
    SizeBeyondTree { size: u64, tree_size: u64 },
    /// The reader does not hold this hash.
    #[error("hash of {0} is not available")]
    MissingNode(NodeId),
    /// A [`HashReader`] broke its contract.
    #[error("hash reader returned {returned} hashes for {requested} requested nodes")]
    ReaderCount { requested: usize, returned: usize },
    /// The proof has the wrong number of hashes for its index and sizes.
    #[error("proof has {got} hashes, expected {expected}")]
    WrongProofLength { expected: usize, got: usize },
    /// The leaf hash and inclusion proof do not lead to the given root.
    #[error(
        "inclusion proof for index {index} in tree size {tree_size} gives root {computed}, expected {expected}"
    )]
    InclusionRootMismatch {
        index: u64,
        tree_size: u64,
        expected: String,
        computed: String,
    },
    /// The consistency proof does not lead to the given root of `tree_size`.
    #[error(
        "consistency proof gives root {computed} for tree size {tree_size}, expected {expected}"
    )]
    ConsistencyRootMismatch {
        tree_size: u64,
        expected: String,
        computed: String,
    },
}

/// Largest power of two strictly below `n`; `n` must be at least 2.
fn split_point(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// Hash of a sequence of subtree hashes, RFC 6962 style: the left-most is the largest, so the
/// fold runs from the right.
pub(crate) fn fold_right(hashes: &[Hash]) -> Option<Hash> {
    hashes
        .iter()
        .rev()
        .copied()
        .reduce(|right, left| node_hash(&left, &right))
}

/// Complete subtrees covering leaves [lo, hi), largest first.
///
/// Only called with RFC 9162 node ranges, whose `lo` is a multiple of a power of two at least
/// `hi - lo`, so every piece is aligned.
fn push_range_node_ids(lo: u64, hi: u64, out: &mut Vec<NodeId>) {
    let mut start = lo;
    let mut rest = hi - lo;
    while rest > 0 {
        let level = 63 - rest.leading_zeros();
        out.push(NodeId {
            level: level as u8,
            index: start >> level,
        });
        let size = 1u64 << level;
        rest -= size;
        start += size;
    }
}

/// The leaf ranges of RFC 9162 PATH(index, D[0:tree_size]), deepest first.
fn inclusion_ranges(index: u64, tree_size: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut lo, mut hi) = (0u64, tree_size);
    while hi - lo > 1 {
        let k = split_point(hi - lo);
        if index < lo + k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
        }
    }
    out.reverse();
    out
}

/// The leaf ranges of RFC 9162 PROOF(from, D[0:to]) for 0 < from < to, deepest first.
fn consistency_ranges(from: u64, to: u64) -> Vec<(u64, u64)> {
    let mut out = Vec::new();
    let (mut lo, mut hi, mut m) = (0u64, to, from);
    // RFC 9162 SUBPROOF's flag: true while the old tree is still a prefix the verifier knows.
    let mut known = true;
    while m != hi - lo {
        let k = split_point(hi - lo);
        if m <= k {
            out.push((lo + k, hi));
            hi = lo + k;
        } else {
            out.push((lo, lo + k));
            lo += k;
            m -= k;
            known = false;
        }
    }
    if !known {
        out.push((lo, hi));
    }
    out.reverse();
    out
}

fn check_inclusion(index: u64, tree_size: u64) -> Result<(), MerkleError> {
    if index >= tree_size {
        return Err(MerkleError::IndexOutOfRange { index, tree_size });
    }
    Ok(())
}

fn check_consistency(from: u64, to: u64) -> Result<(), MerkleError> {
    if from == 0 {
        return Err(MerkleError::ConsistencyFromZero { to });
    }
    if from > to {
        return Err(MerkleError::BadSizes { from, to });
    }
    Ok(())
}

fn ranges_node_ids(ranges: &[(u64, u64)]) -> Vec<NodeId> {
    let mut ids = Vec::new();
    for &(lo, hi) in ranges {
        push_range_node_ids(lo, hi, &mut ids);
    }
    ids
}

/// Reads every range's complete subtrees in one batch and folds each range to its hash.
fn ranges_hashes(ranges: &[(u64, u64)], r: &impl HashReader) -> Result<Vec<Hash>, MerkleError> {
    let mut ids = Vec::new();
    let mut ends = Vec::with_capacity(ranges.len());
    for &(lo, hi) in ranges {
        push_range_node_ids(lo, hi, &mut ids);
        ends.push(ids.len());
    }
    let hashes = r.read_hashes(&ids)?;
    if hashes.len() != ids.len() {
        return Err(MerkleError::ReaderCount {
            requested: ids.len(),
            returned: hashes.len(),
        });
    }
    let mut out = Vec::with_capacity(ranges.len());
    let mut start = 0;
    for end in ends {
        // Every range is non-empty, so each slice holds at least one hash.
        if let Some(h) = hashes.get(start..end).and_then(fold_right) {
            out.push(h);
        }
        start = end;
    }
    Ok(out)
}

/// The complete subtrees whose right fold is the root of a tree of `tree_size` leaves.
pub fn root_node_ids(tree_size: u64) -> Vec<NodeId> {
    let mut ids = Vec::new();
    push_range_node_ids(0, tree_size, &mut ids);
    ids
}

/// RFC 9162 MTH of the first `tree_size` leaves; [`empty_root`] for 0.
///
/// # Errors
/// Whatever `r` returns for the nodes of [`root_node_ids`].
pub fn tree_root(tree_size: u64, r: &impl HashReader) -> Result<Hash, MerkleError> {
    if tree_size == 0 {
        return Ok(empty_root());
    }
    let hashes = ranges_hashes(&[(0, tree_size)], r)?;
    Ok(hashes.first().copied().unwrap_or_else(empty_root))
}

/// Complete subtrees to fetch for [`inclusion_proof`]`(index, tree_size, ..)`.
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`] if `index >= tree_size`.
pub fn inclusion_proof_node_ids(index: u64, tree_size: u64) -> Result<Vec<NodeId>, MerkleError> {
    check_inclusion(index, tree_size)?;
    Ok(ranges_node_ids(&inclusion_ranges(index, tree_size)))
}

/// RFC 9162 inclusion proof (RFC 6962 PATH) of leaf `index` in the tree of `tree_size` leaves.
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`], or what `r` returns.
pub fn inclusion_proof(
    index: u64,
    tree_size: u64,
    r: &impl HashReader,
) -> Result<Vec<Hash>, MerkleError> {
    check_inclusion(index, tree_size)?;
    ranges_hashes(&inclusion_ranges(index, tree_size), r)
}

/// Complete subtrees to fetch for [`consistency_proof`]`(from, to, ..)`.
///
/// # Errors
/// [`MerkleError::ConsistencyFromZero`] or [`MerkleError::BadSizes`].
pub fn consistency_proof_node_ids(from: u64, to: u64) -> Result<Vec<NodeId>, MerkleError> {
    check_consistency(from, to)?;
    if from == to {
        return Ok(Vec::new());
    }
    Ok(ranges_node_ids(&consistency_ranges(from, to)))
}

/// RFC 9162 consistency proof (RFC 6962 PROOF) between tree sizes `from` and `to`.
///
/// # Errors
/// [`MerkleError::ConsistencyFromZero`], [`MerkleError::BadSizes`], or what `r` returns.
pub fn consistency_proof(
    from: u64,
    to: u64,
    r: &impl HashReader,
) -> Result<Vec<Hash>, MerkleError> {
    check_consistency(from, to)?;
    if from == to {
        return Ok(Vec::new());
    }
    ranges_hashes(&consistency_ranges(from, to), r)
}

/// RFC 9162 2.1.3.2: checks that `leaf_hash` is at `index` in the tree of `tree_size` with `root`.
///
/// # Errors
/// [`MerkleError::IndexOutOfRange`], [`MerkleError::WrongProofLength`] or
/// [`MerkleError::InclusionRootMismatch`].
pub fn verify_inclusion_proof(
    leaf_hash: &Hash,
    index: u64,
    tree_size: u64,
    proof: &[Hash],
    root: &Hash,
) -> Result<(), MerkleError> {
    check_inclusion(index, tree_size)?;
    let expected = inclusion_ranges(index, tree_size).len();
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    let (mut f, mut s) = (index, tree_size - 1);
    let mut r = *leaf_hash;
    for p in proof {
        if s == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if f & 1 == 1 || f == s {
            r = node_hash(p, &r);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if r != *root {
        return Err(MerkleError::InclusionRootMismatch {
            index,
            tree_size,
            expected: hex::encode(root),
            computed: hex::encode(r),
        });
    }
    Ok(())
}

/// RFC 9162 2.1.4.2: checks that the tree of `from` leaves with `from_root` is a prefix of the
/// tree of `to` leaves with `to_root`.
///
/// # Errors
/// [`MerkleError::ConsistencyFromZero`], [`MerkleError::BadSizes`],
/// [`MerkleError::WrongProofLength`] or [`MerkleError::ConsistencyRootMismatch`].
pub fn verify_consistency_proof(
    from: u64,
    to: u64,
    proof: &[Hash],
    from_root: &Hash,
    to_root: &Hash,
) -> Result<(), MerkleError> {
    check_consistency(from, to)?;
    let mismatch =
        |tree_size: u64, expected: &Hash, computed: &Hash| MerkleError::ConsistencyRootMismatch {
            tree_size,
            expected: hex::encode(expected),
            computed: hex::encode(computed),
        };
    let expected = if from == to {
        0
    } else {
        consistency_ranges(from, to).len()
    };
    if proof.len() != expected {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if from == to {
        if from_root != to_root {
            return Err(mismatch(to, to_root, from_root));
        }
        return Ok(());
    }
    // A power-of-two old tree is a node of the new one; the proof leaves it out because the
    // verifier already holds its hash.
    let (first, rest) = if from.is_power_of_two() {
        (from_root, proof)
    } else {
        match proof.split_first() {
            Some(split) => split,
            None => return Err(MerkleError::WrongProofLength { expected, got: 0 }),
        }
    };
    let (mut f, mut s) = (from - 1, to - 1);
    while f & 1 == 1 {
        f >>= 1;
        s >>= 1;
    }
    let (mut fr, mut sr) = (*first, *first);
    for c in rest {
        if s == 0 {
            return Err(MerkleError::WrongProofLength {
                expected,
                got: proof.len(),
            });
        }
        if f & 1 == 1 || f == s {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while f & 1 == 0 && f != 0 {
                f >>= 1;
                s >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        f >>= 1;
        s >>= 1;
    }
    if s != 0 {
        return Err(MerkleError::WrongProofLength {
            expected,
            got: proof.len(),
        });
    }
    if fr != *from_root {
        return Err(mismatch(from, from_root, &fr));
    }
    if sr != *to_root {
        return Err(mismatch(to, to_root, &sr));
    }
    Ok(())
}

/// In-memory tree over leaf hashes that keeps every level; for tests, tools and brute-force
/// checks, not for the log itself (it holds every hash in memory).
#[derive(Debug, Clone, Default)]
pub struct MemoryTree {
    /// `levels[l][i]` is the hash of `NodeId { level: l, index: i }`.
    levels: Vec<Vec<Hash>>,
}

impl MemoryTree {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, leaf_hash: Hash) {
        let mut carry = leaf_hash;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let Some(nodes) = self.levels.get_mut(level) else {
                return;
            };
            nodes.push(carry);
            // A level whose length just became even has completed a parent.
            match nodes.as_slice() {
                [.., left, right] if nodes.len() % 2 == 0 => carry = node_hash(left, right),
                _ => return,
            }
            level += 1;
        }
    }

    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |leaves| leaves.len() as u64)
    }

    /// The root of all leaves pushed so far.
    pub fn root(&self) -> Hash {
        // The root's subtrees are exactly the last node of each odd-length level: bit l of the
        // size is set iff level l has an odd number of complete nodes.
        let parts: Vec<Hash> = self
            .levels
            .iter()
            .rev()
            .filter(|nodes| nodes.len() % 2 == 1)
            .filter_map(|nodes| nodes.last().copied())
            .collect();
        fold_right(&parts).unwrap_or_else(empty_root)
    }

    /// The root of the first `size` leaves.
    ///
    /// # Errors
    /// [`MerkleError::SizeBeyondTree`] if fewer than `size` leaves were pushed.
    pub fn root_at(&self, size: u64) -> Result<Hash, MerkleError> {
        if size > self.size() {
            return Err(MerkleError::SizeBeyondTree {
                size,
                tree_size: self.size(),
            });
        }
        tree_root(size, self)
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MerkleError> {
        ids.iter()
            .map(|id| {
                usize::try_from(id.index)
                    .ok()
                    .and_then(|i| self.levels.get(usize::from(id.level))?.get(i))
                    .copied()
                    .ok_or(MerkleError::MissingNode(*id))
            })
            .collect()
    }
}

/// Brute-force RFC 6962 MTH over leaf hashes, straight from the recursive definition.
pub fn root_from_leaf_hashes(leaves: &[Hash]) -> Hash {
    match leaves {
        [] => empty_root(),
        [one] => *one,
        _ => {
            let k = split_point(leaves.len() as u64) as usize;
            let (left, right) = leaves.split_at(k);
            node_hash(&root_from_leaf_hashes(left), &root_from_leaf_hashes(right))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn leaves(n: u64) -> Vec<Hash> {
        (0..n).map(|i| leaf_hash(&i.to_be_bytes())).collect()
    }

    fn tree(n: u64) -> MemoryTree {
        let mut t = MemoryTree::new();
        for h in leaves(n) {
            t.push(h);
        }
        t
    }

    /// Built once and read at any size below it: hashing dominates test time in debug builds.
    fn big() -> &'static MemoryTree {
        static BIG: std::sync::OnceLock<MemoryTree> = std::sync::OnceLock::new();
        BIG.get_or_init(|| tree(4096))
    }

    /// RFC 6962 2.1.1 PATH, written from the text over slices: an oracle independent of the
    /// range arithmetic above.
    fn rfc_path(m: usize, d: &[Hash]) -> Vec<Hash> {
        if d.len() <= 1 {
            return Vec::new();
        }
        let k = split_point(d.len() as u64) as usize;
        let (left, right) = d.split_at(k);
        if m < k {
            let mut p = rfc_path(m, left);
            p.push(root_from_leaf_hashes(right));
            p
        } else {
            let mut p = rfc_path(m - k, right);
            p.push(root_from_leaf_hashes(left));
            p
        }
    }

    /// RFC 6962 2.1.2 SUBPROOF, written from the text.
    fn rfc_subproof(m: usize, d: &[Hash], b: bool) -> Vec<Hash> {
        if m == d.len() {
            return if b {
                Vec::new()
            } else {
                vec![root_from_leaf_hashes(d)]
            };
        }
        let k = split_point(d.len() as u64) as usize;
        let (left, right) = d.split_at(k);
        if m <= k {
            let mut p = rfc_subproof(m, left, b);
            p.push(root_from_leaf_hashes(right));
            p
        } else {
            let mut p = rfc_subproof(m - k, right, false);
            p.push(root_from_leaf_hashes(left));
            p
        }
    }

    fn flip(h: &Hash, bit: usize) -> Hash {
        let mut out = *h;
        out[(bit / 8) % 32] ^= 1 << (bit % 8);
        out
    }

    #[test]
    fn roots_agree_with_brute_force_for_sizes_0_to_300() {
        let all = leaves(300);
        let mut t = MemoryTree::new();
        assert_eq!(t.root(), empty_root());
        assert_eq!(root_from_leaf_hashes(&[]), empty_root());
        for n in 1..=300usize {
            t.push(all[n - 1]);
            let expected = root_from_leaf_hashes(&all[..n]);
            assert_eq!(t.root(), expected, "root of size {n}");
            assert_eq!(tree_root(n as u64, &t).unwrap(), expected, "tree_root {n}");
            let m = n / 2;
            assert_eq!(
                t.root_at(m as u64).unwrap(),
                root_from_leaf_hashes(&all[..m])
            );
        }
        assert!(matches!(
            t.root_at(301),
            Err(MerkleError::SizeBeyondTree {
                size: 301,
                tree_size: 300
            })
        ));
    }

    #[test]
    fn proofs_match_rfc_text_for_all_pairs_up_to_70() {
        let all = leaves(70);
        let t = tree(70);
        for n in 1..=70u64 {
            let d = &all[..n as usize];
            let root = root_from_leaf_hashes(d);
            for i in 0..n {
                let proof = inclusion_proof(i, n, &t).unwrap();
                assert_eq!(proof, rfc_path(i as usize, d), "PATH({i}, {n})");
                verify_inclusion_proof(&all[i as usize], i, n, &proof, &root).unwrap();
                let ids = inclusion_proof_node_ids(i, n).unwrap();
                assert!(ids.iter().all(|id| id.is_complete_in(n)), "{ids:?} in {n}");
            }
            for m in 1..=n {
                let proof = consistency_proof(m, n, &t).unwrap();
                assert_eq!(proof, rfc_subproof(m as usize, d, true), "PROOF({m}, {n})");
                let old = root_from_leaf_hashes(&all[..m as usize]);
                verify_consistency_proof(m, n, &proof, &old, &root).unwrap();
                let ids = consistency_proof_node_ids(m, n).unwrap();
                assert!(ids.iter().all(|id| id.is_complete_in(n)), "{ids:?} in {n}");
            }
        }
    }

    #[test]
    fn verify_rejects_every_single_bit_flip_and_wrong_positions() {
        let all = leaves(13);
        let t = tree(13);
        let root = t.root();
        for i in 0..13u64 {
            let proof = inclusion_proof(i, 13, &t).unwrap();
            let leaf = all[i as usize];
            for e in 0..proof.len() {
                for bit in 0..256 {
                    let mut bad = proof.clone();
                    bad[e] = flip(&bad[e], bit);
                    assert!(verify_inclusion_proof(&leaf, i, 13, &bad, &root).is_err());
                }
            }
            for bit in 0..256 {
                assert!(verify_inclusion_proof(&flip(&leaf, bit), i, 13, &proof, &root).is_err());
                assert!(verify_inclusion_proof(&leaf, i, 13, &proof, &flip(&root, bit)).is_err());
            }
            for other in (0..13).filter(|&o| o != i) {
                assert!(verify_inclusion_proof(&leaf, other, 13, &proof, &root).is_err());
            }
            // Not checked: other tree sizes. A proof's shape can be the same for several sizes
            // (index 0 of 9..=16 leaves), which is why a checkpoint signs size and root together.
            let mut longer = proof.clone();
            longer.push(root);
            assert!(matches!(
                verify_inclusion_proof(&leaf, i, 13, &longer, &root),
                Err(MerkleError::WrongProofLength { .. })
            ));
        }
        for m in 1..13u64 {
            let proof = consistency_proof(m, 13, &t).unwrap();
            let old = t.root_at(m).unwrap();
            for e in 0..proof.len() {
                for bit in 0..256 {
                    let mut bad = proof.clone();
                    bad[e] = flip(&bad[e], bit);
                    assert!(verify_consistency_proof(m, 13, &bad, &old, &root).is_err());
                }
            }
            for bit in 0..256 {
                assert!(verify_consistency_proof(m, 13, &proof, &flip(&old, bit), &root).is_err());
                assert!(verify_consistency_proof(m, 13, &proof, &old, &flip(&root, bit)).is_err());
            }
            let short = &proof[..proof.len() - 1];
            assert!(verify_consistency_proof(m, 13, short, &old, &root).is_err());
        }
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let t = tree(5);
        let e = inclusion_proof(5, 5, &t).unwrap_err();
        assert_eq!(e.to_string(), "index 5 is not in a tree of size 5");
        let e = consistency_proof(0, 5, &t).unwrap_err();
        assert!(
            matches!(e, MerkleError::ConsistencyFromZero { to: 5 }),
            "{e}"
        );
        assert!(e.to_string().contains("tree size 0"), "{e}");
        let e = consistency_proof_node_ids(6, 5).unwrap_err();
        assert!(matches!(e, MerkleError::BadSizes { from: 6, to: 5 }), "{e}");
        assert!(verify_consistency_proof(0, 5, &[], &t.root(), &t.root()).is_err());
        let e = consistency_proof(3, 8, &t).unwrap_err();
        assert!(matches!(e, MerkleError::MissingNode(_)), "{e}");
        assert!(e.to_string().contains("level"), "{e}");
        let root = t.root();
        let proof = inclusion_proof(1, 5, &t).unwrap();
        let e = verify_inclusion_proof(&[0; 32], 1, 5, &proof, &root).unwrap_err();
        assert!(e.to_string().contains(&hex::encode(root)), "{e}");
        let e = verify_inclusion_proof(&[0; 32], 1, 5, &proof[..1], &root).unwrap_err();
        assert_eq!(e.to_string(), "proof has 1 hashes, expected 3");
        // Same size: the proof is empty and the roots must be equal.
        verify_consistency_proof(5, 5, &[], &root, &root).unwrap();
        assert!(verify_consistency_proof(5, 5, &[], &root, &[0; 32]).is_err());
        assert!(verify_consistency_proof(5, 5, &[root], &root, &root).is_err());
    }

    #[test]
    fn hash_reader_count_mismatch_is_an_error() {
        struct Short;
        impl HashReader for Short {
            fn read_hashes(&self, _: &[NodeId]) -> Result<Vec<Hash>, MerkleError> {
                Ok(vec![[0; 32]])
            }
        }
        assert!(matches!(
            inclusion_proof(0, 8, &Short),
            Err(MerkleError::ReaderCount {
                requested: 3,
                returned: 1
            })
        ));
        assert!(tree_root(3, &Short).is_err());
    }

    #[test]
    fn node_ids_fit_the_tree_and_map_reader_serves_them() {
        let t = tree(77);
        let ids = consistency_proof_node_ids(13, 77).unwrap();
        let map: HashMap<NodeId, Hash> = ids
            .iter()
            .copied()
            .zip(t.read_hashes(&ids).unwrap())
            .collect();
        assert_eq!(
            consistency_proof(13, 77, &map).unwrap(),
            consistency_proof(13, 77, &t).unwrap()
        );
        assert_eq!(root_node_ids(0), vec![]);
        assert_eq!(
            root_node_ids(13),
            vec![
                NodeId { level: 3, index: 0 },
                NodeId { level: 2, index: 2 },
                NodeId {
                    level: 0,
                    index: 12
                },
            ]
        );
    }

    /// Every leaf equal: the hash of a complete subtree depends only on its level, so trees of
    /// any u64 size are cheap to read from.
    struct Uniform(Vec<Hash>);

    impl Uniform {
        fn new() -> Self {
            let mut levels = vec![leaf_hash(b"same")];
            for l in 1..64 {
                let below = levels[l - 1];
                levels.push(node_hash(&below, &below));
            }
            Uniform(levels)
        }
    }

    impl HashReader for Uniform {
        fn read_hashes(&self, ids: &[NodeId]) -> Result<Vec<Hash>, MerkleError> {
            ids.iter()
                .map(|id| {
                    self.0
                        .get(usize::from(id.level))
                        .copied()
                        .ok_or(MerkleError::MissingNode(*id))
                })
                .collect()
        }
    }

    #[test]
    fn extreme_sizes_do_not_overflow_and_verify() {
        let u = Uniform::new();
        let leaf = u.0[0];
        assert_eq!(root_node_ids(u64::MAX).len(), 64);
        for n in [
            u64::MAX,
            u64::MAX - 1,
            1 << 63,
            (1 << 63) + 1,
            (1 << 40) + 12345,
        ] {
            let root = tree_root(n, &u).unwrap();
            for i in [0, 1, n / 2, n - 2, n - 1] {
                let ids = inclusion_proof_node_ids(i, n).unwrap();
                assert!(ids.iter().all(|id| id.is_complete_in(n)));
                let proof = inclusion_proof(i, n, &u).unwrap();
                verify_inclusion_proof(&leaf, i, n, &proof, &root).unwrap();
                let bad = flip(&proof[proof.len() / 2], 77);
                let mut bad_proof = proof.clone();
                bad_proof[proof.len() / 2] = bad;
                assert!(verify_inclusion_proof(&leaf, i, n, &bad_proof, &root).is_err());
            }
            for m in [1, 2, 3, n / 3, n - 1, n] {
                let ids = consistency_proof_node_ids(m, n).unwrap();
                assert!(ids.iter().all(|id| id.is_complete_in(n)));
                let proof = consistency_proof(m, n, &u).unwrap();
                let old = tree_root(m, &u).unwrap();
                verify_consistency_proof(m, n, &proof, &old, &root).unwrap();
                assert!(verify_consistency_proof(m, n, &proof, &flip(&old, 3), &root).is_err());
            }
        }
    }

    proptest! {
        #[test]
        fn inclusion_verifies_and_any_flipped_bit_fails(
            n in 1u64..4096, i_seed in any::<u64>(), bit in 0usize..256, which in any::<usize>(),
        ) {
            let i = i_seed % n;
            let t = big();
            let root = t.root_at(n).unwrap();
            let leaf = leaf_hash(&i.to_be_bytes());
            let proof = inclusion_proof(i, n, t).unwrap();
            prop_assert!(verify_inclusion_proof(&leaf, i, n, &proof, &root).is_ok());
            // Pick one of: a proof element, the leaf, the root.
            let target = which % (proof.len() + 2);
            let (mut l, mut p, mut r) = (leaf, proof.clone(), root);
            match target.checked_sub(2) {
                Some(e) => p[e] = flip(&p[e], bit),
                None if target == 0 => l = flip(&l, bit),
                None => r = flip(&r, bit),
            }
            prop_assert!(verify_inclusion_proof(&l, i, n, &p, &r).is_err());
        }

        #[test]
        fn consistency_holds_for_m_le_n(
            n in 1u64..4096, m_seed in any::<u64>(), bit in 0usize..256, which in any::<usize>(),
        ) {
            let m = 1 + m_seed % n;
            let t = big();
            let (old, new) = (t.root_at(m).unwrap(), t.root_at(n).unwrap());
            let proof = consistency_proof(m, n, t).unwrap();
            prop_assert!(verify_consistency_proof(m, n, &proof, &old, &new).is_ok());
            let target = which % (proof.len() + 2);
            let (mut o, mut p, mut r) = (old, proof.clone(), new);
            match target.checked_sub(2) {
                Some(e) => p[e] = flip(&p[e], bit),
                None if target == 0 => o = flip(&o, bit),
                None => r = flip(&r, bit),
            }
            prop_assert!(verify_consistency_proof(m, n, &p, &o, &r).is_err());
        }
    }
}
