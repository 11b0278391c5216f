//! The Merkle and tile vectors of `tests/data/contract.json`, reproduced byte for byte both from
//! an in-memory tree and from tiles produced by the writer's appender.

use std::path::PathBuf;

use ace_core::merkle::{
    consistency_proof, consistency_proof_node_ids, empty_root, inclusion_proof,
    inclusion_proof_node_ids, leaf_hash, root_from_leaf_hashes, root_node_ids, tree_root,
    verify_consistency_proof, verify_inclusion_proof, Hash, MemoryTree, NodeId,
};
use ace_core::tiles::{
    tile_from_bytes, tile_to_bytes, tiles_for_nodes, TileAppender, TileId, TileSet,
};
use serde_json::Value;

struct Vectors {
    leaves: Vec<Vec<u8>>,
    empty_root: Hash,
    roots: Vec<(u64, Hash)>,
    inclusion: Vec<(u64, u64, Vec<Hash>)>,
    consistency: Vec<(u64, u64, Vec<Hash>)>,
    tile_0_0_p7: Vec<u8>,
}

fn bytes(v: &Value) -> Vec<u8> {
    hex::decode(v.as_str().expect("hex string")).expect("valid hex")
}

fn hash(v: &Value) -> Hash {
    bytes(v).try_into().expect("32-byte hash")
}

fn hashes(v: &Value) -> Vec<Hash> {
    v.as_array()
        .expect("array of hashes")
        .iter()
        .map(hash)
        .collect()
}

fn num(v: &Value, key: &str) -> u64 {
    v[key]
        .as_u64()
        .unwrap_or_else(|| panic!("{key} is not a u64 in {v}"))
}

fn load() -> Vectors {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/data/contract.json");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path:?}: {e}"));
    let all: Value = serde_json::from_str(&text).expect("contract.json is JSON");
    let m = &all["merkle"];
    let mut roots: Vec<(u64, Hash)> = m["roots"]
        .as_object()
        .expect("roots object")
        .iter()
        .map(|(size, root)| (size.parse().expect("size key"), hash(root)))
        .collect();
    roots.sort();
    let proofs = |key: &str, a: &str, b: &str, p: &str| -> Vec<(u64, u64, Vec<Hash>)> {
        m[key]
            .as_array()
            .unwrap_or_else(|| panic!("{key} array"))
            .iter()
            .map(|v| (num(v, a), num(v, b), hashes(&v[p])))
            .collect()
    };
    let v = Vectors {
        leaves: m["leaves"]
            .as_array()
            .expect("leaves")
            .iter()
            .map(bytes)
            .collect(),
        empty_root: hash(&m["empty_root"]),
        roots,
        inclusion: proofs("inclusion", "index", "tree_size", "path"),
        consistency: proofs("consistency", "from", "to", "proof"),
        tile_0_0_p7: bytes(&m["tile_0_0_p7"]),
    };
    // Guard against a silently shrunken vector file making the checks below vacuous.
    assert_eq!(v.leaves.len(), 8);
    assert_eq!(v.roots.len(), 8);
    assert!(
        v.inclusion.len() >= 20,
        "{} inclusion vectors",
        v.inclusion.len()
    );
    assert!(
        v.consistency.len() >= 6,
        "{} consistency vectors",
        v.consistency.len()
    );
    v
}

/// Everything the appender produced, appending one leaf at a time, as storage would hold it.
struct Tiled {
    /// `storage[n]`: the tiles stored once the tree had `n` leaves.
    storage: Vec<TileSet>,
    roots: Vec<Hash>,
}

fn tiled(leaf_hashes: &[Hash]) -> Tiled {
    let mut a = TileAppender::new();
    let mut set = TileSet::new();
    let mut storage = vec![set.clone()];
    let mut roots = vec![a.root()];
    for h in leaf_hashes {
        for (id, tile) in a.append(&[*h]).expect("append") {
            set.insert(id, tile).expect("insert");
        }
        storage.push(set.clone());
        roots.push(a.root());
    }
    Tiled { storage, roots }
}

/// Only the tiles a reader at `tree_size` would fetch for `nodes`.
fn fetch(storage: &TileSet, nodes: &[NodeId], tree_size: u64) -> TileSet {
    let mut set = TileSet::new();
    for id in tiles_for_nodes(nodes, tree_size).expect("nodes are in the tree") {
        let tile = storage
            .tile(id)
            .unwrap_or_else(|| panic!("storage at {tree_size} lacks {}", id.path()));
        set.insert(id, tile.to_vec()).expect("insert");
    }
    set
}

fn flipped(h: &Hash, bit: usize) -> Hash {
    let mut out = *h;
    out[bit / 8] ^= 1 << (bit % 8);
    out
}

fn leaf_hashes(v: &Vectors) -> Vec<Hash> {
    v.leaves.iter().map(|l| leaf_hash(l)).collect()
}

fn memory_tree(hashes: &[Hash]) -> MemoryTree {
    let mut t = MemoryTree::new();
    hashes.iter().for_each(|h| t.push(*h));
    t
}

#[test]
fn empty_root_matches() {
    let v = load();
    assert_eq!(empty_root(), v.empty_root);
    assert_eq!(root_from_leaf_hashes(&[]), v.empty_root);
    assert_eq!(MemoryTree::new().root(), v.empty_root);
    assert_eq!(TileAppender::new().root(), v.empty_root);
    assert_eq!(tree_root(0, &TileSet::new()).unwrap(), v.empty_root);
}

#[test]
fn roots_match_from_memory_and_tiles() {
    let v = load();
    let lh = leaf_hashes(&v);
    let mem = memory_tree(&lh);
    let t = tiled(&lh);
    for (size, root) in &v.roots {
        let n = *size as usize;
        assert_eq!(
            &root_from_leaf_hashes(&lh[..n]),
            root,
            "brute force, size {size}"
        );
        assert_eq!(
            &mem.root_at(*size).unwrap(),
            root,
            "memory tree, size {size}"
        );
        assert_eq!(&t.roots[n], root, "appender, size {size}");
        let fetched = fetch(&t.storage[n], &root_node_ids(*size), *size);
        assert_eq!(
            &tree_root(*size, &fetched).unwrap(),
            root,
            "tiles, size {size}"
        );
    }
}

#[test]
fn inclusion_proofs_match_from_memory_and_tiles_and_verify() {
    let v = load();
    let lh = leaf_hashes(&v);
    let mem = memory_tree(&lh);
    let t = tiled(&lh);
    for (index, size, path) in &v.inclusion {
        let (i, n) = (*index, *size);
        let at = format!("inclusion ({i}, {n})");
        assert_eq!(&inclusion_proof(i, n, &mem).unwrap(), path, "memory, {at}");
        let ids = inclusion_proof_node_ids(i, n).unwrap();
        let fetched = fetch(&t.storage[n as usize], &ids, n);
        assert_eq!(
            &inclusion_proof(i, n, &fetched).unwrap(),
            path,
            "tiles, {at}"
        );

        let root = t.roots[n as usize];
        let leaf = lh[i as usize];
        verify_inclusion_proof(&leaf, i, n, path, &root).unwrap_or_else(|e| panic!("{at}: {e}"));
        for bit in 0..256 {
            for e in 0..path.len() {
                let mut bad = path.clone();
                bad[e] = flipped(&bad[e], bit);
                assert!(
                    verify_inclusion_proof(&leaf, i, n, &bad, &root).is_err(),
                    "{at}"
                );
            }
            let bad_leaf = flipped(&leaf, bit);
            assert!(
                verify_inclusion_proof(&bad_leaf, i, n, path, &root).is_err(),
                "{at}"
            );
            let bad_root = flipped(&root, bit);
            assert!(
                verify_inclusion_proof(&leaf, i, n, path, &bad_root).is_err(),
                "{at}"
            );
        }
    }
}

#[test]
fn consistency_proofs_match_from_memory_and_tiles_and_verify() {
    let v = load();
    let lh = leaf_hashes(&v);
    let mem = memory_tree(&lh);
    let t = tiled(&lh);
    for (from, to, proof) in &v.consistency {
        let (m, n) = (*from, *to);
        let at = format!("consistency ({m}, {n})");
        assert_eq!(
            &consistency_proof(m, n, &mem).unwrap(),
            proof,
            "memory, {at}"
        );
        let ids = consistency_proof_node_ids(m, n).unwrap();
        let fetched = fetch(&t.storage[n as usize], &ids, n);
        assert_eq!(
            &consistency_proof(m, n, &fetched).unwrap(),
            proof,
            "tiles, {at}"
        );

        let (old, new) = (t.roots[m as usize], t.roots[n as usize]);
        verify_consistency_proof(m, n, proof, &old, &new).unwrap_or_else(|e| panic!("{at}: {e}"));
        for bit in 0..256 {
            for e in 0..proof.len() {
                let mut bad = proof.clone();
                bad[e] = flipped(&bad[e], bit);
                assert!(
                    verify_consistency_proof(m, n, &bad, &old, &new).is_err(),
                    "{at}"
                );
            }
            let bad_old = flipped(&old, bit);
            assert!(
                verify_consistency_proof(m, n, proof, &bad_old, &new).is_err(),
                "{at}"
            );
            let bad_new = flipped(&new, bit);
            assert!(
                verify_consistency_proof(m, n, proof, &old, &bad_new).is_err(),
                "{at}"
            );
        }
    }
}

#[test]
fn level_0_partial_tile_of_width_7_matches() {
    let v = load();
    let lh = leaf_hashes(&v);
    let mut a = TileAppender::new();
    let out = a.append(&lh[..7]).unwrap();
    let id = TileId {
        level: 0,
        index: 0,
        width: 7,
    };
    assert_eq!(out.len(), 1, "{out:?}");
    assert_eq!(out[0].0, id);
    assert_eq!(id.path(), "tile/0/000.p/7");
    assert_eq!(tile_to_bytes(&out[0].1), v.tile_0_0_p7);
    assert_eq!(tile_from_bytes(&v.tile_0_0_p7).unwrap(), lh[..7]);

    // The same tile taken from storage that has since grown to 8 leaves.
    let t = tiled(&lh);
    let stored = t.storage[8].tile(id).expect("tile 0/000 at width 7");
    assert_eq!(tile_to_bytes(stored), v.tile_0_0_p7);
}
