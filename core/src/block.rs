//! Block headers: one per committed writer batch, hash-chained to the previous block.

use sha2::{Digest, Sha256};

use crate::canonical::{push_json_integer, push_json_string};
use crate::merkle::{empty_root, Hash};

/// Why a header does not follow its predecessor.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BlockError {
    #[error("block {height}: height must be {expected} (previous block + 1)")]
    Height { height: u64, expected: u64 },
    #[error("block {height}: first_index is {first_index}, but the previous block ended at tree size {expected}")]
    FirstIndex {
        height: u64,
        first_index: u64,
        expected: u64,
    },
    #[error("block {height}: tree_size {tree_size} is smaller than first_index {first_index}")]
    TreeSize {
        height: u64,
        tree_size: u64,
        first_index: u64,
    },
    #[error("block {height}: prev_block_hash {found} is not the previous block's hash {expected}")]
    PrevHash {
        height: u64,
        found: String,
        expected: String,
    },
    #[error("block 0 is not the genesis block: it must have tree size 0, the empty root and a zero prev_block_hash")]
    Genesis,
}

/// A block header. Block `h` seals entries `[first_index, tree_size)`; `root_hash` is the
/// tree's root at `tree_size`; `sealed_at` is unix milliseconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockHeader {
    pub height: u64,
    pub first_index: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub prev_block_hash: Hash,
    pub sealed_at: i64,
}

impl BlockHeader {
    /// Height 0: the empty tree, with an all-zero previous hash.
    pub fn genesis(sealed_at: i64) -> Self {
        BlockHeader {
            height: 0,
            first_index: 0,
            tree_size: 0,
            root_hash: empty_root(),
            prev_block_hash: [0; 32],
            sealed_at,
        }
    }

    /// RFC 8785 JSON of the header, hashes in lowercase hex. Written by hand (sorted keys,
    /// integers far below 2^53) so it cannot fail.
    pub fn to_canonical_json(&self) -> Vec<u8> {
        let mut out = String::with_capacity(256);
        out.push_str("{\"first_index\":");
        push_json_integer(&mut out, i128::from(self.first_index));
        out.push_str(",\"height\":");
        push_json_integer(&mut out, i128::from(self.height));
        out.push_str(",\"prev_block_hash\":");
        push_json_string(&mut out, &hex::encode(self.prev_block_hash));
        out.push_str(",\"root_hash\":");
        push_json_string(&mut out, &hex::encode(self.root_hash));
        out.push_str(",\"sealed_at\":");
        push_json_integer(&mut out, i128::from(self.sealed_at));
        out.push_str(",\"tree_size\":");
        push_json_integer(&mut out, i128::from(self.tree_size));
        out.push('}');
        out.into_bytes()
    }

    /// SHA-256 of [`BlockHeader::to_canonical_json`].
    pub fn block_hash(&self) -> Hash {
        Sha256::digest(self.to_canonical_json()).into()
    }

    /// The block after `self`, sealing entries `[self.tree_size, tree_size)`.
    #[must_use]
    pub fn next(&self, tree_size: u64, root_hash: Hash, sealed_at: i64) -> BlockHeader {
        BlockHeader {
            // 2^64 blocks cannot happen; saturating keeps this total, and the duplicate
            // height it would produce is refused by the unique constraint on height.
            height: self.height.saturating_add(1),
            first_index: self.tree_size,
            tree_size,
            root_hash,
            prev_block_hash: self.block_hash(),
            sealed_at,
        }
    }

    /// Checks that `self` is the genesis header (whatever its `sealed_at`).
    ///
    /// # Errors
    /// [`BlockError::Genesis`].
    pub fn check_genesis(&self) -> Result<(), BlockError> {
        if *self == BlockHeader::genesis(self.sealed_at) {
            Ok(())
        } else {
            Err(BlockError::Genesis)
        }
    }

    /// Checks that `self` chains onto `prev`: next height, entries continuing where `prev`
    /// ended, and `prev_block_hash` equal to `prev`'s hash. The root is not checked here: it
    /// needs the entries (or tiles) and a consistency proof.
    ///
    /// # Errors
    /// The first [`BlockError`] found, naming the height and the mismatching values.
    pub fn check_follows(&self, prev: &BlockHeader) -> Result<(), BlockError> {
        let expected = prev.height.saturating_add(1);
        if self.height != expected {
            return Err(BlockError::Height {
                height: self.height,
                expected,
            });
        }
        if self.first_index != prev.tree_size {
            return Err(BlockError::FirstIndex {
                height: self.height,
                first_index: self.first_index,
                expected: prev.tree_size,
            });
        }
        if self.tree_size < self.first_index {
            return Err(BlockError::TreeSize {
                height: self.height,
                tree_size: self.tree_size,
                first_index: self.first_index,
            });
        }
        let expected_hash = prev.block_hash();
        if self.prev_block_hash != expected_hash {
            return Err(BlockError::PrevHash {
                height: self.height,
                found: hex::encode(self.prev_block_hash),
                expected: hex::encode(expected_hash),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canonical::to_canonical_json;
    use serde_json::json;

    #[test]
    fn genesis_canonical_json_is_pinned() {
        let g = BlockHeader::genesis(1_767_225_600_000);
        assert_eq!(
            String::from_utf8(g.to_canonical_json()).unwrap(),
            "{\"first_index\":0,\"height\":0,\
             \"prev_block_hash\":\"0000000000000000000000000000000000000000000000000000000000000000\",\
             \"root_hash\":\"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\",\
             \"sealed_at\":1767225600000,\"tree_size\":0}"
        );
        assert_eq!(
            hex::encode(g.block_hash()),
            hex::encode(Sha256::digest(g.to_canonical_json()))
        );
        assert!(g.check_genesis().is_ok());
    }

    #[test]
    fn next_block_canonical_json_is_pinned() {
        let g = BlockHeader::genesis(1_767_225_600_000);
        let root: Hash = [0xab; 32];
        let b1 = g.next(7, root, 1_767_225_600_123);
        assert_eq!(b1.height, 1);
        assert_eq!(b1.first_index, 0);
        assert_eq!(b1.prev_block_hash, g.block_hash());
        let expected = format!(
            "{{\"first_index\":0,\"height\":1,\"prev_block_hash\":\"{}\",\"root_hash\":\"{}\",\"sealed_at\":1767225600123,\"tree_size\":7}}",
            hex::encode(g.block_hash()),
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(b1.to_canonical_json()).unwrap(), expected);
        // The same bytes as the generic canonicaliser gives for the DESIGN.md field set.
        let v = json!({
            "height": 1, "first_index": 0, "tree_size": 7,
            "root_hash": "ab".repeat(32), "prev_block_hash": hex::encode(g.block_hash()),
            "sealed_at": 1_767_225_600_123_i64,
        });
        assert_eq!(b1.to_canonical_json(), to_canonical_json(&v).unwrap());
        let b2 = b1.next(9, [1; 32], 1_767_225_601_000);
        assert_eq!((b2.height, b2.first_index, b2.tree_size), (2, 7, 9));
        assert!(b2.check_follows(&b1).is_ok());
        assert!(b1.check_follows(&g).is_ok());
    }

    #[test]
    fn check_follows_names_each_break() {
        let g = BlockHeader::genesis(0);
        let b1 = g.next(3, [1; 32], 1);
        let mut bad = b1;
        bad.height = 2;
        assert!(matches!(
            bad.check_follows(&g),
            Err(BlockError::Height { expected: 1, .. })
        ));
        let mut bad = b1;
        bad.first_index = 1;
        assert!(matches!(
            bad.check_follows(&g),
            Err(BlockError::FirstIndex { .. })
        ));
        let mut bad = b1;
        bad.prev_block_hash[0] ^= 1;
        assert!(matches!(
            bad.check_follows(&g),
            Err(BlockError::PrevHash { .. })
        ));
        let b2 = b1.next(2, [2; 32], 2);
        assert!(matches!(
            b2.check_follows(&b1),
            Err(BlockError::TreeSize { .. })
        ));
        let mut not_genesis = g;
        not_genesis.tree_size = 1;
        assert_eq!(not_genesis.check_genesis(), Err(BlockError::Genesis));
    }

    #[test]
    fn any_field_change_changes_the_hash() {
        let b = BlockHeader::genesis(5).next(4, [3; 32], 6);
        let h = b.block_hash();
        let variants = [
            BlockHeader { height: 2, ..b },
            BlockHeader {
                first_index: 1,
                ..b
            },
            BlockHeader { tree_size: 5, ..b },
            BlockHeader {
                root_hash: [4; 32],
                ..b
            },
            BlockHeader {
                prev_block_hash: [0; 32],
                ..b
            },
            BlockHeader { sealed_at: 7, ..b },
        ];
        for v in variants {
            assert_ne!(v.block_hash(), h, "{v:?}");
        }
    }
}
