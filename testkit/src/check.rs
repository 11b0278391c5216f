//! A whole-log checker for tests: recomputes the stored log from its rows and panics,
//! naming the entry or block, at the first thing that does not match. (`acectl audit` is
//! the production audit; this is the small, obviously-correct one tests lean on.)

use std::collections::HashMap;

use ace_core::checkpoint::{open_checkpoint, NoteSigner};
use ace_core::envelope::{envelope_sha256, Envelope};
use ace_core::leaf::LeafRecord;
use ace_core::merkle::{leaf_hash, MemoryTree};

/// What the checker found.
#[derive(Debug)]
pub struct LogReport {
    /// Entries of producers: what was published (the ledger's own key events are not
    /// counted here).
    pub entries: u64,
    /// The ledger's own entries (key events, producer `_ledger`).
    pub key_events: u64,
    /// Every entry.
    pub tree_size: u64,
    pub blocks: u64,
    /// Digests of the producers' entries, with their indexes.
    pub digests: HashMap<String, u64>,
}

/// Verify the whole stored log: gapless indexes; each leaf recomputed from its envelope;
/// every block's root recomputed from the stored leaves; the block hash chain; every
/// checkpoint's signature and contents.
pub async fn check_log(c: &tokio_postgres::Client, signer: &NoteSigner) -> LogReport {
    let rows = c
        .query(
            "SELECT idx, digest, producer, envelope, leaf, integrated_time, block_height FROM ledger_entries ORDER BY idx",
            &[],
        )
        .await
        .unwrap();
    let mut tree = MemoryTree::new();
    let mut digests = HashMap::new();
    let mut leaf_blocks = Vec::new();
    let mut key_events = 0u64;
    for (i, r) in rows.iter().enumerate() {
        let idx: i64 = r.get(0);
        assert_eq!(idx as usize, i, "index gap at {i}");
        let digest: String = r.get(1);
        let envelope: Vec<u8> = r.get(3);
        let leaf: Vec<u8> = r.get(4);
        let env = Envelope::parse(&envelope).expect("stored envelope parses");
        assert_eq!(env.digest().as_str(), digest, "entry {idx}: digest");
        let expected = LeafRecord {
            digest: digest.clone(),
            envelope_sha256: envelope_sha256(&envelope),
            index: idx as u64,
            integrated_time: r.get(5),
            producer: r.get(2),
        };
        assert_eq!(expected.to_bytes(), leaf, "entry {idx}: leaf record");
        tree.push(leaf_hash(&leaf));
        let producer: String = r.get(2);
        if producer == ace_core::ids::ProducerId::LEDGER {
            key_events += 1;
        } else {
            assert!(
                digests.insert(digest, idx as u64).is_none(),
                "entry {idx}: digest appears twice"
            );
        }
        leaf_blocks.push(r.get::<_, i64>(6));
    }
    let blocks = c
        .query(
            "SELECT height, first_index, tree_size, root_hash, block_hash, prev_block_hash, sealed_at, checkpoint FROM ledger_blocks ORDER BY height",
            &[],
        )
        .await
        .unwrap();
    let verifier = signer.verifier();
    let mut prev: Option<ace_core::block::BlockHeader> = None;
    for (h, b) in blocks.iter().enumerate() {
        let height: i64 = b.get(0);
        assert_eq!(height as usize, h, "block height gap at {h}");
        let header = ace_core::block::BlockHeader {
            height: height as u64,
            first_index: b.get::<_, i64>(1) as u64,
            tree_size: b.get::<_, i64>(2) as u64,
            root_hash: b.get::<_, Vec<u8>>(3).try_into().unwrap(),
            prev_block_hash: b.get::<_, Vec<u8>>(5).try_into().unwrap(),
            sealed_at: b.get(6),
        };
        let block_hash: Vec<u8> = b.get(4);
        assert_eq!(
            header.block_hash().to_vec(),
            block_hash,
            "block {h}: block hash"
        );
        match &prev {
            None => {
                assert_eq!(header.tree_size, 0, "genesis has tree size 0");
                assert_eq!(header.prev_block_hash, [0u8; 32]);
            }
            Some(p) => {
                assert_eq!(header.prev_block_hash, p.block_hash(), "block {h}: chain");
                assert_eq!(header.first_index, p.tree_size, "block {h}: first index");
                assert!(header.tree_size > p.tree_size, "block {h}: grows the log");
            }
        }
        assert_eq!(
            tree.root_at(header.tree_size).unwrap(),
            header.root_hash,
            "block {h}: root recomputed from stored leaves"
        );
        let cp = open_checkpoint(&b.get::<_, String>(7), std::slice::from_ref(&verifier))
            .unwrap_or_else(|e| panic!("block {h}: checkpoint does not verify: {e}"));
        assert_eq!(cp.tree_size, header.tree_size, "block {h}: checkpoint size");
        assert_eq!(cp.root_hash, header.root_hash, "block {h}: checkpoint root");
        assert_eq!(cp.origin, signer.name());
        for i in header.first_index..header.tree_size {
            assert_eq!(leaf_blocks[i as usize], height, "entry {i}: block");
        }
        prev = Some(header);
    }
    let last = prev.expect("at least genesis");
    assert_eq!(
        last.tree_size,
        tree.size(),
        "latest block covers every entry"
    );
    LogReport {
        entries: tree.size() - key_events,
        key_events,
        tree_size: tree.size(),
        blocks: blocks.len() as u64,
        digests,
    }
}
