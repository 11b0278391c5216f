//! The synthetic loader: appends entries to a ledger database through core's own code
//! (envelopes, leaves, tiles, blocks, checkpoints), in exactly the rows the writer makes,
//! only much faster. It is how tests and benchmarks get ledgers of millions of entries.
//!
//! Rows are those of `writer/src/batch.rs` + `writer/src/store.rs`: a genesis block if the
//! log is empty; a block of the pending key events (the synthetic producers' and keys'
//! registrations, unless [`SynthOptions::key_events`] is off); one block and signed checkpoint per `block_size` entries; the tiles
//! [`TileAppender::append`] returns for each block (full tiles and the partial right edge);
//! `ledger_subjects` rows for the in-toto subjects; `warnings` `[]`; `keyid` of the signing
//! key; `stream_seq` NULL (nothing came from JetStream). The loader continues whatever log
//! is there, so tests can build a ledger in several calls and mix it with real writer output.
//!
//! Speed comes from three things: envelopes are signed and COPY rows encoded on every core
//! (rayon); rows go in with `COPY ... FROM STDIN (FORMAT binary)`, many blocks per
//! transaction; and the next transaction's rows are generated while the current one is
//! written.

use std::time::{Duration, Instant};

use ace_core::block::BlockHeader;
use ace_core::checkpoint::{sign_checkpoint, Checkpoint, NoteError, NoteSigner};
use ace_core::db::DbError;
use ace_core::envelope::{envelope_sha256, Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::{KeyId, ProducerId};
use ace_core::key_event::{KeyEvent, KEY_EVENT_PAYLOAD_TYPE};
use ace_core::leaf::LeafRecord;
use ace_core::merkle::{leaf_hash, Hash};
use ace_core::tiles::{TileAppender, TileError, TileId};
use bytes::Bytes;
use ed25519_dalek::SigningKey;
use futures::SinkExt;
use rayon::prelude::*;
use sha2::{Digest, Sha256};
use tokio_postgres::{Client, GenericClient};

/// Predicate types the synthetic statements use, in turn.
pub const PREDICATE_TYPES: [&str; 4] = [
    "https://slsa.dev/provenance/v1",
    "https://spdx.dev/Document/v2.3",
    "https://cyclonedx.org/bom/v1.5",
    "https://in-toto.io/attestation/test-result/v0.1",
];

/// Entries encoded per rayon task: large enough that task overhead vanishes, small enough
/// that both cores stay busy to the end of a transaction.
const SEGMENT: u64 = 256;
/// COPY data is sent in pieces of this size.
const COPY_PIECE: usize = 1 << 20;

/// What to load.
#[derive(Debug, Clone)]
pub struct SynthOptions {
    /// Entries to append.
    pub entries: u64,
    /// Entries per block (the last block of a load may be smaller).
    pub block_size: u64,
    /// Synthetic producers `synth-0` .. `synth-{n-1}`, each with one deterministic key.
    pub producers: u32,
    /// Seeds the producer keys and every statement, so a load is reproducible.
    pub seed: u64,
    /// Entries per database transaction, rounded up to whole blocks.
    pub entries_per_transaction: u64,
    /// Skip the insert triggers' reference checks (`session_replication_role = replica`,
    /// which needs a superuser). They were per-row foreign keys, a third of Postgres'
    /// work in a bulk load, until migration V6 made them one check per statement; the
    /// rows satisfy them by construction. For benchmark loads.
    pub skip_foreign_key_checks: bool,
    /// Append the pending key events (the producers' and keys' registrations) as a block
    /// of `_ledger` entries before the synthetic ones, as the writer does. Off, they stay
    /// pending (as before a writer's first batch) and the loader's entries start where the
    /// log ended: for fixtures that address entries by position and never audit.
    pub key_events: bool,
}

impl Default for SynthOptions {
    fn default() -> Self {
        SynthOptions {
            entries: 1000,
            block_size: 1000,
            producers: 8,
            seed: 1,
            entries_per_transaction: 50_000,
            skip_foreign_key_checks: false,
            key_events: true,
        }
    }
}

impl SynthOptions {
    fn validate(&self) -> Result<(), SynthError> {
        if self.block_size == 0 {
            return Err(SynthError::Options("block_size must be at least 1".into()));
        }
        if !(1..=10_000).contains(&self.producers) {
            return Err(SynthError::Options(format!(
                "producers must be between 1 and 10000, not {}",
                self.producers
            )));
        }
        if self.entries_per_transaction == 0 {
            return Err(SynthError::Options(
                "entries_per_transaction must be at least 1".into(),
            ));
        }
        Ok(())
    }

    /// Blocks per transaction: at least one.
    fn blocks_per_transaction(&self) -> u64 {
        self.entries_per_transaction
            .div_ceil(self.block_size)
            .max(1)
    }
}

/// What a load did.
#[derive(Debug, Clone)]
pub struct SynthReport {
    /// Entries appended.
    pub entries: u64,
    /// Blocks sealed (genesis not counted).
    pub blocks: u64,
    /// Whether the log was empty and this load wrote the genesis block.
    pub wrote_genesis: bool,
    /// Index of the first entry appended.
    pub first_index: u64,
    /// Tree size after the load.
    pub tree_size: u64,
    /// Root at `tree_size`.
    pub root_hash: Hash,
    /// Height of the latest block after the load.
    pub height: u64,
    pub elapsed: Duration,
}

impl SynthReport {
    pub fn entries_per_sec(&self) -> f64 {
        self.entries as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// Where a running load is, after each committed transaction.
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub entries_done: u64,
    pub entries_total: u64,
    pub elapsed: Duration,
}

/// Why a load failed. Everything committed before the failure stays: each transaction
/// holds whole blocks, so the log is consistent and a later load continues it.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    #[error("bad options: {0}")]
    Options(String),
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("another sequencer holds the lock of log {origin:?}: stop its writer (or the other loader) first")]
    Locked { origin: String },
    #[error("extending the tree: {0}")]
    Tiles(#[from] TileError),
    #[error("signing a checkpoint: {0}")]
    Note(#[from] NoteError),
    #[error("the row generator stopped: {0}")]
    Generator(String),
}

/// One synthetic producer: its id and deterministic signing key.
#[derive(Clone)]
pub struct SynthProducer {
    pub id: String,
    pub key: SigningKey,
    pub keyid: KeyId,
}

/// The producers a load with `seed` signs with.
pub fn producers(seed: u64, n: u32) -> Vec<SynthProducer> {
    (0..n)
        .map(|p| {
            let mut h = Sha256::new();
            h.update(b"ace-synth producer key\n");
            h.update(seed.to_be_bytes());
            h.update(p.to_be_bytes());
            let key = SigningKey::from_bytes(&h.finalize().into());
            SynthProducer {
                id: format!("synth-{p}"),
                keyid: KeyId::from_public_key(&key.verifying_key()),
                key,
            }
        })
        .collect()
}

/// The advisory lock the writer takes for `origin` (writer/src/sequencer.rs `lock_key`):
/// holding it keeps a writer from appending to the same log while the loader does.
pub fn sequencer_lock_key(origin: &str) -> i64 {
    let h = Sha256::digest(format!("ace-ledger-writer\n{origin}"));
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

/// Appends `opts.entries` entries to the log in `client`'s database (migrated; a superuser
/// or owner connection, since producers and keys are registered too).
///
/// # Errors
/// [`SynthError`]; whole transactions committed before it stay.
pub async fn load(
    client: &mut Client,
    signer: &NoteSigner,
    opts: &SynthOptions,
) -> Result<SynthReport, SynthError> {
    load_with_progress(std::slice::from_mut(client), signer, opts, |_| {}).await
}

/// [`load`] over one or more connections to the same database, calling `progress` after
/// each committed transaction.
///
/// With several connections, consecutive transactions are written concurrently (one
/// Postgres backend per connection) but committed strictly in order, each waiting for its
/// predecessor: the log only ever grows by whole blocks, without gaps, even if the load
/// dies half way.
///
/// # Errors
/// As [`load`]; `Options` when `clients` is empty.
pub async fn load_with_progress(
    clients: &mut [Client],
    signer: &NoteSigner,
    opts: &SynthOptions,
    progress: impl FnMut(Progress) + Send,
) -> Result<SynthReport, SynthError> {
    opts.validate()?;
    let started = Instant::now();
    let Some((first, _)) = clients.split_first_mut() else {
        return Err(SynthError::Options(
            "at least one connection is needed".into(),
        ));
    };
    let lock = sequencer_lock_key(signer.name());
    let locked: bool = first
        .query_one("SELECT pg_try_advisory_lock($1)", &[&lock])
        .await
        .map_err(DbError::query("taking the sequencer lock"))?
        .get(0);
    if !locked {
        return Err(SynthError::Locked {
            origin: signer.name().to_owned(),
        });
    }
    let result = load_locked(clients, signer, opts, started, progress).await;
    for c in clients.iter() {
        // Failures here only matter until the session ends, which the caller controls.
        let _ = c
            .batch_execute("RESET synchronous_commit; RESET session_replication_role")
            .await;
    }
    if let Some(c) = clients.first() {
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&lock]).await;
    }
    result
}

/// Totals of the committed transactions, and the caller's progress callback.
struct Committed<F> {
    entries: u64,
    blocks: u64,
    last: Option<BlockHeader>,
    progress: F,
}

async fn load_locked(
    clients: &mut [Client],
    signer: &NoteSigner,
    opts: &SynthOptions,
    started: Instant,
    progress: impl FnMut(Progress) + Send,
) -> Result<SynthReport, SynthError> {
    let producers = producers(opts.seed, opts.producers);
    let Some(first) = clients.first_mut() else {
        return Err(SynthError::Options(
            "at least one connection is needed".into(),
        ));
    };
    register_producers(first, &producers).await?;
    let (state, wrote_genesis) = match load_state(&*first).await? {
        Some(s) => (s, false),
        None => (write_genesis(first, signer).await?, true),
    };
    // The registrations' key events go in first, as the writer puts them before the
    // entries their keys sign.
    let state = if opts.key_events {
        append_key_events(first, signer, state).await?
    } else {
        state
    };
    let first_index = state.tiles.tree_size();
    // Losing the last transactions to a crash loses nothing a rerun cannot rebuild, and
    // not waiting for each WAL flush is much of the speed.
    let mut settings = "SET synchronous_commit = off".to_owned();
    if opts.skip_foreign_key_checks {
        // Replica mode skips the reference-check triggers (as pg_restore
        // --disable-triggers does); the rows satisfy them by construction.
        settings.push_str("; SET session_replication_role = replica");
    }
    for c in clients.iter() {
        c.batch_execute(&settings).await.map_err(DbError::query(
            "setting synchronous_commit (and session_replication_role, which needs a superuser)",
        ))?;
    }

    let (tx, rx) =
        tokio::sync::mpsc::channel::<(u64, Result<Chunk, SynthError>)>(clients.len() + 1);
    let gen_opts = opts.clone();
    let generator = std::thread::spawn(move || {
        let mut seq = 0u64;
        generate(state, producers, gen_opts, |c| {
            let r = tx.blocking_send((seq, c)).map_err(|_| ());
            seq += 1;
            r
        })
    });

    let rx = tokio::sync::Mutex::new(rx);
    let (turn, _) = tokio::sync::watch::channel(0u64);
    let committed = std::sync::Mutex::new(Committed {
        entries: 0,
        blocks: 0,
        last: None,
        progress,
    });
    let total = opts.entries;
    let workers = clients.iter_mut().map(|c| {
        write_chunks(c, signer, &rx, &turn, &committed, |k| {
            (k.progress)(Progress {
                entries_done: k.entries,
                entries_total: total,
                elapsed: started.elapsed(),
            })
        })
    });
    let written = futures::future::try_join_all(workers).await;
    // Dropping the receiver stops a generator that is still producing.
    drop(rx);
    let final_state = generator
        .join()
        .map_err(|_| SynthError::Generator("the generator thread panicked".into()))?;
    written?;
    let (entries, blocks, last) = match committed.lock() {
        Ok(k) => (k.entries, k.blocks, k.last),
        Err(_) => return Err(SynthError::Generator("a writer panicked".into())),
    };
    let (tree_size, root_hash, height) = match (last, final_state) {
        (Some(header), _) => (header.tree_size, header.root_hash, header.height),
        (None, Some(s)) => (s.tiles.tree_size(), s.tiles.root(), s.last_block.height),
        (None, None) => {
            return Err(SynthError::Generator(
                "the generator ended without its state".into(),
            ))
        }
    };
    Ok(SynthReport {
        entries,
        blocks,
        wrote_genesis,
        first_index,
        tree_size,
        root_hash,
        height,
        elapsed: started.elapsed(),
    })
}

/// One connection's share: take the next chunk, write it, commit when every earlier
/// chunk has committed.
async fn write_chunks<F>(
    c: &mut Client,
    signer: &NoteSigner,
    rx: &tokio::sync::Mutex<tokio::sync::mpsc::Receiver<(u64, Result<Chunk, SynthError>)>>,
    turn: &tokio::sync::watch::Sender<u64>,
    committed: &std::sync::Mutex<Committed<F>>,
    report: impl Fn(&mut Committed<F>),
) -> Result<(), SynthError> {
    loop {
        let next = rx.lock().await.recv().await;
        let Some((seq, chunk)) = next else {
            return Ok(());
        };
        let chunk = chunk?;
        let tx = c
            .transaction()
            .await
            .map_err(DbError::query("starting a load transaction"))?;
        write_chunk(&tx, signer, &chunk).await?;
        let mut my_turn = turn.subscribe();
        if my_turn.wait_for(|&t| t == seq).await.is_err() {
            return Err(SynthError::Generator("the commit order was lost".into()));
        }
        tx.commit()
            .await
            .map_err(DbError::query("committing a load transaction"))?;
        turn.send_replace(seq + 1);
        if let Ok(mut k) = committed.lock() {
            k.entries += chunk.entries;
            k.blocks += chunk.blocks.len() as u64;
            if let Some(b) = chunk.blocks.last() {
                k.last = Some(*b);
            }
            report(&mut k);
        }
    }
}

/// Registers the synthetic producers and their keys where missing.
async fn register_producers(c: &Client, producers: &[SynthProducer]) -> Result<(), DbError> {
    let ids: Vec<&str> = producers.iter().map(|p| p.id.as_str()).collect();
    let keyids: Vec<&str> = producers.iter().map(|p| p.keyid.as_str()).collect();
    let keys: Vec<Vec<u8>> = producers
        .iter()
        .map(|p| p.key.verifying_key().to_bytes().to_vec())
        .collect();
    c.execute(
        "INSERT INTO producers (producer) SELECT unnest($1::text[]) ON CONFLICT DO NOTHING",
        &[&ids],
    )
    .await
    .map_err(DbError::query("registering the synthetic producers"))?;
    // Valid from long before any integrated time the loader writes.
    c.execute(
        "INSERT INTO producer_keys (keyid, producer, public_key, valid_from) \
         SELECT k, p, pk, now() - interval '1 day' FROM unnest($1::text[], $2::text[], $3::bytea[]) AS u(k, p, pk) \
         ON CONFLICT DO NOTHING",
        &[&keyids, &ids, &keys],
    )
    .await
    .map_err(DbError::query("registering the synthetic producers' keys"))?;
    Ok(())
}

/// The log as the loader continues it.
#[derive(Debug, Clone)]
struct LogState {
    tiles: TileAppender,
    last_block: BlockHeader,
}

/// The latest block and the tree's right edge, checked against each other (as the writer
/// starts from them).
async fn load_state<C: GenericClient>(c: &C) -> Result<Option<LogState>, DbError> {
    Ok(ace_core::db::load_log_head(c)
        .await?
        .map(|(last_block, tiles)| LogState { tiles, last_block }))
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

fn checkpoint_for(header: &BlockHeader, signer: &NoteSigner) -> Result<String, NoteError> {
    sign_checkpoint(
        &Checkpoint {
            origin: signer.name().to_owned(),
            tree_size: header.tree_size,
            root_hash: header.root_hash,
            extensions: vec![],
        },
        &[signer],
    )
}

async fn write_genesis(c: &mut Client, signer: &NoteSigner) -> Result<LogState, SynthError> {
    let header = BlockHeader::genesis(now_ms());
    let checkpoint = checkpoint_for(&header, signer)?;
    c.execute(
        "INSERT INTO ledger_blocks (height, first_index, tree_size, root_hash, block_hash, prev_block_hash, sealed_at, checkpoint) \
         VALUES (0, 0, 0, $1, $2, $3, $4, $5)",
        &[
            &header.root_hash.as_slice(),
            &header.block_hash().as_slice(),
            &header.prev_block_hash.as_slice(),
            &header.sealed_at,
            &checkpoint,
        ],
    )
    .await
    .map_err(DbError::query("inserting the genesis block"))?;
    Ok(LogState {
        tiles: TileAppender::new(),
        last_block: header,
    })
}

/// Appends the key events not yet in the log as one block of `_ledger` entries, as the
/// writer does (writer/src/batch.rs).
async fn append_key_events(
    c: &mut Client,
    signer: &NoteSigner,
    mut state: LogState,
) -> Result<LogState, SynthError> {
    let tx = c
        .transaction()
        .await
        .map_err(DbError::query("starting the key events' transaction"))?;
    let rows = tx
        .query(
            "SELECT id, kind, producer, keyid, at_ms, actor, detail FROM key_events \
             WHERE id > (SELECT coalesce(max(event_id), 0) FROM key_event_entries) ORDER BY id",
            &[],
        )
        .await
        .map_err(DbError::query("reading pending key events"))?;
    if rows.is_empty() {
        return Ok(state);
    }
    let time = now_ms().max(state.last_block.sealed_at);
    let first = state.tiles.tree_size();
    let mut leaves = Vec::with_capacity(rows.len());
    let mut entries = Vec::with_capacity(rows.len());
    for (i, r) in rows.iter().enumerate() {
        let id: i64 = r.get(0);
        let ev = KeyEvent::from_row(
            id,
            r.get(1),
            r.get(2),
            r.get(3),
            r.get(4),
            r.get(5),
            &r.get(6),
        )
        .map_err(|e| SynthError::Generator(format!("key_events row {id}: {e}")))?;
        let env = ev.envelope(&[signer]);
        let raw = env.to_json();
        let index = first + i as u64;
        let leaf = LeafRecord {
            digest: env.digest().as_str().to_owned(),
            envelope_sha256: envelope_sha256(&raw),
            index,
            integrated_time: time,
            producer: ProducerId::LEDGER.to_owned(),
        }
        .to_bytes();
        leaves.push(leaf_hash(&leaf));
        let keyid = env
            .signatures
            .first()
            .map(|s| s.keyid.clone())
            .unwrap_or_default();
        entries.push((
            id,
            index as i64,
            env.digest().as_str().to_owned(),
            raw,
            leaf,
            keyid,
        ));
    }
    let tiles = state.tiles.append(&leaves)?;
    let header = state
        .last_block
        .next(state.tiles.tree_size(), state.tiles.root(), time);
    let checkpoint = checkpoint_for(&header, signer)?;
    tx.execute(
        "INSERT INTO ledger_blocks (height, first_index, tree_size, root_hash, block_hash, prev_block_hash, sealed_at, checkpoint) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        &[
            &(header.height as i64),
            &(header.first_index as i64),
            &(header.tree_size as i64),
            &header.root_hash.as_slice(),
            &header.block_hash().as_slice(),
            &header.prev_block_hash.as_slice(),
            &header.sealed_at,
            &checkpoint,
        ],
    )
    .await
    .map_err(DbError::query("inserting the key events' block"))?;
    for (id, index, digest, raw, leaf, keyid) in &entries {
        tx.execute(
            "INSERT INTO ledger_entries (idx, digest, producer, envelope, leaf, integrated_time, block_height, payload_type, keyid) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
            &[
                index,
                digest,
                &ProducerId::LEDGER,
                raw,
                leaf,
                &time,
                &(header.height as i64),
                &KEY_EVENT_PAYLOAD_TYPE,
                keyid,
            ],
        )
        .await
        .map_err(DbError::query("inserting a key event entry"))?;
        tx.execute(
            "INSERT INTO key_event_entries (event_id, idx) VALUES ($1, $2)",
            &[id, index],
        )
        .await
        .map_err(DbError::query("recording a key event's entry"))?;
    }
    for (id, hashes) in tiles {
        tx.execute(
            "INSERT INTO ledger_tiles (level, idx, width, hashes) VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
            &[
                &i16::from(id.level),
                &(id.index as i64),
                &(id.width as i16),
                &ace_core::tiles::tile_to_bytes(&hashes),
            ],
        )
        .await
        .map_err(DbError::query("inserting the key events' tiles"))?;
    }
    tx.commit()
        .await
        .map_err(DbError::query("committing the key events"))?;
    state.last_block = header;
    Ok(state)
}

/// One transaction's rows: blocks (checkpoints are signed by the writing side, which holds
/// the ledger key) and COPY data for entries, subjects and tiles.
struct Chunk {
    entries: u64,
    blocks: Vec<BlockHeader>,
    entry_rows: Bytes,
    subject_rows: Bytes,
    tile_rows: Bytes,
}

/// Produces chunks until `opts.entries` are made or `send` fails (the writer gave up).
/// Returns the final state, or None when it stopped early.
fn generate<E>(
    mut state: LogState,
    producers: Vec<SynthProducer>,
    opts: SynthOptions,
    mut send: impl FnMut(Result<Chunk, SynthError>) -> Result<(), E>,
) -> Option<LogState> {
    let mut remaining = opts.entries;
    while remaining > 0 {
        let n = remaining.min(opts.blocks_per_transaction() * opts.block_size);
        let chunk = make_chunk(&mut state, &producers, &opts, n);
        let failed = chunk.is_err();
        if send(chunk).is_err() || failed {
            return None;
        }
        remaining -= n;
    }
    Some(state)
}

fn make_chunk(
    state: &mut LogState,
    producers: &[SynthProducer],
    opts: &SynthOptions,
    n: u64,
) -> Result<Chunk, SynthError> {
    let first = state.tiles.tree_size();
    let first_height = state.last_block.height + 1;
    // Time never runs backwards in the log, whatever the clock does (as in the writer).
    let time = now_ms().max(state.last_block.sealed_at);
    let segments: Vec<Segment> = (0..n.div_ceil(SEGMENT))
        .into_par_iter()
        .map(|s| {
            let lo = s * SEGMENT;
            let hi = (lo + SEGMENT).min(n);
            let mut seg = Segment::with_capacity((hi - lo) as usize);
            for offset in lo..hi {
                let height = first_height + offset / opts.block_size;
                seg.push(first + offset, height, time, opts.seed, producers);
            }
            seg
        })
        .collect();

    let mut entry_rows = copy_header();
    let mut subject_rows = copy_header();
    let mut leaf_hashes = Vec::with_capacity(n as usize);
    for s in segments {
        entry_rows.extend_from_slice(&s.entries);
        subject_rows.extend_from_slice(&s.subjects);
        leaf_hashes.extend(s.leaf_hashes);
    }
    copy_trailer(&mut entry_rows);
    copy_trailer(&mut subject_rows);

    let mut tile_rows = copy_header();
    let mut blocks = Vec::new();
    for block_leaves in leaf_hashes.chunks(opts.block_size as usize) {
        for (id, hashes) in state.tiles.append(block_leaves)? {
            push_tile_row(&mut tile_rows, id, &hashes);
        }
        let header = state
            .last_block
            .next(state.tiles.tree_size(), state.tiles.root(), time);
        blocks.push(header);
        state.last_block = header;
    }
    copy_trailer(&mut tile_rows);
    Ok(Chunk {
        entries: n,
        blocks,
        entry_rows: entry_rows.into(),
        subject_rows: subject_rows.into(),
        tile_rows: tile_rows.into(),
    })
}

/// COPY rows of consecutive entries, built on one rayon task.
struct Segment {
    entries: Vec<u8>,
    subjects: Vec<u8>,
    leaf_hashes: Vec<Hash>,
}

/// splitmix64: cheap, deterministic choices per entry.
fn mix(mut z: u64) -> u64 {
    z = z.wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^ (z >> 31)
}

impl Segment {
    fn with_capacity(n: usize) -> Self {
        Segment {
            entries: Vec::with_capacity(n * 1400),
            subjects: Vec::with_capacity(n * 300),
            leaf_hashes: Vec::with_capacity(n),
        }
    }

    /// Makes entry `index`: an in-toto statement with 1–2 subjects, signed by one of the
    /// producers, its leaf, and its COPY rows.
    fn push(
        &mut self,
        index: u64,
        height: u64,
        integrated_time: i64,
        seed: u64,
        producers: &[SynthProducer],
    ) {
        let r = mix(seed ^ mix(index));
        let producer = &producers[(r % producers.len() as u64) as usize];
        let predicate_type = PREDICATE_TYPES[((r >> 20) % PREDICATE_TYPES.len() as u64) as usize];
        // The seed and index make every statement, and so every digest, unique in the log.
        let subjects: Vec<(String, String)> = (0..1 + (r >> 16) % 2)
            .map(|k| {
                let mut h = Sha256::new();
                h.update(b"ace-synth subject\n");
                h.update(seed.to_be_bytes());
                h.update(index.to_be_bytes());
                h.update(k.to_be_bytes());
                (
                    format!("synth/{}/build-{index}/artifact-{k}.tar.gz", producer.id),
                    hex::encode(h.finalize()),
                )
            })
            .collect();
        let mut payload = String::with_capacity(512);
        payload.push_str("{\"_type\":\"https://in-toto.io/Statement/v1\",\"subject\":[");
        for (k, (name, digest)) in subjects.iter().enumerate() {
            if k > 0 {
                payload.push(',');
            }
            payload.push_str(&format!(
                "{{\"name\":\"{name}\",\"digest\":{{\"sha256\":\"{digest}\"}}}}"
            ));
        }
        payload.push_str(&format!(
            "],\"predicateType\":\"{predicate_type}\",\"predicate\":{{\"builder\":{{\"id\":\"https://ci.example/{}\"}},\"run\":{index},\"seed\":{seed}}}}}",
            producer.id
        ));
        let envelope = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload.as_bytes(), &producer.key);
        let raw = envelope.to_json();
        let digest = envelope.digest();
        let leaf = LeafRecord {
            digest: digest.as_str().to_owned(),
            envelope_sha256: envelope_sha256(&raw),
            index,
            integrated_time,
            producer: producer.id.clone(),
        }
        .to_bytes();
        self.leaf_hashes.push(leaf_hash(&leaf));

        let e = &mut self.entries;
        row(e, 10);
        int8(e, index as i64);
        text(e, digest.as_str());
        text(e, &producer.id);
        bytea(e, &raw);
        bytea(e, &leaf);
        int8(e, integrated_time);
        int8(e, height as i64);
        text(e, IN_TOTO_PAYLOAD_TYPE);
        text(e, predicate_type);
        text(e, producer.keyid.as_str());
        for (name, digest) in &subjects {
            let s = &mut self.subjects;
            row(s, 4);
            int8(s, index as i64);
            text(s, name);
            text(s, "sha256");
            text(s, digest);
        }
    }
}

// Postgres binary COPY format: a signature header, then per row a field count and each
// field as a 4-byte length and its binary value, then a -1 trailer. Lengths here are of
// rows this module builds (well under 2^31 bytes).

const ENTRY_COLUMNS: &str = "idx, digest, producer, envelope, leaf, integrated_time, block_height, payload_type, predicate_type, keyid";
const SUBJECT_COLUMNS: &str = "idx, name, algorithm, value";
const TILE_COLUMNS: &str = "level, idx, width, hashes";
const BLOCK_COLUMNS: &str =
    "height, first_index, tree_size, root_hash, block_hash, prev_block_hash, sealed_at, checkpoint";

fn copy_header() -> Vec<u8> {
    let mut v = Vec::with_capacity(1 << 16);
    v.extend_from_slice(b"PGCOPY\n\xff\r\n\0");
    v.extend_from_slice(&0i32.to_be_bytes()); // flags
    v.extend_from_slice(&0i32.to_be_bytes()); // header extension length
    v
}

fn copy_trailer(v: &mut Vec<u8>) {
    v.extend_from_slice(&(-1i16).to_be_bytes());
}

fn row(v: &mut Vec<u8>, fields: i16) {
    v.extend_from_slice(&fields.to_be_bytes());
}

fn int8(v: &mut Vec<u8>, x: i64) {
    v.extend_from_slice(&8i32.to_be_bytes());
    v.extend_from_slice(&x.to_be_bytes());
}

fn int2(v: &mut Vec<u8>, x: i16) {
    v.extend_from_slice(&2i32.to_be_bytes());
    v.extend_from_slice(&x.to_be_bytes());
}

fn bytea(v: &mut Vec<u8>, b: &[u8]) {
    v.extend_from_slice(&(b.len() as i32).to_be_bytes());
    v.extend_from_slice(b);
}

fn text(v: &mut Vec<u8>, s: &str) {
    bytea(v, s.as_bytes());
}

fn push_tile_row(v: &mut Vec<u8>, id: TileId, hashes: &[Hash]) {
    row(v, 4);
    int2(v, i16::from(id.level));
    int8(v, id.index as i64);
    int2(v, id.width as i16);
    v.extend_from_slice(&((hashes.len() * 32) as i32).to_be_bytes());
    for h in hashes {
        v.extend_from_slice(h);
    }
}

async fn copy_in(
    tx: &tokio_postgres::Transaction<'_>,
    table: &str,
    columns: &str,
    data: &Bytes,
    what: &'static str,
) -> Result<(), DbError> {
    let sink = tx
        .copy_in::<_, Bytes>(&format!(
            "COPY {table} ({columns}) FROM STDIN (FORMAT binary)"
        ))
        .await
        .map_err(DbError::query(what))?;
    futures::pin_mut!(sink);
    let mut at = 0;
    while at < data.len() {
        let end = (at + COPY_PIECE).min(data.len());
        sink.send(data.slice(at..end))
            .await
            .map_err(DbError::query(what))?;
        at = end;
    }
    sink.as_mut().finish().await.map_err(DbError::query(what))?;
    Ok(())
}

async fn write_chunk(
    tx: &tokio_postgres::Transaction<'_>,
    signer: &NoteSigner,
    chunk: &Chunk,
) -> Result<(), SynthError> {
    let mut block_rows = copy_header();
    for h in &chunk.blocks {
        let checkpoint = checkpoint_for(h, signer)?;
        row(&mut block_rows, 8);
        int8(&mut block_rows, h.height as i64);
        int8(&mut block_rows, h.first_index as i64);
        int8(&mut block_rows, h.tree_size as i64);
        bytea(&mut block_rows, &h.root_hash);
        bytea(&mut block_rows, &h.block_hash());
        bytea(&mut block_rows, &h.prev_block_hash);
        int8(&mut block_rows, h.sealed_at);
        text(&mut block_rows, &checkpoint);
    }
    copy_trailer(&mut block_rows);
    let block_rows = Bytes::from(block_rows);
    // Blocks first: entries reference them.
    copy_in(
        tx,
        "ledger_blocks",
        BLOCK_COLUMNS,
        &block_rows,
        "copying blocks",
    )
    .await?;
    copy_in(
        tx,
        "ledger_entries",
        ENTRY_COLUMNS,
        &chunk.entry_rows,
        "copying entries",
    )
    .await?;
    copy_in(
        tx,
        "ledger_subjects",
        SUBJECT_COLUMNS,
        &chunk.subject_rows,
        "copying subjects",
    )
    .await?;
    copy_in(
        tx,
        "ledger_tiles",
        TILE_COLUMNS,
        &chunk.tile_rows,
        "copying tiles",
    )
    .await?;
    Ok(())
}
