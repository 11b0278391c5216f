//! The synthetic loader on the real Postgres: ledgers built in several calls pass the
//! shared log checks (`ace_testkit::check_log`), and their tiles,
//! subjects and row shapes are the writer's.

use std::collections::{BTreeMap, BTreeSet};

use ace_core::checkpoint::NoteSigner;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::keys::{verify_envelope, RegisteredKey};
use ace_core::merkle::{leaf_hash, tree_root, Hash};
use ace_core::statement::Statement;
use ace_core::tiles::{tile_from_bytes, TileAppender, TileId, TileSet};
use ace_testkit::synth::{self, SynthError, SynthOptions};
use ace_testkit::{check_log, TestDb};

fn signer() -> NoteSigner {
    NoteSigner::from_seed("synth.test/log", [3; 32]).unwrap()
}

/// The stored tiles are exactly those a `TileAppender` fed block by block returns, and they
/// reproduce every block's root.
async fn check_tiles(c: &tokio_postgres::Client) {
    let leaves: Vec<Hash> = c
        .query("SELECT leaf FROM ledger_entries ORDER BY idx", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| leaf_hash(r.get::<_, &[u8]>(0)))
        .collect();
    let sizes: Vec<(u64, Hash)> = c
        .query(
            "SELECT tree_size, root_hash FROM ledger_blocks ORDER BY height",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|r| {
            (
                r.get::<_, i64>(0) as u64,
                r.get::<_, Vec<u8>>(1).try_into().unwrap(),
            )
        })
        .collect();
    let mut expected: BTreeMap<TileId, Vec<Hash>> = BTreeMap::new();
    let mut appender = TileAppender::new();
    for w in sizes.windows(2) {
        let (from, to) = (w[0].0, w[1].0);
        for (id, hashes) in appender
            .append(&leaves[from as usize..to as usize])
            .unwrap()
        {
            assert!(expected.insert(id, hashes).is_none(), "{} twice", id.path());
        }
        assert_eq!(appender.root(), w[1].1);
    }
    let mut stored: BTreeMap<TileId, Vec<Hash>> = BTreeMap::new();
    let mut set = TileSet::new();
    for r in c
        .query("SELECT level, idx, width, hashes FROM ledger_tiles", &[])
        .await
        .unwrap()
    {
        let id = TileId::new(
            r.get::<_, i16>(0) as u8,
            r.get::<_, i64>(1) as u64,
            r.get::<_, i16>(2) as u16,
        )
        .unwrap();
        let hashes = tile_from_bytes(r.get(3)).unwrap();
        set.insert(id, hashes.clone()).unwrap();
        stored.insert(id, hashes);
    }
    assert_eq!(
        stored.keys().collect::<Vec<_>>(),
        expected.keys().collect::<Vec<_>>(),
        "tile rows"
    );
    assert_eq!(stored, expected, "tile contents");
    for (size, root) in sizes {
        assert_eq!(
            tree_root(size, &set).unwrap(),
            root,
            "root at {size} from tiles"
        );
    }
}

/// Row shapes the writer makes: subjects of the statement, keyid of a registered key that
/// signed the envelope, in-toto payload type and predicate type, no stream sequence, no
/// warnings.
async fn check_rows(c: &tokio_postgres::Client) {
    let mut subjects: BTreeMap<i64, BTreeSet<(String, String, String)>> = BTreeMap::new();
    for r in c
        .query(
            "SELECT idx, name, algorithm, value FROM ledger_subjects",
            &[],
        )
        .await
        .unwrap()
    {
        subjects
            .entry(r.get(0))
            .or_default()
            .insert((r.get(1), r.get(2), r.get(3)));
    }
    let keys = ace_core::db::load_keys(
        c,
        &c.query("SELECT keyid FROM producer_keys", &[])
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect::<Vec<String>>(),
    )
    .await
    .unwrap();
    let rows = c
        .query(
            "SELECT idx, envelope, producer, payload_type, predicate_type, keyid, stream_seq, warnings FROM ledger_entries WHERE producer <> '_ledger' ORDER BY idx",
            &[],
        )
        .await
        .unwrap();
    for r in rows {
        let idx: i64 = r.get(0);
        let env = Envelope::parse(r.get(1)).unwrap();
        let producer: String = r.get(2);
        assert_eq!(r.get::<_, String>(3), IN_TOTO_PAYLOAD_TYPE);
        let st = Statement::parse(&env.payload).unwrap();
        assert_eq!(
            r.get::<_, Option<String>>(4),
            Some(st.predicate_type.clone())
        );
        let want: BTreeSet<_> = st
            .subjects()
            .into_iter()
            .map(|s| (s.name, s.algorithm, s.value))
            .collect();
        assert!((1..=2).contains(&want.len()), "entry {idx}: 1-2 subjects");
        assert_eq!(
            subjects.remove(&idx).unwrap_or_default(),
            want,
            "entry {idx}"
        );
        let keyid: String = r.get(5);
        let registered: &RegisteredKey = &keys[&keyid];
        assert_eq!(registered.producer, producer);
        let by = verify_envelope(
            &env,
            &env.pae(),
            &producer,
            &keys,
            chrono::Utc::now().timestamp_millis(),
        )
        .unwrap();
        assert_eq!(by.as_str(), keyid);
        assert_eq!(r.get::<_, Option<i64>>(6), None);
        assert_eq!(r.get::<_, serde_json::Value>(7), serde_json::json!([]));
    }
    assert!(subjects.is_empty(), "subjects of no entry: {subjects:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ledger_built_in_several_calls_passes_the_log_checks() {
    let db = TestDb::new().await;
    let mut c = db.admin().await;
    let s = signer();
    // Odd block sizes and transaction sizes, so tiles fill and split across blocks and
    // transactions; a tile-aligned block size; several seeds and producer counts.
    let calls = [
        (700, 100, 300, 3, 1),
        (1300, 256, 1000, 8, 2),
        (537, 97, 5000, 1, 3),
        (1, 1000, 1000, 2, 4),
    ];
    let mut total = 0;
    let mut blocks = 1;
    for (i, &(entries, block_size, per_tx, producers, seed)) in calls.iter().enumerate() {
        let opts = SynthOptions {
            entries,
            block_size,
            producers,
            seed,
            entries_per_transaction: per_tx,
            // Positions are the loader's own: the registrations' key events stay pending.
            key_events: false,
            ..Default::default()
        };
        let r = synth::load(&mut c, &s, &opts).await.unwrap();
        assert_eq!(r.wrote_genesis, i == 0);
        assert_eq!(r.entries, entries);
        assert_eq!(r.first_index, total);
        total += entries;
        blocks += entries.div_ceil(block_size);
        assert_eq!(r.tree_size, total);
        assert_eq!(r.blocks, entries.div_ceil(block_size));
        assert_eq!(r.height, blocks - 1);
    }
    let report = check_log(&c, &s).await;
    assert_eq!((report.entries, report.blocks), (total, blocks));
    check_tiles(&c).await;
    check_rows(&c).await;
    let (root, size): (Vec<u8>, i64) = {
        let r = c
            .query_one(
                "SELECT root_hash, tree_size FROM ledger_blocks ORDER BY height DESC LIMIT 1",
                &[],
            )
            .await
            .unwrap();
        (r.get(0), r.get(1))
    };
    assert_eq!(size as u64, total);
    assert_eq!(root.len(), 32);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn several_connections_commit_in_order_and_foreign_key_checks_can_be_skipped() {
    let db = TestDb::new().await;
    let s = signer();
    let mut clients = vec![db.admin().await, db.admin().await, db.admin().await];
    let mut seen = Vec::new();
    let opts = SynthOptions {
        entries: 2000,
        block_size: 60,
        entries_per_transaction: 150,
        skip_foreign_key_checks: true,
        key_events: false,
        ..Default::default()
    };
    let r = synth::load_with_progress(&mut clients, &s, &opts, |p| seen.push(p.entries_done))
        .await
        .unwrap();
    assert_eq!((r.entries, r.tree_size, r.blocks), (2000, 2000, 34));
    // Transactions hold 3 blocks (180 entries) and commit in order.
    let want: Vec<u64> = (1..=11).map(|k| k * 180).chain([2000]).collect();
    assert_eq!(seen, want);
    // Then continue on one connection with the checks on.
    let mut c = db.admin().await;
    synth::load(
        &mut c,
        &s,
        &SynthOptions {
            entries: 333,
            block_size: 50,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(check_log(&c, &s).await.entries, 2333);
    check_tiles(&c).await;
    check_rows(&c).await;
    // The sessions are back to normal: the triggers fire again.
    for c in &clients {
        let role: String = c
            .query_one("SHOW session_replication_role", &[])
            .await
            .unwrap()
            .get(0);
        assert_eq!(role, "origin");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_empty_load_writes_genesis_only_and_options_are_checked() {
    let db = TestDb::new().await;
    let mut c = db.admin().await;
    let s = signer();
    let r = synth::load(
        &mut c,
        &s,
        &SynthOptions {
            entries: 0,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert!(r.wrote_genesis);
    // Genesis, then the 8 producers' and keys' registrations as one block of key events.
    assert_eq!((r.entries, r.blocks, r.tree_size, r.height), (0, 0, 16, 1));
    let log = check_log(&c, &s).await;
    assert_eq!((log.blocks, log.key_events, log.entries), (2, 16, 0));

    for bad in [
        SynthOptions {
            block_size: 0,
            ..Default::default()
        },
        SynthOptions {
            producers: 0,
            ..Default::default()
        },
        SynthOptions {
            entries_per_transaction: 0,
            ..Default::default()
        },
    ] {
        let err = synth::load(&mut c, &s, &bad).await.unwrap_err();
        assert!(matches!(err, SynthError::Options(_)), "{err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_loader_refuses_a_log_whose_sequencer_lock_is_held() {
    let db = TestDb::new().await;
    let mut c = db.admin().await;
    let s = signer();
    let other = db.admin().await;
    other
        .execute(
            "SELECT pg_advisory_lock($1)",
            &[&synth::sequencer_lock_key(s.name())],
        )
        .await
        .unwrap();
    let err = synth::load(&mut c, &s, &SynthOptions::default())
        .await
        .unwrap_err();
    assert!(matches!(err, SynthError::Locked { .. }), "{err}");
    assert!(err.to_string().contains("synth.test/log"), "{err}");
    let n: i64 = c
        .query_one("SELECT count(*) FROM ledger_blocks", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 0, "nothing written");
    // Released: the load goes through.
    other
        .execute(
            "SELECT pg_advisory_unlock($1)",
            &[&synth::sequencer_lock_key(s.name())],
        )
        .await
        .unwrap();
    synth::load(&mut c, &s, &SynthOptions::default())
        .await
        .unwrap();
}
