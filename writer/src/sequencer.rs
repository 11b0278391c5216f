//! The writer's main loop: leadership, batches, and fault handling.
//!
//! Every outcome is sorted three ways. Rejected: a DLQ row in the batch's transaction,
//! then an ack. Transient (Postgres or NATS unreachable): the batch is abandoned, its
//! messages are nak'ed with a delay, and the writer reconnects with backoff; never the
//! DLQ. Fatal for this leadership (the log moved under us, a corrupt row): abandon the
//! batch, drop the connection (and with it the lock), reload.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_core::checkpoint::{NoteError, NoteSigner};
use ace_core::db::{self, DbError};
use ace_core::nats::{Names, NatsError, WRITER_CONSUMER};
use async_nats::jetstream::{
    self, consumer::pull::Stream as PullStream, consumer::PullConsumer, AckKind,
};
use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::sync::watch;
use tokio_postgres::Client;

use crate::batch::{self, LogState};
use crate::config::Config;
use crate::crashpoint::{self, Point};
use crate::http::{self, Role, Status};
use crate::metrics::{Metrics, UNKNOWN_PRODUCER_LABEL};
use crate::store;
use crate::verify::{self, Incoming, Registry, Verdict};
use ace_core::policy::{Policy, RateLimiter, Tally};

#[derive(Debug, thiserror::Error)]
pub enum WriterError {
    #[error("ledger key {path}: {reason}")]
    LedgerKey { path: String, reason: String },
    #[error("ACE_LOG_ORIGIN is {origin:?} but the ledger key {path} is named {key_name:?}; they must match")]
    OriginMismatch {
        origin: String,
        key_name: String,
        path: String,
    },
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("JetStream is not set up: {0} (run `acectl nats init` with the same ACE_PREFIX)")]
    NotInitialised(String),
    #[error("{0}")]
    Database(DbError),
    #[error("cannot listen on {addr}: {source}")]
    Listen {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("{0}")]
    Policy(#[from] ace_core::policy::PolicyError),
}

/// Why a batch was abandoned.
#[derive(Debug, thiserror::Error)]
enum BatchError {
    #[error("{0}")]
    Transient(String),
    #[error("{0}")]
    Fatal(String),
}

impl From<DbError> for BatchError {
    fn from(e: DbError) -> Self {
        if e.is_transient() {
            BatchError::Transient(format!("postgres: {e}"))
        } else {
            BatchError::Fatal(format!("postgres: {e}"))
        }
    }
}

impl From<NoteError> for BatchError {
    fn from(e: NoteError) -> Self {
        BatchError::Fatal(format!("signing the checkpoint: {e}"))
    }
}

impl From<batch::PlanError> for BatchError {
    fn from(e: batch::PlanError) -> Self {
        BatchError::Fatal(e.to_string())
    }
}

/// The sequencer's advisory lock key, per origin, so that several logs can share a database.
fn lock_key(origin: &str) -> i64 {
    let h = Sha256::digest(format!("ace-ledger-writer\n{origin}"));
    i64::from_be_bytes([h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]])
}

fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Logs a fault once when it starts and once when it clears, not on every retry.
#[derive(Default)]
struct FaultLog {
    current: Option<String>,
}

impl FaultLog {
    fn fault(&mut self, what: &str, detail: &str) {
        let key = format!("{what}: {detail}");
        if self.current.as_deref() != Some(key.as_str()) {
            tracing::error!(
                component = what,
                error = detail,
                "fault; retrying with backoff"
            );
            self.current = Some(key);
        }
    }
    fn clear(&mut self, what: &str) {
        if let Some(prev) = self.current.take() {
            tracing::info!(component = what, previous = %prev, "recovered");
        }
    }
}

struct Backoff {
    next: Duration,
    max: Duration,
}

impl Backoff {
    fn new(max: Duration) -> Self {
        Backoff {
            next: Duration::from_millis(100),
            max,
        }
    }
    fn reset(&mut self) {
        self.next = Duration::from_millis(100);
    }
    async fn wait(&mut self, shutdown: &mut watch::Receiver<bool>) {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        let _ = tokio::time::timeout(d, shutdown.wait_for(|s| *s)).await;
    }
}

fn load_key(path: &std::path::Path, origin: Option<&str>) -> Result<NoteSigner, WriterError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|e| WriterError::LedgerKey {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    let signer = NoteSigner::parse_key_file(text.trim()).map_err(|e| WriterError::LedgerKey {
        path: shown.clone(),
        reason: e.to_string(),
    })?;
    if let Some(origin) = origin {
        if origin != signer.name() {
            return Err(WriterError::OriginMismatch {
                origin: origin.to_owned(),
                key_name: signer.name().to_string(),
                path: shown,
            });
        }
    }
    Ok(signer)
}

/// The ledger key, then the extra keys of a rotation's overlap: all must bear the log's
/// name (the origin), since every checkpoint is one note signed by each.
fn load_signers(cfg: &Config) -> Result<Vec<NoteSigner>, WriterError> {
    let first = load_key(&cfg.ledger_key_file, cfg.log_origin.as_deref())?;
    let origin = first.name().to_owned();
    let mut signers = vec![first];
    for path in &cfg.ledger_extra_key_files {
        let s = load_key(path, Some(&origin))?;
        if signers.iter().any(|k| k.key_hash() == s.key_hash()) {
            return Err(WriterError::LedgerKey {
                path: path.display().to_string(),
                reason:
                    "the same key is given twice (ACE_LEDGER_KEY_FILE, ACE_LEDGER_EXTRA_KEY_FILES)"
                        .into(),
            });
        }
        signers.push(s);
    }
    Ok(signers)
}

struct Writer {
    cfg: Config,
    names: Names,
    signer_name: String,
    metrics: Arc<Metrics>,
    status: Arc<Status>,
    consumer: PullConsumer,
    faults: FaultLog,
    decider: Decider,
    committer: Committer,
}

/// The first stage of the pipeline: take a batch off the intake and decide every message
/// (parse, registry, signatures, policy). It runs while the previous batch commits.
struct Decider {
    names: Names,
    allowed_payload_types: Vec<String>,
    max_envelope_bytes: usize,
    batch_max_entries: usize,
    batch_max_delay: Duration,
    db_timeout: Duration,
    policy: watch::Receiver<Arc<Policy>>,
    limiter: RateLimiter,
    /// Busy keys' verification tables, kept between batches.
    prepared: verify::PreparedKeys,
}

/// A batch taken off the intake and decided, waiting for its transaction.
struct Prepared {
    msgs: Vec<jetstream::Message>,
    /// Shared with the parse task instead of copied for it.
    incoming: Arc<Vec<Incoming>>,
    verdicts: Vec<Verdict>,
    /// Entries already in the log among the batch's digests, as the decider saw the log:
    /// every batch committed before the one committing while it decided.
    existing: HashMap<String, batch::ExistingEntry>,
    tally: Tally,
    /// The policy snapshot that decided this batch.
    policy: Arc<Policy>,
    now_ms: i64,
    /// The last key event in the registry snapshot that decided the batch: every event
    /// up to it goes into the log before the batch's entries.
    last_key_event: u64,
    taken: Instant,
    registry_read: Duration,
    decided: Duration,
}

/// What the first stage came back with.
enum Next {
    /// Nothing to take in the last second, or the stage was not run.
    Idle,
    Shutdown,
    /// The pull subscription failed; nothing was taken.
    Nats(String),
    Ready(Box<Prepared>),
    /// Taken but not decided (Postgres failed while reading the registry): the messages
    /// go back to JetStream.
    Failed(Vec<jetstream::Message>, BatchError),
}

/// The second stage: one transaction per batch on the lock's connection, then the
/// JetStream acks and producers' acks, sent in the background so that the next batch's
/// transaction does not wait for them.
struct Committer {
    /// The ledger key first, then the extra keys of a rotation; each signs every note.
    signers: Vec<NoteSigner>,
    metrics: Arc<Metrics>,
    names: Names,
    /// Acks and notices go out on it; flushed before the writer stops.
    nats: async_nats::Client,
    nak_delay: Duration,
    db_timeout: Duration,
    /// The policy version whose text this writer has stored in ledger_policies.
    recorded_policy: Option<String>,
    /// Acks of committed batches still going out; bounded so a slow NATS slows intake
    /// instead of piling up tasks.
    settling: std::collections::VecDeque<tokio::task::JoinHandle<()>>,
    /// The entries of the last committed batch, by digest: the one batch the decider's
    /// dedupe lookup may not have seen (it was committing meanwhile).
    last_committed: HashMap<String, batch::ExistingEntry>,
    /// Every key event up to this one is in the log (known after a commit in this
    /// leadership), so a batch whose registry saw no later one skips the lookup.
    key_events_in_log: Option<u64>,
}

/// Where a batch's transaction spent its time, for the debug line of each block: the
/// head check and dedupe lookups, planning (leaves, tiles, checkpoint), writing the rows,
/// and the commit itself.
struct CommitStages {
    lookups: Duration,
    plan: Duration,
    write: Duration,
    commit: Duration,
}

/// How many committed batches may have their acks in flight at once.
const SETTLING_MAX: usize = 2;

/// Run the writer until `shutdown` turns true. A batch in flight when it does is finished
/// (committed and acked) or, if it cannot be, abandoned uncommitted for redelivery.
pub async fn run(cfg: Config, mut shutdown: watch::Receiver<bool>) -> Result<(), WriterError> {
    let signers = load_signers(&cfg)?;
    let signer = &signers[0];
    let names = Names::new(&cfg.prefix)?;
    let metrics = Arc::new(Metrics::new()?);
    let status = Arc::new(Status::default());
    let policy = crate::policy::start(
        cfg.policy_file.clone(),
        cfg.policy_poll,
        metrics.clone(),
        shutdown.clone(),
    )?;

    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| WriterError::Listen {
            addr: cfg.listen,
            source,
        })?;
    let app = http::app(http::AppState {
        status: status.clone(),
        metrics: metrics.clone(),
    });
    let mut http_shutdown = shutdown.clone();
    tokio::spawn(async move {
        let serve = axum::serve(listener, app).with_graceful_shutdown(async move {
            let _ = http_shutdown.wait_for(|s| *s).await;
        });
        if let Err(e) = serve.await {
            tracing::error!(error = %e, "health and metrics server stopped");
        }
    });
    tracing::info!(listen = %cfg.listen, prefix = %names.prefix(), origin = signer.name(), "writer starting");

    let nats = ace_core::nats::ConnectOptions {
        url: cfg.nats_url.clone(),
        creds_file: cfg.nats_creds.clone(),
        nkey_file: cfg.nats_nkey_file.clone(),
        name: format!("ace-writer {}", names.prefix()),
        tls: cfg.nats_tls.clone(),
    };
    let mut faults = FaultLog::default();
    let mut backoff = Backoff::new(cfg.retry_max);
    let client = loop {
        match ace_core::nats::connect(&nats).await {
            Ok(c) => break c,
            // A setting that cannot work will not work on retry: stop, naming it.
            Err(
                e @ (NatsError::Credentials { .. }
                | NatsError::TlsFile { .. }
                | NatsError::TlsIncomplete { .. }),
            ) => return Err(e.into()),
            Err(e) => {
                metrics.transient_errors.with_label_values(&["nats"]).inc();
                faults.fault("nats", &e.to_string());
                backoff.wait(&mut shutdown).await;
                if *shutdown.borrow() {
                    return Ok(());
                }
            }
        }
    };
    faults.clear("nats");
    status.set_nats(true);
    let js = jetstream::new(client.clone());
    let stream_name = names.intake_stream();
    let stream = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| WriterError::NotInitialised(format!("stream {stream_name}: {e}")))?;
    let consumer: PullConsumer = stream.get_consumer(WRITER_CONSUMER).await.map_err(|e| {
        WriterError::NotInitialised(format!("consumer {WRITER_CONSUMER} on {stream_name}: {e}"))
    })?;

    let mut w = Writer {
        names: names.clone(),
        signer_name: signer.name().to_string(),
        status,
        consumer,
        faults,
        decider: Decider {
            names: names.clone(),
            allowed_payload_types: cfg.allowed_payload_types.clone(),
            max_envelope_bytes: cfg.max_envelope_bytes,
            batch_max_entries: cfg.batch_max_entries,
            batch_max_delay: cfg.batch_max_delay,
            db_timeout: cfg.db_timeout,
            policy,
            limiter: RateLimiter::new(),
            prepared: verify::PreparedKeys::default(),
        },
        committer: Committer {
            signers,
            metrics: metrics.clone(),
            names,
            nats: client.clone(),
            nak_delay: cfg.nak_delay,
            db_timeout: cfg.db_timeout,
            recorded_policy: None,
            settling: Default::default(),
            last_committed: HashMap::new(),
            key_events_in_log: None,
        },
        metrics,
        cfg,
    };
    let nats_status = w.status.clone();
    let mut nats_events = shutdown.clone();
    tokio::spawn(async move {
        loop {
            nats_status
                .set_nats(client.connection_state() == async_nats::connection::State::Connected);
            if tokio::time::timeout(Duration::from_millis(500), nats_events.wait_for(|s| *s))
                .await
                .is_ok()
            {
                break;
            }
        }
    });
    w.lead_or_stand_by(&mut shutdown).await
}

impl Writer {
    /// Outer loop: connect, check privileges, take the lock (or wait as a standby),
    /// then sequence until a fault or shutdown.
    async fn lead_or_stand_by(
        &mut self,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), WriterError> {
        let mut backoff = Backoff::new(self.cfg.retry_max);
        let url = self.cfg.database_url.expose().to_string();
        let key = lock_key(&self.signer_name);
        while !*shutdown.borrow() {
            let mut pg = match db::connect_guarded(&url, self.cfg.db_timeout).await {
                Ok(c) => c,
                Err(e) => {
                    self.status.set_postgres(false);
                    self.metrics
                        .transient_errors
                        .with_label_values(&["postgres"])
                        .inc();
                    self.faults.fault("postgres", &e.to_string());
                    backoff.wait(shutdown).await;
                    continue;
                }
            };
            self.status.set_postgres(true);
            // What the writer may hold is core's WRITER_GRANTS, the list the role tests use.
            match db::assert_role_grants(&pg, &db::WRITER_GRANTS).await {
                Ok(role) => tracing::debug!(role, "role privileges checked"),
                Err(e) if e.is_transient() => {
                    self.faults.fault("postgres", &e.to_string());
                    backoff.wait(shutdown).await;
                    continue;
                }
                Err(e) => return Err(WriterError::Database(e)),
            }
            self.faults.clear("postgres");
            backoff.reset();

            match self.take_lock(&pg, key, shutdown).await {
                Ok(true) => {}
                Ok(false) => break, // shutdown while standing by
                Err(e) => {
                    self.status.set_postgres(false);
                    self.faults.fault("postgres", &e.to_string());
                    backoff.wait(shutdown).await;
                    continue;
                }
            }
            self.status.set_role(Role::Leader);
            self.metrics.leader.set(1);
            tracing::info!("took the sequencer lock: leading");
            let outcome = self.lead(&mut pg, shutdown).await;
            self.metrics.leader.set(0);
            self.status.set_role(Role::Standby);
            drop(pg); // releases the lock with the session
            match outcome {
                Ok(()) => break,
                Err(BatchError::Transient(e)) => {
                    self.status.set_postgres(false);
                    self.faults.fault("postgres", &e);
                    backoff.wait(shutdown).await;
                }
                Err(BatchError::Fatal(e)) => {
                    tracing::error!(error = %e, "leadership abandoned; reloading state");
                    backoff.wait(shutdown).await;
                }
            }
        }
        tracing::info!("writer stopped");
        Ok(())
    }

    /// Wait for the advisory lock. Ok(false) when shutdown came first.
    async fn take_lock(
        &mut self,
        pg: &Client,
        key: i64,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<bool, DbError> {
        let mut announced = false;
        loop {
            let params: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&key];
            let attempt = pg.query_one("SELECT pg_try_advisory_lock($1)", &params);
            let got: bool = tokio::time::timeout(self.cfg.db_timeout, attempt)
                .await
                .map_err(|_| {
                    DbError::Closed(format!(
                        "trying the sequencer lock: no answer within {} ms (ACE_DB_TIMEOUT_MS)",
                        self.cfg.db_timeout.as_millis()
                    ))
                })?
                .map_err(DbError::query("trying the sequencer lock"))?
                .get(0);
            if got {
                return Ok(true);
            }
            if !announced {
                tracing::info!("another writer holds the sequencer lock: standing by");
                announced = true;
            }
            self.status.set_role(Role::Standby);
            if tokio::time::timeout(self.cfg.standby_poll, shutdown.wait_for(|s| *s))
                .await
                .is_ok()
            {
                return Ok(false);
            }
        }
    }

    /// Inner loop while holding the lock: a two-stage pipeline. While batch N commits on
    /// the lock's connection, batch N+1 is taken off the intake and decided, reading the
    /// registry on a second connection. Only the commit stage touches the log, in order,
    /// so the log is exactly what the sequential loop would have written.
    async fn lead(
        &mut self,
        pg: &mut Client,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BatchError> {
        let signers: Vec<&NoteSigner> = self.committer.signers.iter().collect();
        let load = async {
            match store::load_state(&*pg).await? {
                Some(s) => Ok(s),
                None => {
                    let genesis = batch::genesis(now_ms(), &signers)?;
                    store::ensure_genesis(pg, &genesis).await?;
                    store::load_state(&*pg).await?.ok_or_else(|| {
                        BatchError::Fatal("genesis block missing after writing it".into())
                    })
                }
            }
        };
        let mut state = within(self.cfg.db_timeout, "loading the log's state", load).await?;
        self.metrics.tree_size.set(state.tree_size() as i64);
        self.metrics
            .block_height
            .set(state.last_block.height as i64);
        tracing::info!(
            tree_size = state.tree_size(),
            height = state.last_block.height,
            "log state loaded"
        );
        // Producers and keys are read on their own connection so that the next batch can
        // be decided while this one's transaction holds the lock's connection.
        let mut reads =
            db::connect_guarded(self.cfg.database_url.expose(), self.cfg.db_timeout).await?;
        // What the committer remembers between batches holds for this leadership only.
        self.committer.last_committed.clear();
        self.committer.key_events_in_log = None;
        let outcome = self.pipeline(pg, &mut reads, &mut state, shutdown).await;
        self.committer.settled().await;
        outcome
    }

    async fn pipeline(
        &mut self,
        pg: &mut Client,
        reads: &mut Client,
        state: &mut LogState,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Result<(), BatchError> {
        let mut nats_backoff = Backoff::new(self.cfg.retry_max);
        // One long-lived pull subscription while leading: the client keeps pull requests
        // topped up and watches heartbeats, and batches are cut here by size or delay.
        // (Short-lived pull requests with a 50 ms expiry stalled on nats-server 2.9 once
        // redeliveries were pending: the server did not answer their expiry.)
        let mut intake: Option<PullStream> = None;
        let mut ready: Option<Box<Prepared>> = None;
        loop {
            let stopping = *shutdown.borrow();
            if stopping && ready.is_none() {
                if let Some(stream) = intake.as_mut() {
                    release_prefetched(stream, self.cfg.batch_max_entries).await;
                }
                return Ok(());
            }
            if intake.is_none() && !stopping {
                match self.open_intake().await {
                    Ok(s) => intake = Some(s),
                    Err(e) => {
                        self.metrics
                            .transient_errors
                            .with_label_values(&["nats"])
                            .inc();
                        self.faults.fault("nats", &e);
                        if ready.is_none() {
                            nats_backoff.wait(shutdown).await;
                            continue;
                        }
                    }
                }
            }
            // Commit the decided batch (if any) while taking and deciding the next one.
            let (decider, committer) = (&mut self.decider, &mut self.committer);
            let take = async {
                match intake.as_mut() {
                    Some(stream) if !stopping => decider.next(stream, reads, shutdown).await,
                    _ => Next::Idle,
                }
            };
            let (committed, next) = match ready.take() {
                Some(current) => {
                    let (c, n) = tokio::join!(committer.commit(pg, state, *current), take);
                    (Some(c), n)
                }
                None => (None, take.await),
            };
            if let Some(Err((e, msgs))) = committed {
                let mut back = msgs;
                match next {
                    Next::Ready(p) => back.extend(p.msgs),
                    Next::Failed(m, _) => back.extend(m),
                    Next::Idle | Next::Shutdown | Next::Nats(_) => {}
                }
                self.abandon(&back, intake.as_mut(), &e).await;
                return Err(e);
            }
            match next {
                Next::Idle if intake.is_some() && !stopping => {
                    // The subscription answered (with nothing): NATS is fine again.
                    self.faults.clear("nats");
                    nats_backoff.reset();
                }
                Next::Idle | Next::Shutdown => {}
                Next::Ready(p) => {
                    self.faults.clear("nats");
                    nats_backoff.reset();
                    ready = Some(p);
                }
                Next::Nats(e) => {
                    intake = None;
                    self.metrics
                        .transient_errors
                        .with_label_values(&["nats"])
                        .inc();
                    self.faults.fault(
                        "nats",
                        &format!("reading {}: {e}", self.names.intake_stream()),
                    );
                    nats_backoff.wait(shutdown).await;
                }
                Next::Failed(msgs, e) => {
                    self.abandon(&msgs, intake.as_mut(), &e).await;
                    return Err(e);
                }
            }
        }
    }

    /// Hand a failed batch back to JetStream (redelivered after the nak delay) along with
    /// whatever the subscription had prefetched.
    async fn abandon(
        &self,
        msgs: &[jetstream::Message],
        intake: Option<&mut PullStream>,
        e: &BatchError,
    ) {
        for m in msgs {
            let _ = m
                .ack_with(AckKind::Nak(Some(self.committer.nak_delay)))
                .await;
        }
        if let Some(stream) = intake {
            release_prefetched(stream, self.cfg.batch_max_entries).await;
        }
        if let BatchError::Transient(_) = e {
            self.metrics
                .transient_errors
                .with_label_values(&["postgres"])
                .inc();
        }
    }

    async fn open_intake(&self) -> Result<PullStream, String> {
        self.consumer
            .stream()
            .max_messages_per_batch(self.cfg.batch_max_entries)
            // Short-lived requests: a request outlives a stopped writer on nats-server
            // 2.9 and can still take messages, which then wait out ack_wait.
            .heartbeat(Duration::from_secs(2))
            .expires(Duration::from_secs(5))
            .messages()
            .await
            .map_err(|e| format!("subscribing to {}: {e}", self.names.intake_stream()))
    }
}

impl Decider {
    /// Take the next batch (waiting at most a second for its first message) and decide it.
    async fn next(
        &mut self,
        stream: &mut PullStream,
        reads: &mut Client,
        shutdown: &mut watch::Receiver<bool>,
    ) -> Next {
        let msgs = tokio::select! {
            biased;
            _ = shutdown.wait_for(|s| *s) => return Next::Shutdown,
            r = next_batch(stream, self.batch_max_entries, self.batch_max_delay) => r,
        };
        match msgs {
            Err(e) => Next::Nats(e),
            // An idle intake still carries the registry's changes into the log.
            Ok(msgs) if msgs.is_empty() => {
                let pending = within(self.db_timeout, "looking for pending key events", async {
                    store::has_pending_key_events(&*reads)
                        .await
                        .map_err(BatchError::from)
                })
                .await;
                match pending {
                    Ok(false) => Next::Idle,
                    Ok(true) => match self.decide(reads, &[]).await {
                        Ok(p) => Next::Ready(Box::new(p)),
                        Err(e) => Next::Failed(Vec::new(), e),
                    },
                    Err(e) => Next::Failed(Vec::new(), e),
                }
            }
            Ok(msgs) => {
                tracing::debug!(messages = msgs.len(), "batch fetched");
                crashpoint::reached(Point::Fetched);
                match self.decide(reads, &msgs).await {
                    Ok(p) => Next::Ready(Box::new(Prepared { msgs, ..p })),
                    Err(e) => Next::Failed(msgs, e),
                }
            }
        }
    }

    async fn decide(
        &mut self,
        reads: &mut Client,
        msgs: &[jetstream::Message],
    ) -> Result<Prepared, BatchError> {
        let taken = Instant::now();
        let incoming: Arc<Vec<Incoming>> = Arc::new(
            msgs.iter()
                .map(to_incoming)
                .collect::<Result<Vec<_>, _>>()?,
        );

        // One policy snapshot per batch: a reload applies from the next one.
        let policy = self.policy.borrow().clone();
        let names = self.names.clone();
        let allowed = self.allowed_payload_types.clone();
        let max = self.max_envelope_bytes;
        let inc = Arc::clone(&incoming);
        let parsed =
            tokio::task::spawn_blocking(move || verify::parse_all(&names, &allowed, max, &inc))
                .await
                .map_err(|e| BatchError::Fatal(format!("parse task: {e}")))?;
        crashpoint::reached(Point::Parsed);
        let (producers, keyids) = verify::registry_needs(&parsed);
        let digests = verify::digests(&parsed);
        // The registry as of the database clock, read under the keys lock: that time is
        // the batch's integrated time, so the auditor, replaying the log's key events at
        // it, judges every entry as the writer did. The dedupe lookup goes along: it sees
        // every batch but the one committing now, whose entries the committer adds.
        let (clock, producers, keys, existing) =
            within(self.db_timeout, "reading producers and keys", async {
                let tx = reads
                    .transaction()
                    .await
                    .map_err(DbError::query("starting the registry read"))?;
                let clock = db::registry_clock(&tx).await?;
                let (producers, keys, existing) = futures::try_join!(
                    db::load_producers(&tx, &producers),
                    db::load_keys(&tx, &keyids),
                    store::existing(&tx, &digests)
                )?;
                tx.commit()
                    .await
                    .map_err(DbError::query("ending the registry read"))?;
                Ok::<_, BatchError>((clock, producers, keys, existing))
            })
            .await?;
        let mut registry = Registry {
            producers,
            keys,
            prepared: HashMap::new(),
        };
        let registry_read = taken.elapsed();
        let now = clock.now_ms;
        let snapshot = policy.clone();
        let mut prepared = std::mem::take(&mut self.prepared);
        let (decided, prepared) = tokio::task::spawn_blocking(move || {
            prepared.attach(&mut registry, &parsed);
            (
                verify::decide_all(parsed, &registry, &snapshot, now),
                prepared,
            )
        })
        .await
        .map_err(|e| BatchError::Fatal(format!("verify task: {e}")))?;
        self.prepared = prepared;
        let (verdicts, tally) = verify::settle(decided, &policy, &mut self.limiter, now);
        Ok(Prepared {
            msgs: Vec::new(),
            incoming,
            verdicts,
            existing,
            tally,
            policy,
            now_ms: now,
            last_key_event: clock.last_event,
            taken,
            registry_read,
            decided: taken.elapsed(),
        })
    }
}

impl Committer {
    /// Write one decided batch in one transaction, then send its acks in the background.
    /// On failure nothing was committed and the messages come back for a nak.
    async fn commit(
        &mut self,
        pg: &mut Client,
        state: &mut LogState,
        mut p: Prepared,
    ) -> Result<(), (BatchError, Vec<jetstream::Message>)> {
        let started = Instant::now();
        let timeout = self.db_timeout;
        match within(
            timeout,
            "the batch's transaction",
            self.write(pg, state, &mut p),
        )
        .await
        {
            Ok((plan, stages)) => {
                let committed = started.elapsed();
                self.record(&p, &plan, state, committed, &stages);
                self.settle(p, plan).await;
                Ok(())
            }
            Err(e) => Err((e, p.msgs)),
        }
    }

    async fn write(
        &mut self,
        pg: &mut Client,
        state: &mut LogState,
        p: &mut Prepared,
    ) -> Result<(batch::Plan, CommitStages), BatchError> {
        let t0 = Instant::now();
        let digests: Vec<String> = p
            .verdicts
            .iter()
            .filter_map(|v| match v {
                Verdict::Admit(a) => Some(a.digest.as_str().to_string()),
                Verdict::Reject { .. } => None,
            })
            .collect();
        let tx = pg
            .transaction()
            .await
            .map_err(DbError::query("starting the batch transaction"))?;
        // The lock makes this writer the only sequencer; this check turns any surprise
        // (a restored backup, a second log writer on a misconfigured origin) into a reload
        // instead of a fork. The unique keys on idx and height are the last backstop.
        let latest = store::latest_block(&tx).await?;
        if latest.as_ref() != Some(&state.last_block) {
            return Err(BatchError::Fatal(format!(
                "the log moved: expected block {} at tree size {}, found {:?}",
                state.last_block.height,
                state.tree_size(),
                latest.map(|b| (b.height, b.tree_size))
            )));
        }
        let mut existing = std::mem::take(&mut p.existing);
        for d in &digests {
            if let Some(e) = self.last_committed.get(d) {
                existing.insert(d.clone(), *e);
            }
        }
        let signers: Vec<&NoteSigner> = self.signers.iter().collect();
        let pending = if self
            .key_events_in_log
            .is_some_and(|done| p.last_key_event <= done)
        {
            Vec::new()
        } else {
            store::pending_key_events(&tx, p.last_key_event).await?
        };
        let ledger: Vec<batch::LedgerEntry> = pending
            .iter()
            .map(|ev| batch::LedgerEntry::new(ev, &signers))
            .collect();
        let key_events = ledger.len();
        if key_events > 0 {
            tracing::info!(key_events, "appending key events to the log");
        }
        let t1 = Instant::now();
        // The integrated time is the time the keys and the policy were judged at, so
        // that an auditor re-checking key validity at that time agrees with the writer.
        let plan = batch::plan(
            state,
            &p.incoming,
            std::mem::take(&mut p.verdicts),
            &existing,
            p.now_ms,
            &signers,
            ledger,
        )?;
        let t2 = Instant::now();
        let policy = &p.policy;
        let record =
            (self.recorded_policy.as_deref() != Some(policy.version())).then(|| policy.source());
        store::write_plan(
            &tx,
            &plan,
            &store::PolicyRecord {
                version: policy.version(),
                source: record,
            },
        )
        .await?;
        crashpoint::reached(Point::Written);
        let t3 = Instant::now();
        tx.commit()
            .await
            .map_err(DbError::query("committing the batch"))?;
        crashpoint::reached(Point::Committed);
        *state = plan.state.clone();
        if let Some(block) = &plan.block {
            self.recorded_policy = Some(policy.version().to_string());
            let height = block.header.height;
            self.last_committed = plan
                .entries
                .iter()
                .map(|e| {
                    let entry = batch::ExistingEntry {
                        index: e.index,
                        block: height,
                        stream_seq: e.stream_seq,
                    };
                    (e.digest.clone(), entry)
                })
                .collect();
        }
        self.key_events_in_log = Some(
            self.key_events_in_log
                .map_or(p.last_key_event, |d| d.max(p.last_key_event)),
        );
        let stages = CommitStages {
            lookups: t1 - t0,
            plan: t2 - t1,
            write: t3 - t2,
            commit: t3.elapsed(),
        };
        Ok((plan, stages))
    }

    /// Metrics and the debug line, all from what was just committed.
    fn record(
        &self,
        p: &Prepared,
        plan: &batch::Plan,
        state: &LogState,
        committed: Duration,
        stages: &CommitStages,
    ) {
        let committed_at = now_ms();
        let m = &self.metrics;
        for (rule, verdict, n) in p.tally.rules(&p.policy) {
            m.policy_rules.with_label_values(&[rule, verdict]).inc_by(n);
        }
        for (outcome, n) in p.tally.decisions() {
            m.policy_decisions.with_label_values(&[outcome]).inc_by(n);
        }
        m.batch_size.observe(p.msgs.len() as f64);
        m.batch_duration.observe(p.taken.elapsed().as_secs_f64());
        m.tree_size.set(state.tree_size() as i64);
        m.block_height.set(state.last_block.height as i64);
        m.dlq_items.inc_by(plan.dlq.len() as u64);
        let mut known: HashMap<&str, bool> = HashMap::new();
        for (i, (producer, ack)) in plan.acks.iter().enumerate() {
            let registered = *known.entry(producer.as_str()).or_insert_with(|| {
                ack.reason
                    .as_ref()
                    .map(|r| r.code != ace_core::rejection::RejectionCode::UnknownProducer)
                    .unwrap_or(true)
            });
            let label = if registered {
                producer.as_str()
            } else {
                UNKNOWN_PRODUCER_LABEL
            };
            m.envelopes
                .with_label_values(&[label, ack.status.as_str()])
                .inc();
            if ack.status == ace_core::ack::AckStatus::Duplicate {
                m.dedupe_hits.inc();
            }
            if let Some(r) = &ack.reason {
                m.rejections.with_label_values(&[r.code.as_str()]).inc();
            }
            if let (true, Some(published)) = (
                registered,
                p.incoming.get(i).and_then(|x| x.published_at_ms),
            ) {
                let secs = (committed_at - published).max(0) as f64 / 1000.0;
                m.publish_to_commit
                    .with_label_values(&[label])
                    .observe(secs);
            }
        }
        if let Some(b) = &plan.block {
            tracing::debug!(
                height = b.header.height,
                tree_size = b.header.tree_size,
                messages = p.msgs.len(),
                registry_ms = p.registry_read.as_millis() as u64,
                decided_ms = p.decided.as_millis() as u64,
                commit_ms = committed.as_millis() as u64,
                lookups_ms = stages.lookups.as_millis() as u64,
                plan_ms = stages.plan.as_millis() as u64,
                write_ms = stages.write.as_millis() as u64,
                tx_commit_ms = stages.commit.as_millis() as u64,
                "block sealed"
            );
        }
    }

    /// Durable in Postgres: now, and only now, settle the messages on JetStream and tell
    /// the producers. Runs in the background, at most SETTLING_MAX batches at a time.
    async fn settle(&mut self, p: Prepared, plan: batch::Plan) {
        while self.settling.len() >= SETTLING_MAX {
            if let Some(h) = self.settling.pop_front() {
                let _ = h.await;
            }
        }
        let metrics = self.metrics.clone();
        let client = self.nats.clone();
        let names = self.names.clone();
        self.settling.push_back(tokio::spawn(async move {
            // Plain acks, not confirmed ones: an ack that is lost (the writer or the
            // server dying) only means a redelivery after ack_wait, which the log
            // answers as a duplicate of the committed entry. Confirming each ack was a
            // request and a reply per envelope.
            let mut failed = 0u64;
            for m in &p.msgs {
                if m.ack().await.is_err() {
                    failed += 1;
                }
            }
            if failed > 0 {
                metrics.ack_failures.inc_by(failed);
                tracing::warn!(failed, "JetStream acks could not be sent after commit; those messages will be redelivered and deduplicated");
            }
            crashpoint::reached(Point::Acked);
            publish_outcomes(&client, &names, &metrics, &plan).await;
        }));
    }

    /// Wait for every committed batch's acks to go out.
    async fn settled(&mut self) {
        while let Some(h) = self.settling.pop_front() {
            let _ = h.await;
        }
        if let Err(e) = self.nats.flush().await {
            tracing::warn!(error = %e, "flushing the last acks to NATS; they will be redelivered and deduplicated");
        }
    }
}

/// How long the settle task waits for JetStream to confirm a batch's acks and notices
/// (what async-nats waits for one publish).
const CONFIRM_TIMEOUT: Duration = Duration::from_secs(5);

/// Acks to producers and DLQ notices, stored by JetStream (the ACKS and DLQ streams) and
/// confirmed together. A failure here loses no data (the outcome is committed and
/// readable); it is counted and logged.
///
/// Each message carries its own reply subject under one inbox per batch, and one
/// subscription counts JetStream's confirmations: the same publish and confirmation as
/// `jetstream::Context::publish`, without a future, a channel and a timer per message,
/// which cost a fifth of the writer's non-signature CPU (docs/performance.md).
async fn publish_outcomes(
    client: &async_nats::Client,
    names: &Names,
    metrics: &Metrics,
    plan: &batch::Plan,
) {
    let total = plan.acks.len() + plan.dlq.len();
    if total == 0 {
        return;
    }
    let inbox = client.new_inbox();
    let mut replies = match client.subscribe(format!("{inbox}.*")).await {
        Ok(s) => s,
        Err(e) => {
            metrics.transient_errors.with_label_values(&["nats"]).inc();
            tracing::warn!(error = %e, total, "cannot subscribe for JetStream's confirmations; acks and DLQ notices not sent");
            return;
        }
    };
    let mut sent = 0usize;
    let outcomes = plan
        .acks
        .iter()
        .map(|(producer, ack)| (names.ack_subject(producer), ack.to_json()))
        .chain(plan.dlq.iter().map(|d| {
            let notice = serde_json::json!({
                "stream_seq": d.stream_seq,
                // With stream_seq, names the row: a recreated stream reuses sequences.
                "stored_at": d.stored_at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                "subject": d.subject,
                "producer": d.producer,
                "digest": d.digest,
                "reason": d.rejection,
                "size": d.envelope.len(),
            });
            (
                names.dlq_subject(&d.producer),
                notice.to_string().into_bytes(),
            )
        }));
    for (i, (subject, payload)) in outcomes.enumerate() {
        if client
            .publish_with_reply(subject, format!("{inbox}.{i}"), payload.into())
            .await
            .is_ok()
        {
            sent += 1;
        }
    }
    // JetStream answers each stored message with {"stream": …, "seq": …}, a refusal with
    // {"error": …}, and a subject no stream takes with a no-responders status.
    let mut confirmed = 0usize;
    let mut refused = 0usize;
    let deadline = tokio::time::Instant::now() + CONFIRM_TIMEOUT;
    while confirmed + refused < sent {
        match tokio::time::timeout_at(deadline, replies.next()).await {
            Ok(Some(m)) => {
                let stored = m.status.is_none()
                    && serde_json::from_slice::<serde_json::Value>(&m.payload)
                        .is_ok_and(|v| v.get("seq").is_some() && v.get("error").is_none());
                if stored {
                    confirmed += 1;
                } else {
                    refused += 1;
                }
            }
            Ok(None) | Err(_) => break,
        }
    }
    let _ = replies.unsubscribe().await;
    let failed = total - confirmed;
    if failed > 0 {
        metrics.transient_errors.with_label_values(&["nats"]).inc();
        tracing::warn!(
            failed,
            refused,
            unanswered = sent - confirmed - refused,
            total,
            "some acks or DLQ notices were not confirmed by JetStream"
        );
    }
}

/// `work` on Postgres, given up after `timeout`: a stalled network or a stuck server
/// becomes a transient fault (the batch goes back to JetStream, the writer reconnects)
/// instead of a writer that hangs. A transaction given up on may still commit on the
/// server; its messages are then redelivered and answered as duplicates.
async fn within<T>(
    timeout: Duration,
    what: &str,
    work: impl std::future::Future<Output = Result<T, BatchError>>,
) -> Result<T, BatchError> {
    tokio::time::timeout(timeout, work).await.unwrap_or_else(|_| {
        Err(BatchError::Transient(format!(
            "postgres: {what} got no answer within {} ms (ACE_DB_TIMEOUT_MS): a stalled network or a stuck server; batch handed back, reconnecting",
            timeout.as_millis()
        )))
    })
}

/// Wait for a first message, then take more until `max` or until `delay` has passed
/// since the first. An idle second returns an empty batch so the caller can look around.
async fn next_batch(
    stream: &mut PullStream,
    max: usize,
    delay: Duration,
) -> Result<Vec<jetstream::Message>, String> {
    let first = match tokio::time::timeout(Duration::from_secs(1), stream.next()).await {
        Err(_) => return Ok(Vec::new()),
        Ok(None) => return Err("the pull subscription ended".into()),
        Ok(Some(Err(e))) => return Err(e.to_string()),
        Ok(Some(Ok(m))) => m,
    };
    let mut out = vec![first];
    let deadline = tokio::time::Instant::now() + delay;
    while out.len() < max {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(Ok(m))) => out.push(m),
            // Keep what was read; the next call surfaces a persistent error.
            Ok(Some(Err(e))) => {
                tracing::debug!(error = %e, "pull subscription error after a partial batch");
                break;
            }
            Ok(None) | Err(_) => break,
        }
    }
    Ok(out)
}

/// Hand back the messages the subscription has prefetched but the writer has not
/// taken, so that the next leader gets them at once instead of after `ack_wait`.
async fn release_prefetched(stream: &mut PullStream, max: usize) {
    let mut released = 0usize;
    while released < 2 * max {
        match tokio::time::timeout(Duration::from_millis(20), stream.next()).await {
            Ok(Some(Ok(m))) => {
                let _ = m.ack_with(AckKind::Nak(None)).await;
                released += 1;
            }
            _ => break,
        }
    }
    if released > 0 {
        tracing::debug!(released, "prefetched messages handed back");
    }
}

fn to_incoming(m: &jetstream::Message) -> Result<Incoming, BatchError> {
    let info = m.info().map_err(|e| {
        BatchError::Fatal(format!(
            "message on {} has no JetStream metadata: {e}",
            m.subject
        ))
    })?;
    // The server's storage time (nanoseconds in the metadata): with the sequence, the
    // message's identity for its DLQ row. An instant past 2262 cannot come from a server.
    let stored_at = i64::try_from(info.published.unix_timestamp_nanos())
        .map(chrono::DateTime::from_timestamp_nanos)
        .map_err(|_| {
            BatchError::Fatal(format!(
                "message {} on {} has a JetStream timestamp out of range: {}",
                info.stream_sequence, m.subject, info.published
            ))
        })?;
    let mut headers = serde_json::Map::new();
    let mut published_at_ms = None;
    if let Some(h) = &m.headers {
        for (name, values) in h.iter() {
            let vals: Vec<String> = values.iter().map(|v| v.as_str().to_string()).collect();
            if AsRef::<str>::as_ref(name) == "Ace-Published-At" {
                published_at_ms = vals
                    .first()
                    .and_then(|v| chrono::DateTime::parse_from_rfc3339(v).ok())
                    .map(|t| t.timestamp_millis());
            }
            headers.insert(name.to_string(), serde_json::json!(vals));
        }
    }
    Ok(Incoming {
        subject: m.subject.to_string(),
        payload: m.payload.clone(),
        stream_seq: info.stream_sequence,
        stored_at,
        delivered: info.delivered,
        published_at_ms,
        headers: serde_json::Value::Object(headers),
    })
}
