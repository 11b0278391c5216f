//! `acectl audit`: stream the whole ledger out of Postgres and recompute everything the log
//! commits to, in index order, stopping at the first entry, tile or block that does not
//! match (exit 1), naming it with what was expected and what was found.
//!
//! Per entry: gapless indexes from 0; the stored envelope parses; its digest (SHA-256 of the
//! PAE) equals the `digest` column; the leaf rebuilt from the envelope and the entry's
//! columns equals the stored leaf byte for byte; payload and predicate type, keyid and the
//! subject rows agree with the envelope and its statement; `block_height` is the block whose
//! range holds the index. Per block: a `TileAppender` fed the leaf hashes block by block
//! yields exactly the stored tiles (full and partial); the root at the block's tree size is
//! `root_hash`; the header hashes to `block_hash`; genesis and the hash chain hold; the
//! checkpoint opens with a trusted key and carries the block's tree size and root. At the
//! end, no stored tile row is one the log never produced. Then the anchor receipts
//! (`receipts.rs`) and the operators' hash-chained trail with the DLQ actions recorded in
//! it (`operator_audit.rs`).
//!
//! The audit reads one consistent snapshot (REPEATABLE READ, exported to every connection),
//! so it can run beside a live writer; it checks the ledger as of that snapshot. Entries are
//! fetched in index ranges on their own connections and prefetched while the previous range
//! is checked on every core.

use std::collections::{HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_core::block::BlockHeader;
use ace_core::checkpoint::{open_checkpoint, open_checkpoint_bytes, Checkpoint, NoteVerifier};
use ace_core::db::{describe_url, DbError};
use ace_core::envelope::{envelope_sha256, Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::leaf::LeafRecord;
use ace_core::merkle::{leaf_hash, Hash};
use ace_core::statement::Statement;
use ace_core::tiles::{TileAppender, TileId};
use ace_core::witness::CosignatureVerifier;
use clap::Args;
use rayon::prelude::*;
use tokio::sync::mpsc;
use tokio_postgres::{Client, Row};

/// acectl's allocator. The audit allocates a few dozen small values per entry on the rayon
/// threads and frees many on others; glibc malloc spent a quarter of the audit's CPU on
/// that at 10M entries. Declared here, beside the reason, rather than in main.rs.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Exit code when the ledger does not match what it commits to.
pub const EXIT_MISMATCH: i32 = 1;
/// Exit code when the audit could not run (bad setting, unreachable server).
pub const EXIT_CANNOT_RUN: i32 = 2;

/// Blocks fetched per query.
const BLOCK_PAGE: i64 = 10_000;

#[derive(Args, Clone)]
pub struct AuditArgs {
    /// Postgres DSN of a role that can read the log (ace_reader is enough).
    #[arg(long, env = "ACE_DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// A trusted note verifier key of the ledger (`name+hash+base64`, as `acectl ledger-key
    /// generate` prints it). Repeat for every key the ledger has signed checkpoints with.
    #[arg(long = "ledger-key", required = true, value_name = "VKEY")]
    ledger_keys: Vec<String>,
    /// Also check that the reader at this base URL (http:// or https://) serves a checkpoint
    /// that opens with the key and is the stored checkpoint of its tree size.
    #[arg(long, value_name = "URL")]
    reader: Option<String>,
    /// PEM CA certificate(s) to trust for an https reader, instead of the public roots.
    #[arg(long, env = "ACE_READER_CA_FILE", value_name = "FILE")]
    reader_ca_file: Option<std::path::PathBuf>,
    /// Entries fetched and checked per step.
    #[arg(long, default_value_t = 20_000, value_name = "N")]
    chunk_entries: u64,
    /// A witness's cosignature/v1 verifier key (`name+hash+base64`); its cosignatures in the
    /// anchor receipts are verified. Repeat for each witness you trust.
    #[arg(long = "witness-key", value_name = "VKEY")]
    witness_keys: Vec<String>,
    /// PEM certificate(s) of the TSAs you trust (their own certificate or their CA); the
    /// RFC 3161 tokens in the anchor receipts are verified against them.
    #[arg(long = "tsa-cert", value_name = "FILE")]
    tsa_cert: Option<std::path::PathBuf>,
    /// Also verify every entry's signatures (ed25519, as the writer did), not only that its
    /// admitting key was valid by the log's key events: about 50 µs of CPU per entry.
    #[arg(long)]
    verify_signatures: bool,
    /// Seconds between progress lines on stderr; 0 for none.
    #[arg(long, default_value_t = 5, value_name = "SECS")]
    progress_secs: u64,
}

/// Why the audit could not run at all (exit 2): never a statement about the ledger.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    #[error("{setting}: {reason}")]
    Setting {
        setting: &'static str,
        reason: String,
    },
    #[error("{target}: {source}")]
    Db { target: String, source: DbError },
    #[error("reader {url}: {reason}")]
    Reader { url: String, reason: String },
}

/// What does not match.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    Entry(u64),
    Block(u64),
    Tile {
        path: String,
        position: Option<usize>,
    },
    Ledger,
    Reader(String),
    Policy(String),
    Receipt {
        id: i64,
        sink: String,
        height: u64,
    },
    /// A row of `operator_audit`, by seq.
    OperatorAudit(i64),
    /// A row of `dlq_actions`, by id.
    DlqAction(i64),
    /// The producer and key registry, or its record of key events.
    Registry(String),
}

impl fmt::Display for Location {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Location::Entry(i) => write!(f, "entry {i}"),
            Location::Block(h) => write!(f, "block {h}"),
            Location::Tile {
                path,
                position: Some(p),
            } => write!(f, "tile {path}, hash {p}"),
            Location::Tile {
                path,
                position: None,
            } => write!(f, "tile {path}"),
            Location::Ledger => write!(f, "ledger"),
            Location::Reader(url) => write!(f, "reader {url}"),
            Location::Policy(version) => write!(f, "policy {version}"),
            Location::Receipt { id, sink, height } => {
                write!(f, "anchor receipt {id} (sink {sink}, block {height})")
            }
            Location::OperatorAudit(seq) => write!(f, "operator_audit row {seq}"),
            Location::DlqAction(id) => write!(f, "dlq action {id}"),
            Location::Registry(what) => write!(f, "registry: {what}"),
        }
    }
}

/// The first thing that does not match: where, what, and both values with where each
/// came from.
#[derive(Debug, Clone)]
pub struct Mismatch {
    pub location: Location,
    pub what: String,
    pub expected: String,
    pub found: String,
}

impl fmt::Display for Mismatch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {}\n  expected: {}\n  found:    {}",
            self.location, self.what, self.expected, self.found
        )
    }
}

pub(crate) fn mismatch(
    location: Location,
    what: impl Into<String>,
    expected: impl Into<String>,
    found: impl Into<String>,
) -> Box<Mismatch> {
    Box::new(Mismatch {
        location,
        what: what.into(),
        expected: expected.into(),
        found: found.into(),
    })
}

/// Where a check sits in the audit's order, so that of several problems found in one step
/// the one reported is the first: entry `i` before anything of a block ending after it;
/// a block's chain, then its entries' block heights, tiles, root, hash, checkpoint.
type Order = (u64, u8, u8);

fn entry_order(index: u64) -> Order {
    (index.saturating_add(1), 0, 0)
}

/// Stages of a block's checks, in order.
const CHAIN: u8 = 0;
const ENTRY_BLOCK: u8 = 1;
const TILES: u8 = 2;
const ROOT: u8 = 3;
const HASH: u8 = 4;
const CHECKPOINT: u8 = 5;

fn block_order(tree_size: u64, stage: u8) -> Order {
    (tree_size, 1, stage)
}

#[derive(Default)]
struct First(Option<(Order, Box<Mismatch>)>);

impl First {
    fn offer(&mut self, order: Order, m: Box<Mismatch>) {
        if self.0.as_ref().is_none_or(|(o, _)| order < *o) {
            self.0 = Some((order, m));
        }
    }
}

/// What a clean audit saw.
#[derive(Debug, Clone)]
pub struct Summary {
    pub origin: String,
    pub entries: u64,
    pub blocks: u64,
    pub tiles: u64,
    pub tree_size: u64,
    pub root_hash: Hash,
    pub elapsed: Duration,
    pub reader: Option<String>,
    /// Policy versions kept in `ledger_policies`, each text rehashed.
    pub policies: usize,
    pub receipts: crate::receipts::ReceiptSummary,
    /// The operators' hash-chained trail and the DLQ actions recorded in it.
    pub trail: crate::operator_audit::TrailSummary,
    /// The log's key events and the registry compared with them.
    pub keys: crate::key_events::KeySummary,
}

/// Runs the audit and prints the outcome; returns the process exit code.
pub async fn run(args: AuditArgs) -> i32 {
    match audit(&args).await {
        Ok(Ok(s)) => {
            let secs = s.elapsed.as_secs_f64();
            say!("audit passed: the ledger matches everything it commits to");
            say!("  origin:     {}", s.origin);
            say!(
                "  entries:    {} (indexes 0..{}, gapless, leaves, digests and subjects recomputed)",
                s.entries,
                s.entries.saturating_sub(1)
            );
            say!(
                "  blocks:     {} (heights 0..{}, roots, hash chain and checkpoints verified)",
                s.blocks,
                s.blocks.saturating_sub(1)
            );
            say!("  tiles:      {} rows recomputed and compared", s.tiles);
            say!(
                "  policies:   {} versions, each text rehashed; every entry's version is kept",
                s.policies
            );
            say!("  tree size:  {}", s.tree_size);
            say!("  root:       {}", hex::encode(s.root_hash));
            say!(
                "  elapsed:    {secs:.1} s ({:.0} entries/s)",
                s.entries as f64 / secs.max(1e-9)
            );
            let r = &s.receipts;
            let kinds: Vec<String> = r.by_kind.iter().map(|(k, n)| format!("{n} {k}")).collect();
            say!(
                "  receipts:   {} ({}), each for its block's tree size; {} witness cosignatures and {} time-stamp tokens verified",
                r.receipts,
                if kinds.is_empty() { "none".to_string() } else { kinds.join(", ") },
                r.cosignatures,
                r.tokens
            );
            if r.unchecked_tokens > 0 {
                say!(
                    "              {} rfc3161 receipts NOT checked: give --tsa-cert",
                    r.unchecked_tokens
                );
            }
            for (w, n) in &r.unchecked_witnesses {
                say!(
                    "              {n} receipts by witness {w} NOT checked: give its --witness-key"
                );
            }
            let t = &s.trail;
            say!(
                "  operator_audit: {} rows, head {} (hash chain verified from row 1)",
                t.rows,
                hex::encode(t.head)
            );
            say!(
                "  dlq_actions: {}, each naming an existing operator_audit row and dlq_items row",
                t.actions
            );
            let k = &s.keys;
            say!(
                "  key events: {} in the log (signed by the ledger key, gapless), {} producers and {} keys rebuilt from them; every entry's admitting key {} against them; the registry matches{}",
                k.events,
                k.producers,
                k.keys,
                if k.signatures_verified {
                    "and signatures verified"
                } else {
                    "judged (signatures not re-verified: --verify-signatures)"
                },
                if k.pending > 0 {
                    format!(" ({} newer events not yet in the log)", k.pending)
                } else {
                    String::new()
                }
            );
            if let Some(r) = s.reader {
                say!("  reader:     {r}");
            }
            0
        }
        Ok(Err(m)) => {
            say!("audit FAILED at {m}");
            EXIT_MISMATCH
        }
        Err(e) => {
            eprintln!("acectl audit: {e}");
            EXIT_CANNOT_RUN
        }
    }
}

fn setting(setting: &'static str, reason: impl Into<String>) -> AuditError {
    AuditError::Setting {
        setting,
        reason: reason.into(),
    }
}

/// The audit proper: `Err` when it cannot run, `Ok(Err)` at the first mismatch.
pub async fn audit(args: &AuditArgs) -> Result<Result<Summary, Box<Mismatch>>, AuditError> {
    let verifiers = args
        .ledger_keys
        .iter()
        .map(|k| {
            NoteVerifier::parse(k.trim())
                .map_err(|e| setting("--ledger-key", format!("{k:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let witnesses = args
        .witness_keys
        .iter()
        .map(|k| {
            CosignatureVerifier::parse(k.trim())
                .map_err(|e| setting("--witness-key", format!("{k:?}: {e}")))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let tsa = args
        .tsa_cert
        .as_ref()
        .map(|f| {
            let pem = std::fs::read_to_string(f)
                .map_err(|e| setting("--tsa-cert", format!("{}: {e}", f.display())))?;
            ace_core::tsa::TsaTrust::from_pem(&pem)
                .map_err(|e| setting("--tsa-cert", format!("{}: {e}", f.display())))
        })
        .transpose()?;
    if args.chunk_entries == 0 {
        return Err(setting("--chunk-entries", "must be at least 1"));
    }
    let reader = args
        .reader
        .as_deref()
        .map(|url| reader_client(url, args.reader_ca_file.as_deref()))
        .transpose()?;
    let started = Instant::now();
    let target = describe_url(&args.database_url);
    let db = |source: DbError| AuditError::Db {
        target: target.clone(),
        source,
    };
    let main = ace_core::db::connect(&args.database_url)
        .await
        .map_err(db)?;
    // JIT compiling each range query costs more than the query itself (measured at 10M
    // entries: an eighth of the machine's CPU).
    main.batch_execute("SET jit = off; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .await
        .map_err(DbError::query("starting the audit's snapshot"))
        .map_err(db)?;
    let snapshot: String = main
        .query_one("SELECT pg_export_snapshot()", &[])
        .await
        .map_err(DbError::query("exporting the audit's snapshot"))
        .map_err(db)?
        .get(0);
    let join = |c: Client| {
        let snapshot = snapshot.clone();
        async move {
            c.batch_execute(&format!(
                "SET jit = off; BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY; SET TRANSACTION SNAPSHOT '{snapshot}'"
            ))
            .await
            .map_err(DbError::query("joining the audit's snapshot"))?;
            Ok::<_, DbError>(c)
        }
    };
    let entries_conn = join(
        ace_core::db::connect(&args.database_url)
            .await
            .map_err(db)?,
    )
    .await
    .map_err(db)?;
    let subjects_conn = join(
        ace_core::db::connect(&args.database_url)
            .await
            .map_err(db)?,
    )
    .await
    .map_err(db)?;
    let blocks_conn = join(
        ace_core::db::connect(&args.database_url)
            .await
            .map_err(db)?,
    )
    .await
    .map_err(db)?;

    let policies = match check_policies(&main).await.map_err(db)? {
        Ok(p) => Arc::new(p),
        Err(m) => return Ok(Err(m)),
    };
    let ledger_keys = Arc::new(
        crate::key_events::load(&main, &verifiers, args.verify_signatures)
            .await
            .map_err(db)?,
    );
    let row = main
        .query_one(
            "SELECT (SELECT max(idx) FROM ledger_entries), \
                    (SELECT max(tree_size) FROM ledger_blocks)",
            &[],
        )
        .await
        .map_err(DbError::query("reading the log's size"))
        .map_err(db)?;
    let max_idx: Option<i64> = row.get(0);
    let max_tree: Option<i64> = row.get(1);
    let total = max_idx
        .map_or(0, |m| m.saturating_add(1))
        .max(max_tree.unwrap_or(0))
        .max(0) as u64;

    let (entry_tx, entry_rx) = mpsc::channel(2);
    tokio::spawn(fetch_entries(
        entries_conn,
        subjects_conn,
        total,
        args.chunk_entries,
        entry_tx,
    ));
    let (block_tx, block_rx) = mpsc::channel(2);
    tokio::spawn(fetch_blocks(blocks_conn, block_tx));

    let mut auditor = Auditor {
        verifiers: Arc::new(verifiers),
        policies: Arc::clone(&policies),
        keys: Arc::clone(&ledger_keys),
        main: &main,
        blocks: BlockStream {
            rx: block_rx,
            buf: VecDeque::new(),
            done: false,
        },
        entries: entry_rx,
        appender: TileAppender::new(),
        pending: Vec::new(),
        prev: None,
        origin: None,
        blocks_checked: 0,
        tiles_checked: 0,
        produced: HashSet::new(),
        progress: Progress::new(total, args.progress_secs, started),
    };
    let outcome = auditor.run(total).await.map_err(db)?;
    let summary = match outcome {
        Err(m) => return Ok(Err(m)),
        Ok(s) => s,
    };
    let receipts = match crate::receipts::check(&main, &witnesses, tsa.as_ref())
        .await
        .map_err(db)?
    {
        Ok(r) => r,
        Err(m) => return Ok(Err(m)),
    };
    // The operators' trail, in the same snapshot as the log it triages.
    let trail = match crate::operator_audit::check(&main).await.map_err(db)? {
        Ok(t) => t,
        Err(m) => return Ok(Err(m)),
    };
    let keys = match crate::key_events::check_registry(&main, &ledger_keys)
        .await
        .map_err(db)?
    {
        Ok(k) => k,
        Err(m) => return Ok(Err(m)),
    };
    let mut summary = Summary {
        elapsed: started.elapsed(),
        receipts,
        trail,
        keys,
        ..summary
    };
    // The snapshot is released before the reader check, which compares with the ledger as
    // it is now (the reader may be ahead of the snapshot).
    let _ = main.batch_execute("COMMIT").await;
    if let Some(reader) = &reader {
        match check_reader(reader, &main, &auditor.verifiers, &ledger_keys).await {
            Ok(Ok(line)) => summary.reader = Some(line),
            Ok(Err(m)) => return Ok(Err(m)),
            Err(e) => return Err(e.or_db(&target)),
        }
    }
    Ok(Ok(summary))
}

/// One step's entries and their subject rows, both ordered by index.
struct EntryChunk {
    lo: u64,
    hi: u64,
    rows: Vec<Row>,
    subjects: Vec<Row>,
}

async fn fetch_entries(
    entries: Client,
    subjects: Client,
    total: u64,
    chunk: u64,
    tx: mpsc::Sender<Result<EntryChunk, DbError>>,
) {
    let entries_stmt = entries
        .prepare(
            "SELECT idx, digest, producer, envelope, leaf, integrated_time, block_height, \
                    payload_type, predicate_type, keyid, policy_version \
             FROM ledger_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .await;
    let subjects_stmt = subjects
        .prepare(
            "SELECT idx, name, algorithm, value FROM ledger_subjects \
             WHERE idx >= $1 AND idx < $2 ORDER BY idx",
        )
        .await;
    let (entries_stmt, subjects_stmt) = match (entries_stmt, subjects_stmt) {
        (Ok(e), Ok(s)) => (e, s),
        (Err(e), _) | (_, Err(e)) => {
            let _ = tx
                .send(Err(DbError::Query {
                    what: "preparing the entry queries",
                    source: e,
                }))
                .await;
            return;
        }
    };
    let mut lo = 0u64;
    while lo < total {
        let hi = lo.saturating_add(chunk).min(total);
        let (l, h) = (lo as i64, hi as i64);
        let params: [&(dyn tokio_postgres::types::ToSql + Sync); 2] = [&l, &h];
        let (rows, subs) = tokio::join!(
            entries.query(&entries_stmt, &params),
            subjects.query(&subjects_stmt, &params)
        );
        let item = match (rows, subs) {
            (Ok(rows), Ok(subjects)) => Ok(EntryChunk {
                lo,
                hi,
                rows,
                subjects,
            }),
            (Err(e), _) => Err(DbError::Query {
                what: "reading entries",
                source: e,
            }),
            (_, Err(e)) => Err(DbError::Query {
                what: "reading subjects",
                source: e,
            }),
        };
        let failed = item.is_err();
        if tx.send(item).await.is_err() || failed {
            return;
        }
        lo = hi;
    }
}

/// A block row as stored, converted later so that bad values become mismatches.
struct StoredBlock {
    height: i64,
    first_index: i64,
    tree_size: i64,
    root_hash: Vec<u8>,
    block_hash: Vec<u8>,
    prev_block_hash: Vec<u8>,
    sealed_at: i64,
    checkpoint: String,
}

async fn fetch_blocks(c: Client, tx: mpsc::Sender<Result<Vec<StoredBlock>, DbError>>) {
    let mut after = -1i64;
    loop {
        let page = c
            .query(
                "SELECT height, first_index, tree_size, root_hash, block_hash, prev_block_hash, \
                        sealed_at, checkpoint \
                 FROM ledger_blocks WHERE height > $1 ORDER BY height LIMIT $2",
                &[&after, &BLOCK_PAGE],
            )
            .await
            .map_err(DbError::query("reading blocks"))
            .and_then(|rows| {
                rows.iter()
                    .map(|r| {
                        Ok(StoredBlock {
                            height: r.try_get(0)?,
                            first_index: r.try_get(1)?,
                            tree_size: r.try_get(2)?,
                            root_hash: r.try_get(3)?,
                            block_hash: r.try_get(4)?,
                            prev_block_hash: r.try_get(5)?,
                            sealed_at: r.try_get(6)?,
                            checkpoint: r.try_get(7)?,
                        })
                    })
                    .collect::<Result<Vec<_>, tokio_postgres::Error>>()
                    .map_err(DbError::query("decoding blocks"))
            });
        let (last, empty) = match &page {
            Ok(p) => (p.last().map(|b| b.height), p.is_empty()),
            Err(_) => (None, true),
        };
        if tx.send(page).await.is_err() || empty {
            return;
        }
        match last {
            Some(h) => after = h,
            None => return,
        }
    }
}

struct BlockStream {
    rx: mpsc::Receiver<Result<Vec<StoredBlock>, DbError>>,
    buf: VecDeque<StoredBlock>,
    done: bool,
}

impl BlockStream {
    async fn fill(&mut self) -> Result<(), DbError> {
        while self.buf.is_empty() && !self.done {
            match self.rx.recv().await {
                Some(Ok(page)) if !page.is_empty() => self.buf.extend(page),
                Some(Err(e)) => return Err(e),
                Some(Ok(_)) | None => self.done = true,
            }
        }
        Ok(())
    }

    async fn peek(&mut self) -> Result<Option<&StoredBlock>, DbError> {
        self.fill().await?;
        Ok(self.buf.front())
    }

    async fn next(&mut self) -> Result<Option<StoredBlock>, DbError> {
        self.fill().await?;
        Ok(self.buf.pop_front())
    }
}

struct Progress {
    total: u64,
    every: Option<Duration>,
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new(total: u64, secs: u64, started: Instant) -> Self {
        Progress {
            total,
            every: (secs > 0).then(|| Duration::from_secs(secs)),
            started,
            last: started,
        }
    }

    fn tick(&mut self, done: u64) {
        let Some(every) = self.every else { return };
        if self.last.elapsed() < every {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "acectl audit: {done} / {} entries checked ({:.1}%), {:.0} entries/s, {secs:.0} s",
            self.total,
            100.0 * done as f64 / self.total.max(1) as f64,
            done as f64 / secs.max(1e-9),
        );
    }
}

struct Auditor<'a> {
    verifiers: Arc<Vec<NoteVerifier>>,
    /// Policy versions whose kept text was rehashed.
    policies: Arc<HashSet<String>>,
    /// The registry as the log's key events give it.
    keys: Arc<crate::key_events::LedgerKeys>,
    main: &'a Client,
    blocks: BlockStream,
    entries: mpsc::Receiver<Result<EntryChunk, DbError>>,
    /// The tree as rebuilt from the stored leaves, up to the last block checked.
    appender: TileAppender,
    /// Leaf hash and stored block height of each entry checked but not yet in a checked
    /// block, from index `appender.tree_size()` on.
    pending: Vec<(Hash, i64)>,
    prev: Option<BlockHeader>,
    origin: Option<String>,
    blocks_checked: u64,
    tiles_checked: u64,
    produced: HashSet<(u8, u64, u16)>,
    progress: Progress,
}

/// A block checked in this step: its stored row and its checkpoint, opened on the pool.
struct BlockCheck {
    stored: StoredBlock,
    checkpoint: Result<Checkpoint, String>,
}

impl Auditor<'_> {
    async fn run(&mut self, total: u64) -> Result<Result<Summary, Box<Mismatch>>, DbError> {
        // Genesis first: the blocks of tree size 0 come before any entry.
        let mut first = First::default();
        let genesis = self.take_blocks(0).await?;
        if genesis.is_empty() && self.blocks.peek().await?.is_none() && total == 0 {
            return Ok(Err(mismatch(
                Location::Ledger,
                "the log has no genesis block (has the writer ever run on this database?)",
                "block 0 with tree size 0",
                "no rows in ledger_blocks",
            )));
        }
        let checks = open_all(genesis, &self.verifiers);
        let tiles = self.check_blocks(checks, &mut first);
        self.compare_tiles(tiles, &mut first).await?;
        if let Some((_, m)) = first.0 {
            return Ok(Err(m));
        }

        let mut verified = 0u64;
        while let Some(chunk) = self.entries.recv().await {
            let chunk = chunk?;
            let mut first = First::default();
            let expected = chunk.hi - chunk.lo;
            let present = chunk
                .rows
                .iter()
                .enumerate()
                .take_while(|(p, r)| {
                    r.try_get::<_, i64>(0).ok() == Some((chunk.lo + *p as u64) as i64)
                })
                .count() as u64;
            let upto = chunk.lo + present;
            if present < expected {
                let found = match chunk.rows.get(present as usize) {
                    Some(r) => match r.try_get::<_, i64>(0) {
                        Ok(i) => format!("the next stored index is {i}"),
                        Err(e) => format!("an unreadable idx ({e})"),
                    },
                    None if upto < total => format!(
                        "no entry from index {upto} to {}",
                        chunk.hi.saturating_sub(1)
                    ),
                    None => "no entry".to_owned(),
                };
                first.offer(
                    entry_order(upto),
                    mismatch(
                        Location::Entry(upto),
                        "missing: indexes must be gapless from 0",
                        format!("entry {upto}"),
                        found,
                    ),
                );
            }
            let blocks = self.take_blocks(upto).await?;
            let lo = chunk.lo;
            let (leaves, checks) = self.check_entries(chunk, present, blocks).await;
            for (i, r) in leaves.into_iter().enumerate() {
                match r {
                    Ok(leaf) => self.pending.push(leaf),
                    Err(m) => {
                        first.offer(entry_order(lo + i as u64), m);
                        self.pending.push(([0; 32], -1));
                    }
                }
            }
            verified = upto;
            let tiles = self.check_blocks(checks, &mut first);
            self.compare_tiles(tiles, &mut first).await?;
            if let Some((_, m)) = first.0 {
                return Ok(Err(m));
            }
            self.progress.tick(verified);
        }

        // A gap is reported above; entries ending early otherwise means the fetch task
        // died, and a partial audit must never pass.
        if verified < total {
            return Err(DbError::Corrupt(format!(
                "entries stopped arriving at index {verified} of {total}"
            )));
        }

        // Blocks beyond the stored entries, or entries in no block.
        if let Some(b) = self.blocks.next().await? {
            let height = u64::try_from(b.height).unwrap_or(0);
            return Ok(Err(mismatch(
                Location::Block(height),
                "its tree size is beyond the entries stored",
                format!("at most {verified} (the entries stored)"),
                format!("tree size {}", b.tree_size),
            )));
        }
        if !self.pending.is_empty() {
            let index = self.appender.tree_size();
            let height = self.prev.map_or(0, |p| p.height);
            return Ok(Err(mismatch(
                Location::Entry(index),
                "is in no block",
                format!("a block whose range holds index {index}"),
                format!("the latest block, {height}, ends at tree size {index}"),
            )));
        }
        if let Some(m) = self.extra_tiles().await? {
            return Ok(Err(m));
        }
        let origin = self.origin.clone().unwrap_or_default();
        Ok(Ok(Summary {
            origin,
            entries: self.appender.tree_size(),
            blocks: self.blocks_checked,
            tiles: self.tiles_checked,
            tree_size: self.appender.tree_size(),
            root_hash: self.appender.root(),
            elapsed: Duration::ZERO,
            reader: None,
            policies: self.policies.len(),
            receipts: Default::default(),
            trail: Default::default(),
            keys: Default::default(),
        }))
    }

    /// The next blocks whose tree size is at most `upto` (whose entries are all fetched).
    async fn take_blocks(&mut self, upto: u64) -> Result<Vec<StoredBlock>, DbError> {
        let mut out = Vec::new();
        while let Some(b) = self.blocks.peek().await? {
            if u64::try_from(b.tree_size).is_ok_and(|s| s <= upto) || b.tree_size < 0 {
                if let Some(b) = self.blocks.next().await? {
                    out.push(b);
                }
            } else {
                break;
            }
        }
        Ok(out)
    }

    /// Checks `present` entries of `chunk` and opens the checkpoints of `blocks`, all on the
    /// rayon pool. Returns each entry's (leaf hash, stored block height) or its mismatch.
    async fn check_entries(
        &self,
        chunk: EntryChunk,
        present: u64,
        blocks: Vec<StoredBlock>,
    ) -> (Vec<EntryResult>, Vec<BlockCheck>) {
        let verifiers = self.verifiers.clone();
        let policies = Arc::clone(&self.policies);
        let keys = Arc::clone(&self.keys);
        let n = present as usize;
        let handle = tokio::task::spawn_blocking(move || {
            let lo = chunk.lo;
            let rows = &chunk.rows[..n];
            let spans = subject_spans(lo, n, &chunk.subjects);
            rayon::join(
                || {
                    rows.par_iter()
                        .enumerate()
                        .map(|(p, row)| {
                            let (s, e) = spans[p];
                            check_entry(lo + p as u64, row, &chunk.subjects[s..e], &policies, &keys)
                        })
                        .collect::<Vec<_>>()
                },
                || open_all(blocks, &verifiers),
            )
        });
        match handle.await {
            Ok(r) => r,
            // A panic in a check is a bug in acectl, not a finding about the ledger: let it
            // end the process loudly rather than report or pass anything.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(e) => panic!("the entry check task was cancelled: {e}"),
        }
    }

    /// The sequential part of each block's checks; returns the tiles the blocks produced,
    /// with the order of each, for comparison with the stored rows.
    fn check_blocks(
        &mut self,
        checks: Vec<BlockCheck>,
        first: &mut First,
    ) -> Vec<(Order, TileId, Vec<Hash>)> {
        let mut tiles = Vec::new();
        for check in checks {
            if let Err(m) = self.check_block(check, first, &mut tiles) {
                let (order, m) = *m;
                first.offer(order, m);
                break;
            }
        }
        tiles
    }

    fn check_block(
        &mut self,
        check: BlockCheck,
        first: &mut First,
        tiles: &mut Vec<(Order, TileId, Vec<Hash>)>,
    ) -> Result<(), Box<(Order, Box<Mismatch>)>> {
        let b = &check.stored;
        let base = self.appender.tree_size();
        let at = |stage: u8| block_order(base, stage);
        let fail = |order: Order, m: Box<Mismatch>| Box::new((order, m));
        let height = u64::try_from(b.height).map_err(|_| {
            fail(
                at(CHAIN),
                mismatch(
                    Location::Block(0),
                    "height is negative",
                    "a height of 0 or more",
                    b.height.to_string(),
                ),
            )
        })?;
        let loc = Location::Block(height);
        let to_u64 = |v: i64, what: &str| {
            u64::try_from(v).map_err(|_| {
                fail(
                    at(CHAIN),
                    mismatch(
                        loc.clone(),
                        format!("{what} is negative"),
                        "0 or more",
                        v.to_string(),
                    ),
                )
            })
        };
        let to_hash = |v: &[u8], what: &str| {
            Hash::try_from(v).map_err(|_| {
                fail(
                    at(CHAIN),
                    mismatch(
                        loc.clone(),
                        format!("{what} is not a SHA-256 hash"),
                        "32 bytes",
                        format!("{} bytes", v.len()),
                    ),
                )
            })
        };
        let header = BlockHeader {
            height,
            first_index: to_u64(b.first_index, "first_index")?,
            tree_size: to_u64(b.tree_size, "tree_size")?,
            root_hash: to_hash(&b.root_hash, "root_hash")?,
            prev_block_hash: to_hash(&b.prev_block_hash, "prev_block_hash")?,
            sealed_at: b.sealed_at,
        };
        let stored_hash = to_hash(&b.block_hash, "block_hash")?;

        // Chain: genesis, then each block continuing the previous one.
        match &self.prev {
            None => header.check_genesis().map_err(|e| {
                fail(
                    at(CHAIN),
                    mismatch(
                        loc.clone(),
                        format!("the first block is not the genesis block: {e}"),
                        "height 0, first_index 0, tree size 0, the empty root, a zero prev_block_hash",
                        format!(
                            "height {}, first_index {}, tree size {}, root {}, prev_block_hash {}",
                            header.height,
                            header.first_index,
                            header.tree_size,
                            hex::encode(header.root_hash),
                            hex::encode(header.prev_block_hash)
                        ),
                    ),
                )
            })?,
            Some(prev) => header.check_follows(prev).map_err(|e| {
                let (expected, found) = match &e {
                    ace_core::block::BlockError::Height { height, expected } => {
                        (format!("height {expected}"), format!("height {height}"))
                    }
                    ace_core::block::BlockError::FirstIndex {
                        first_index,
                        expected,
                        ..
                    } => (
                        format!("first_index {expected}"),
                        format!("first_index {first_index}"),
                    ),
                    ace_core::block::BlockError::TreeSize {
                        tree_size,
                        first_index,
                        ..
                    } => (
                        format!("a tree size of at least {first_index}"),
                        format!("tree size {tree_size}"),
                    ),
                    ace_core::block::BlockError::PrevHash { found, expected, .. } => (
                        format!("prev_block_hash {expected} (the hash of block {}'s header)", prev.height),
                        format!("prev_block_hash {found}"),
                    ),
                    ace_core::block::BlockError::Genesis => (String::new(), String::new()),
                };
                fail(
                    at(CHAIN),
                    mismatch(loc.clone(), format!("does not follow block {}: {e}", prev.height), expected, found),
                )
            })?,
        }
        // check_follows (or genesis) makes first_index the tree size reached so far, and
        // take_blocks made tree_size at most the entries fetched.
        let n = usize::try_from(header.tree_size - header.first_index).unwrap_or(usize::MAX);
        if n > self.pending.len() {
            return Err(fail(
                at(CHAIN),
                mismatch(
                    loc,
                    "its range is beyond the entries checked",
                    format!("tree size at most {}", base + self.pending.len() as u64),
                    format!("tree size {}", header.tree_size),
                ),
            ));
        }
        let size = header.tree_size;
        let order = |stage: u8| block_order(size, stage);
        if let Some(p) = self.pending[..n].iter().position(|(_, h)| *h != b.height) {
            let index = base + p as u64;
            first.offer(
                order(ENTRY_BLOCK),
                mismatch(
                    Location::Entry(index),
                    "block_height is not the block whose range holds the index",
                    format!(
                        "{height} (block {height} holds entries {}..{})",
                        header.first_index,
                        header.tree_size.saturating_sub(1)
                    ),
                    self.pending[p].1.to_string(),
                ),
            );
        }
        let leaves: Vec<Hash> = self.pending.drain(..n).map(|(h, _)| h).collect();
        let produced = self.appender.append(&leaves).map_err(|e| {
            fail(
                order(TILES),
                mismatch(
                    loc.clone(),
                    format!("the tree cannot be extended: {e}"),
                    "",
                    "",
                ),
            )
        })?;
        for (id, hashes) in produced {
            tiles.push((order(TILES), id, hashes));
        }
        let root = self.appender.root();
        if root != header.root_hash {
            return Err(fail(
                order(ROOT),
                mismatch(
                    loc,
                    format!("root_hash is not the root of the tree at size {size}"),
                    format!("{} (recomputed from the leaves)", hex::encode(root)),
                    format!("{} (stored)", hex::encode(header.root_hash)),
                ),
            ));
        }
        let computed = header.block_hash();
        if computed != stored_hash {
            return Err(fail(
                order(HASH),
                mismatch(
                    loc,
                    "block_hash is not the SHA-256 of the header's RFC 8785 JSON",
                    format!("{} (recomputed from the header)", hex::encode(computed)),
                    format!("{} (stored)", hex::encode(stored_hash)),
                ),
            ));
        }
        let cp = check.checkpoint.map_err(|e| {
            fail(
                order(CHECKPOINT),
                mismatch(
                    loc.clone(),
                    "checkpoint does not open with the trusted ledger key(s)",
                    "a checkpoint note signed by a key given with --ledger-key",
                    e,
                ),
            )
        })?;
        if cp.tree_size != size || cp.root_hash != header.root_hash {
            return Err(fail(
                order(CHECKPOINT),
                mismatch(
                    loc,
                    "checkpoint is not for this block",
                    format!("tree size {size}, root {}", hex::encode(header.root_hash)),
                    format!(
                        "tree size {}, root {}",
                        cp.tree_size,
                        hex::encode(cp.root_hash)
                    ),
                ),
            ));
        }
        match &self.origin {
            None => self.origin = Some(cp.origin),
            Some(o) if *o != cp.origin => {
                return Err(fail(
                    order(CHECKPOINT),
                    mismatch(
                        loc,
                        "checkpoint origin differs from the earlier blocks'",
                        o.clone(),
                        cp.origin,
                    ),
                ))
            }
            Some(_) => {}
        }
        self.prev = Some(header);
        self.blocks_checked += 1;
        Ok(())
    }

    /// Compares the tiles the blocks produced with the stored rows, in one query.
    async fn compare_tiles(
        &mut self,
        tiles: Vec<(Order, TileId, Vec<Hash>)>,
        first: &mut First,
    ) -> Result<(), DbError> {
        if tiles.is_empty() {
            return Ok(());
        }
        let levels: Vec<i16> = tiles.iter().map(|(_, id, _)| i16::from(id.level)).collect();
        let indexes: Vec<i64> = tiles.iter().map(|(_, id, _)| id.index as i64).collect();
        let widths: Vec<i16> = tiles.iter().map(|(_, id, _)| id.width as i16).collect();
        let rows = self
            .main
            .query(
                "SELECT t.level, t.idx, t.width, t.hashes \
                 FROM unnest($1::smallint[], $2::bigint[], $3::smallint[]) AS k(level, idx, width) \
                 JOIN ledger_tiles t USING (level, idx, width)",
                &[&levels, &indexes, &widths],
            )
            .await
            .map_err(DbError::query("reading tiles"))?;
        let mut stored: HashMap<(i16, i64, i16), Vec<u8>> = HashMap::with_capacity(rows.len());
        for r in rows {
            let key = (
                r.try_get(0).map_err(DbError::query("decoding tiles"))?,
                r.try_get(1).map_err(DbError::query("decoding tiles"))?,
                r.try_get(2).map_err(DbError::query("decoding tiles"))?,
            );
            stored.insert(key, r.try_get(3).map_err(DbError::query("decoding tiles"))?);
        }
        for (order, id, hashes) in tiles {
            self.tiles_checked += 1;
            self.produced.insert((id.level, id.index, id.width));
            let key = (i16::from(id.level), id.index as i64, id.width as i16);
            let path = id.path();
            let Some(bytes) = stored.get(&key) else {
                first.offer(
                    order,
                    mismatch(
                        Location::Tile {
                            path,
                            position: None,
                        },
                        "is missing from ledger_tiles",
                        format!(
                            "a row (level {}, idx {}, width {})",
                            id.level, id.index, id.width
                        ),
                        "no row",
                    ),
                );
                continue;
            };
            let found: Vec<&[u8]> = bytes.chunks(32).collect();
            if let Some(p) = (0..hashes.len().max(found.len()))
                .find(|&p| found.get(p).copied() != hashes.get(p).map(|h| h.as_slice()))
            {
                let first_leaf = (id.index * 256 + p as u64) << (8 * u32::from(id.level));
                first.offer(
                    order,
                    mismatch(
                        Location::Tile {
                            path,
                            position: Some(p),
                        },
                        format!(
                            "hash {p} (level {} node over entries from {first_leaf}) differs",
                            id.level
                        ),
                        hashes.get(p).map_or("no hash".into(), |h| {
                            format!("{} (recomputed from the leaves)", hex::encode(h))
                        }),
                        found
                            .get(p)
                            .map_or("no hash".into(), |h| format!("{} (stored)", hex::encode(h))),
                    ),
                );
            }
        }
        Ok(())
    }

    /// A stored tile the log never produced: readers could serve it.
    async fn extra_tiles(&self) -> Result<Option<Box<Mismatch>>, DbError> {
        let n: i64 = self
            .main
            .query_one("SELECT count(*) FROM ledger_tiles", &[])
            .await
            .map_err(DbError::query("counting tiles"))?
            .get(0);
        if n as u64 == self.produced.len() as u64 {
            return Ok(None);
        }
        let rows = self
            .main
            .query(
                "SELECT level, idx, width FROM ledger_tiles ORDER BY level, idx, width",
                &[],
            )
            .await
            .map_err(DbError::query("listing tiles"))?;
        for r in rows {
            let decode = DbError::query("decoding tiles");
            let (level, idx, width): (i16, i64, i16) =
                match (r.try_get(0), r.try_get(1), r.try_get(2)) {
                    (Ok(l), Ok(i), Ok(w)) => (l, i, w),
                    (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => return Err(decode(e)),
                };
            let key = (level as u8, idx as u64, width as u16);
            if !self.produced.contains(&key) {
                let path = TileId::new(key.0, key.1, key.2)
                    .map(|id| id.path())
                    .unwrap_or_else(|e| format!("(level {level}, idx {idx}, width {width}): {e}"));
                return Ok(Some(mismatch(
                    Location::Tile {
                        path,
                        position: None,
                    },
                    "is stored but the log never produced it (a reader could serve it)",
                    "no such row",
                    format!("a row (level {level}, idx {idx}, width {width})"),
                )));
            }
        }
        Ok(Some(mismatch(
            Location::Ledger,
            "ledger_tiles holds a different number of rows than the log produced",
            self.produced.len().to_string(),
            n.to_string(),
        )))
    }
}

fn open_all(blocks: Vec<StoredBlock>, verifiers: &[NoteVerifier]) -> Vec<BlockCheck> {
    blocks
        .into_par_iter()
        .map(|stored| {
            let checkpoint =
                open_checkpoint(&stored.checkpoint, verifiers).map_err(|e| e.to_string());
            BlockCheck { stored, checkpoint }
        })
        .collect()
}

type EntryResult = Result<(Hash, i64), Box<Mismatch>>;

/// For each of the `n` entries from `lo`, the range of its rows in `subjects` (ordered by
/// idx).
fn subject_spans(lo: u64, n: usize, subjects: &[Row]) -> Vec<(usize, usize)> {
    let mut spans = vec![(0, 0); n];
    let mut at = 0;
    for (p, span) in spans.iter_mut().enumerate() {
        let index = (lo + p as u64) as i64;
        while at < subjects.len() && subjects[at].try_get::<_, i64>(0).is_ok_and(|i| i < index) {
            at += 1;
        }
        let start = at;
        while at < subjects.len() && subjects[at].try_get::<_, i64>(0).is_ok_and(|i| i == index) {
            at += 1;
        }
        *span = (start, at);
    }
    spans
}

/// Everything about entry `index` that needs only its own rows.
/// Every kept policy text must hash to its version: an entry's `policy_version` then names
/// exactly the rules that admitted it. Returns the versions.
async fn check_policies(c: &Client) -> Result<Result<HashSet<String>, Box<Mismatch>>, DbError> {
    let rows = c
        .query(
            "SELECT version, source FROM ledger_policies ORDER BY version",
            &[],
        )
        .await
        .map_err(DbError::query("reading ledger_policies"))?;
    let mut versions = HashSet::new();
    for r in rows {
        let version: String = r.get(0);
        let source: String = r.get(1);
        let computed = ace_core::policy::version_of(source.as_bytes());
        if computed != version {
            return Ok(Err(mismatch(
                Location::Policy(version.clone()),
                "the kept policy text does not hash to its version",
                format!("{version} (ledger_policies.version)"),
                format!("{computed} (SHA-256 of ledger_policies.source)"),
            )));
        }
        versions.insert(version);
    }
    Ok(Ok(versions))
}

fn check_entry(
    index: u64,
    row: &Row,
    subjects: &[Row],
    policies: &HashSet<String>,
    keys: &crate::key_events::LedgerKeys,
) -> EntryResult {
    let loc = || Location::Entry(index);
    let col = |name: &'static str| {
        move |e: tokio_postgres::Error| {
            mismatch(
                Location::Entry(index),
                format!("column {name} is unreadable"),
                "a value of the schema's type",
                e.to_string(),
            )
        }
    };
    let digest: &str = row.try_get(1).map_err(col("digest"))?;
    let producer: &str = row.try_get(2).map_err(col("producer"))?;
    let raw: &[u8] = row.try_get(3).map_err(col("envelope"))?;
    let leaf: &[u8] = row.try_get(4).map_err(col("leaf"))?;
    let integrated_time: i64 = row.try_get(5).map_err(col("integrated_time"))?;
    let block_height: i64 = row.try_get(6).map_err(col("block_height"))?;
    let payload_type: &str = row.try_get(7).map_err(col("payload_type"))?;
    let predicate_type: Option<&str> = row.try_get(8).map_err(col("predicate_type"))?;
    let keyid: &str = row.try_get(9).map_err(col("keyid"))?;
    let policy_version: Option<&str> = row.try_get(10).map_err(col("policy_version"))?;
    if let Some(v) = policy_version.filter(|v| !policies.contains(*v)) {
        return Err(mismatch(
            loc(),
            "the entry names a policy version whose text is not kept",
            format!("a ledger_policies row for {v}"),
            "none",
        ));
    }

    let envelope = Envelope::parse(raw).map_err(|r| {
        mismatch(
            loc(),
            "the stored envelope is not a valid DSSE envelope",
            "a DSSE envelope (as it was admitted)",
            r.to_string(),
        )
    })?;
    let computed = envelope.digest();
    if computed.as_str() != digest {
        return Err(mismatch(
            loc(),
            "digest column is not the envelope digest",
            format!("{computed} (SHA-256 of the stored envelope's PAE)"),
            format!("{digest} (ledger_entries.digest)"),
        ));
    }
    let rebuilt = LeafRecord {
        digest: computed.as_str().to_owned(),
        envelope_sha256: envelope_sha256(raw),
        index,
        integrated_time,
        producer: producer.to_owned(),
    };
    let rebuilt_bytes = rebuilt.to_bytes();
    if rebuilt_bytes != leaf {
        return Err(leaf_mismatch(index, &rebuilt, &rebuilt_bytes, leaf));
    }
    if payload_type != envelope.payload_type {
        return Err(mismatch(
            loc(),
            "payload_type column is not the envelope's payloadType",
            envelope.payload_type,
            payload_type,
        ));
    }
    if !envelope.signatures.iter().any(|s| s.keyid == keyid) {
        return Err(mismatch(
            loc(),
            "keyid column names no signature of the envelope",
            format!(
                "one of {}",
                envelope
                    .signatures
                    .iter()
                    .map(|s| s.keyid.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            keyid,
        ));
    }
    if producer == ace_core::ids::ProducerId::LEDGER {
        keys.check_ledger_entry(index)?;
    } else {
        keys.check_entry(index, producer, integrated_time, &envelope, keyid)?;
    }
    let mut stored_subjects = subjects
        .iter()
        .map(|r| {
            Ok((
                r.try_get::<_, &str>(1)?,
                r.try_get::<_, &str>(2)?,
                r.try_get::<_, &str>(3)?,
            ))
        })
        .collect::<Result<Vec<_>, tokio_postgres::Error>>()
        .map_err(col("ledger_subjects"))?;
    stored_subjects.sort_unstable();
    let (expected_predicate, expected_subjects) = if envelope.payload_type == IN_TOTO_PAYLOAD_TYPE {
        let st = Statement::parse(&envelope.payload).map_err(|r| {
            mismatch(
                loc(),
                "the envelope's in-toto statement does not parse",
                "an in-toto Statement v1 (as it was admitted)",
                r.to_string(),
            )
        })?;
        let mut subs: Vec<(String, String, String)> = st
            .subjects()
            .into_iter()
            .map(|s| (s.name, s.algorithm, s.value))
            .collect();
        subs.sort_unstable();
        (Some(st.predicate_type), subs)
    } else {
        (None, Vec::new())
    };
    if predicate_type != expected_predicate.as_deref() {
        return Err(mismatch(
            loc(),
            "predicate_type column is not the statement's predicateType",
            format!("{expected_predicate:?}"),
            format!("{predicate_type:?}"),
        ));
    }
    let same = stored_subjects.len() == expected_subjects.len()
        && stored_subjects
            .iter()
            .zip(&expected_subjects)
            .all(|(s, e)| s.0 == e.0 && s.1 == e.1 && s.2 == e.2);
    if !same {
        let show = |v: Vec<String>| format!("[{}]", v.join(", "));
        return Err(mismatch(
            loc(),
            "ledger_subjects rows are not the statement's subjects",
            show(
                expected_subjects
                    .iter()
                    .map(|(n, a, v)| format!("{n} {a}:{v}"))
                    .collect(),
            ),
            show(
                stored_subjects
                    .iter()
                    .map(|(n, a, v)| format!("{n} {a}:{v}"))
                    .collect(),
            ),
        ));
    }
    Ok((leaf_hash(leaf), block_height))
}

/// Names the leaf field that differs between the leaf rebuilt from the envelope and the
/// entry's columns and the stored leaf.
fn leaf_mismatch(
    index: u64,
    rebuilt: &LeafRecord,
    rebuilt_bytes: &[u8],
    stored: &[u8],
) -> Box<Mismatch> {
    let loc = Location::Entry(index);
    let stored_leaf = match LeafRecord::parse(stored) {
        Ok(l) => l,
        Err(e) => {
            return mismatch(
                loc,
                format!("the stored leaf is not a canonical leaf record ({e})"),
                String::from_utf8_lossy(rebuilt_bytes).into_owned(),
                String::from_utf8_lossy(stored).into_owned(),
            )
        }
    };
    if let Some((field, expected, found)) = rebuilt.differences(&stored_leaf).into_iter().next() {
        let source = match field {
            "digest" => "SHA-256 of the stored envelope's PAE",
            "envelope_sha256" => "SHA-256 of the stored envelope bytes",
            "index" => "ledger_entries.idx",
            "integrated_time" => "ledger_entries.integrated_time",
            _ => "ledger_entries.producer",
        };
        return mismatch(
            loc,
            format!("leaf field {field} does not match the entry"),
            format!("{expected} ({source})"),
            format!("{found} (in the stored leaf, which the tree commits to)"),
        );
    }
    mismatch(
        loc,
        "the stored leaf differs from the leaf rebuilt from the entry",
        String::from_utf8_lossy(rebuilt_bytes).into_owned(),
        String::from_utf8_lossy(stored).into_owned(),
    )
}

/// A reader failure that is the reader's or the network's, not the ledger's.
enum ReaderError {
    CannotRun(AuditError),
    Db(DbError),
}

impl ReaderError {
    fn or_db(self, target: &str) -> AuditError {
        match self {
            ReaderError::CannotRun(e) => e,
            ReaderError::Db(source) => AuditError::Db {
                target: target.to_owned(),
                source,
            },
        }
    }
}

fn reader_client(
    base: &str,
    ca_file: Option<&std::path::Path>,
) -> Result<crate::http::Reader, AuditError> {
    crate::http::Reader::with_ca(base, ca_file).map_err(|e| setting("--reader", e.to_string()))
}

/// The reader's latest checkpoint opens with the key and is the stored checkpoint of the
/// block with its tree size.
async fn check_reader(
    reader: &crate::http::Reader,
    main: &Client,
    verifiers: &[NoteVerifier],
    keys: &crate::key_events::LedgerKeys,
) -> Result<Result<String, Box<Mismatch>>, ReaderError> {
    let url = reader.url("/v1/checkpoint");
    let body = reader.get_ok("/v1/checkpoint").await.map_err(|e| {
        ReaderError::CannotRun(AuditError::Reader {
            url: url.clone(),
            reason: e.to_string(),
        })
    })?;
    let loc = Location::Reader(url.clone());
    let cp = match open_checkpoint_bytes(&body, verifiers) {
        Ok(cp) => cp,
        Err(e) => {
            return Ok(Err(mismatch(
                loc,
                "the served checkpoint does not open with the trusted ledger key(s)",
                "a checkpoint note signed by a key given with --ledger-key",
                e.to_string(),
            )))
        }
    };
    let Ok(size) = i64::try_from(cp.tree_size) else {
        return Ok(Err(mismatch(
            loc,
            "the served checkpoint's tree size is no block's",
            "a tree size stored in ledger_blocks",
            cp.tree_size.to_string(),
        )));
    };
    let row = main
        .query_opt(
            "SELECT height, checkpoint FROM ledger_blocks WHERE tree_size = $1",
            &[&size],
        )
        .await
        .map_err(|e| {
            ReaderError::Db(DbError::Query {
                what: "reading the block of the reader's checkpoint",
                source: e,
            })
        })?;
    let Some(row) = row else {
        return Ok(Err(mismatch(
            loc,
            "the served checkpoint's tree size is no block's",
            "a tree size stored in ledger_blocks",
            cp.tree_size.to_string(),
        )));
    };
    let height: i64 = row.get(0);
    let stored: String = row.get(1);
    if stored.as_bytes() != body.as_slice() {
        return Ok(Err(mismatch(
            loc,
            format!("the served checkpoint is not block {height}'s stored checkpoint"),
            format!("{stored:?} (ledger_blocks.checkpoint)"),
            format!("{:?} (served)", String::from_utf8_lossy(&body)),
        )));
    }
    let keys_url = reader.url("/v1/keys");
    let served = reader.get_json("/v1/keys").await.map_err(|e| {
        ReaderError::CannotRun(AuditError::Reader {
            url: keys_url.clone(),
            reason: e.to_string(),
        })
    })?;
    let now_ms = chrono::Utc::now().timestamp_millis();
    let checked = match crate::key_events::check_served_keys(&served, keys, &keys_url, now_ms) {
        Ok(n) => n,
        Err(m) => return Ok(Err(m)),
    };
    Ok(Ok(format!(
        "GET {url}: checkpoint at tree size {} opens with the key and is block {height}'s; \
         GET {keys_url}: the {checked} keys the log's key events register are served as they describe",
        cp.tree_size
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leaf() -> LeafRecord {
        LeafRecord {
            digest: format!("sha256:{}", "ab".repeat(32)),
            envelope_sha256: "cd".repeat(32),
            index: 7,
            integrated_time: 1_767_225_600_123,
            producer: "acme".into(),
        }
    }

    #[test]
    fn a_leaf_mismatch_names_the_field_and_both_sources() {
        let rebuilt = leaf();
        let cases: [(&str, LeafRecord); 4] = [
            (
                "digest",
                LeafRecord {
                    digest: format!("sha256:{}", "00".repeat(32)),
                    ..leaf()
                },
            ),
            (
                "envelope_sha256",
                LeafRecord {
                    envelope_sha256: "00".repeat(32),
                    ..leaf()
                },
            ),
            (
                "integrated_time",
                LeafRecord {
                    integrated_time: 1,
                    ..leaf()
                },
            ),
            (
                "producer",
                LeafRecord {
                    producer: "other".into(),
                    ..leaf()
                },
            ),
        ];
        for (field, stored) in cases {
            let m = leaf_mismatch(7, &rebuilt, &rebuilt.to_bytes(), &stored.to_bytes());
            assert_eq!(m.location, Location::Entry(7));
            assert_eq!(
                m.what,
                format!("leaf field {field} does not match the entry")
            );
            assert!(m.found.contains("in the stored leaf"), "{m}");
        }
        let m = leaf_mismatch(7, &rebuilt, &rebuilt.to_bytes(), b"{\"not\":\"a leaf\"}");
        assert!(
            m.what
                .starts_with("the stored leaf is not a canonical leaf record"),
            "{m}"
        );
    }

    #[test]
    fn checks_are_ordered_as_the_log_is_built() {
        // Block of tree size 0 (genesis) before entry 0; entry 9 before the block ending at
        // 10, whose stages come in order; that block before entry 10.
        assert!(block_order(0, CHECKPOINT) < entry_order(0));
        assert!(entry_order(9) < block_order(10, CHAIN));
        let stages = [CHAIN, ENTRY_BLOCK, TILES, ROOT, HASH, CHECKPOINT];
        assert!(stages
            .windows(2)
            .all(|w| block_order(10, w[0]) < block_order(10, w[1])));
        assert!(block_order(10, CHECKPOINT) < entry_order(10));
        let mut first = First::default();
        let m = |i| mismatch(Location::Entry(i), "x", "", "");
        first.offer(entry_order(5), m(5));
        first.offer(entry_order(3), m(3));
        first.offer(entry_order(4), m(4));
        first.offer(entry_order(3), m(99));
        assert_eq!(first.0.map(|(_, m)| m.location), Some(Location::Entry(3)));
    }

    #[test]
    fn reader_urls_are_http_or_https_with_a_host() {
        assert!(reader_client("http://127.0.0.1:8081/", None).is_ok());
        assert!(reader_client("https://reader.example", None).is_ok());
        for bad in [
            "ftp://reader.example",
            "reader.example:8081",
            "not a url",
            "",
        ] {
            assert!(
                matches!(
                    reader_client(bad, None),
                    Err(AuditError::Setting {
                        setting: "--reader",
                        ..
                    })
                ),
                "{bad}"
            );
        }
    }
}
