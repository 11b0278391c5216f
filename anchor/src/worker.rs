//! One worker per sink: pick the block to anchor ([`schedule::next_height`]), check its
//! checkpoint, deliver it, record the receipt; on failure back off with jitter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_core::checkpoint::{open_checkpoint, NoteVerifier};
use ace_core::db::DbError;
use deadpool_postgres::Pool;
use tokio::sync::watch;

use crate::head::Head;
use crate::http::SinkProgress;
use crate::metrics::Metrics;
use crate::schedule::{self, SinkState};
use crate::sink::{self, Anchoring, Schedule, SinkSpec, Target};
use crate::store::{self, BlockRow};

/// What every worker shares.
pub struct Ctx {
    pub pool: Pool,
    pub http: reqwest::Client,
    pub js: Option<async_nats::jetstream::Context>,
    pub checkpoint_subject: String,
    pub ledger_keys: Vec<NoteVerifier>,
    pub metrics: Arc<Metrics>,
    pub retry_min: Duration,
    pub retry_max: Duration,
    pub request_timeout: Duration,
    pub max_backlog: u64,
    pub poll: Duration,
}

#[derive(Debug, thiserror::Error)]
pub enum AttemptError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("block {0} is not in the log")]
    NoBlock(u64),
    #[error("the checkpoint of block {height} does not verify with ACE_LEDGER_VKEYS: {problem}")]
    Checkpoint { height: u64, problem: String },
    #[error(transparent)]
    Webhook(#[from] sink::webhook::WebhookError),
    #[error(transparent)]
    Nats(#[from] sink::nats::NatsSinkError),
    #[error(transparent)]
    Witness(#[from] sink::witness::WitnessSinkError),
    #[error(transparent)]
    Tsa(#[from] sink::tsa::TsaSinkError),
    #[error("no NATS connection (a bug: prepare connects when a nats sink exists)")]
    NoNats,
    #[error("no answer within {0:?} (ACE_ANCHOR_REQUEST_TIMEOUT_MS)")]
    Timeout(Duration),
}

pub async fn work(
    sink: SinkSpec,
    ctx: Arc<Ctx>,
    mut head: watch::Receiver<Head>,
    mut stop: watch::Receiver<bool>,
    status: Arc<crate::http::Status>,
) {
    let kind = sink.target.kind();
    let mut state = SinkState::default();
    let mut loaded = false;
    let mut last_error: Option<String> = None;
    loop {
        if *stop.borrow() {
            return;
        }
        let h = head.borrow_and_update().clone();
        let latest = match (&h, h.latest.as_ref()) {
            (Head { leader: true, .. }, Some(b)) => b.clone(),
            _ => {
                // Standing by, or no block yet: the receipts may change under another
                // leader, so read them again when this process leads.
                loaded = false;
                tokio::select! {
                    _ = head.changed() => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
                continue;
            }
        };
        if !loaded {
            let last = match ctx.pool.get().await {
                Ok(c) => store::last_anchored(&**c, &sink.name).await,
                Err(e) => Err(pool_error(e)),
            };
            match last {
                Ok(last) => {
                    state.anchored = last.map(|(height, _)| height);
                    loaded = true;
                }
                Err(e) => {
                    tracing::warn!(sink = %sink.name, error = %e, "reading the sink's last receipt");
                    tokio::select! {
                        _ = tokio::time::sleep(ctx.poll) => {}
                        _ = stop.wait_for(|s| *s) => return,
                    }
                    continue;
                }
            }
        }
        report(&ctx, &status, &sink, &state, &latest, last_error.clone()).await;
        if let Some(at) = state.not_before.filter(|at| *at > Instant::now()) {
            // A new block during the wait only refreshes the lag figures.
            tokio::select! {
                _ = tokio::time::sleep_until(at.into()) => {}
                _ = head.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        }
        let Some(height) =
            schedule::next_height(sink.schedule, &state, latest.height, ctx.max_backlog)
        else {
            tokio::select! {
                _ = head.changed() => {}
                _ = stop.wait_for(|s| *s) => return,
            }
            continue;
        };
        let started = Instant::now();
        let outcome = tokio::select! {
            r = attempt(&ctx, &sink, height, &latest) => r,
            _ = stop.wait_for(|s| *s) => return,
        };
        match outcome {
            Ok(block) => {
                ctx.metrics
                    .send_seconds
                    .with_label_values(&[&sink.name])
                    .observe(started.elapsed().as_secs_f64());
                ctx.metrics
                    .receipts
                    .with_label_values(&[&sink.name, kind])
                    .inc();
                if state.failures > 0 {
                    tracing::info!(sink = %sink.name, height, failures = state.failures, "sink recovered");
                }
                tracing::info!(sink = %sink.name, kind, height, tree_size = block.tree_size, "anchored");
                state.anchored = Some(height);
                state.failures = 0;
                last_error = None;
                state.not_before = match sink.schedule {
                    Schedule::EveryBlock => None,
                    Schedule::Latest(every) => Some(Instant::now() + every),
                };
            }
            Err(e) => {
                state.failures += 1;
                let wait = schedule::backoff(
                    ctx.retry_min,
                    ctx.retry_max,
                    state.failures,
                    rand::random::<f64>(),
                );
                state.not_before = Some(Instant::now() + wait);
                ctx.metrics
                    .failures
                    .with_label_values(&[&sink.name, kind])
                    .inc();
                tracing::warn!(
                    sink = %sink.name,
                    kind,
                    destination = %sink.target.destination(&ctx.checkpoint_subject),
                    height,
                    attempt = state.failures,
                    retry_in_ms = wait.as_millis() as u64,
                    error = %e,
                    "anchoring failed"
                );
                last_error = Some(e.to_string());
            }
        }
    }
}

fn pool_error(e: deadpool_postgres::PoolError) -> DbError {
    DbError::Pool {
        target: "anchor pool".into(),
        message: e.to_string(),
    }
}

/// Lag metrics and `/readyz`'s view of the sink.
async fn report(
    ctx: &Ctx,
    status: &crate::http::Status,
    sink: &SinkSpec,
    state: &SinkState,
    latest: &BlockRow,
    last_error: Option<String>,
) {
    let covered = state.anchored.unwrap_or(0);
    let behind = latest.height.saturating_sub(covered);
    ctx.metrics
        .lag_blocks
        .with_label_values(&[&sink.name])
        .set(behind as i64);
    let age = if behind == 0 {
        0
    } else {
        // The oldest block not covered: the one after the last receipt.
        let sealed = match ctx.pool.get().await {
            Ok(c) => store::block_at(&**c, covered + 1)
                .await
                .ok()
                .flatten()
                .map(|b| b.sealed_at_ms),
            Err(_) => None,
        };
        let now = chrono::Utc::now().timestamp_millis();
        sealed.map_or(0, |s| (now - s).max(0) / 1000)
    };
    ctx.metrics
        .lag_seconds
        .with_label_values(&[&sink.name])
        .set(age);
    status.set_sink(
        &sink.name,
        SinkProgress {
            kind: sink.target.kind(),
            anchored: state.anchored,
            failures: state.failures,
            last_error,
        },
    );
}

/// One delivery of block `height`'s checkpoint, and its receipt recorded.
async fn attempt(
    ctx: &Ctx,
    sink: &SinkSpec,
    height: u64,
    latest: &BlockRow,
) -> Result<BlockRow, AttemptError> {
    let c = ctx.pool.get().await.map_err(pool_error)?;
    let block = if height == latest.height {
        latest.clone()
    } else {
        store::block_at(&**c, height)
            .await?
            .ok_or(AttemptError::NoBlock(height))?
    };
    // Never vouch for a checkpoint the ledger's key did not sign, or that says something
    // other than its block.
    let cp = open_checkpoint(&block.checkpoint, &ctx.ledger_keys).map_err(|e| {
        AttemptError::Checkpoint {
            height,
            problem: e.to_string(),
        }
    })?;
    if cp.tree_size != block.tree_size || cp.root_hash != block.root_hash {
        return Err(AttemptError::Checkpoint {
            height,
            problem: format!(
                "it says tree size {} root {}, the block tree size {} root {}",
                cp.tree_size,
                hex::encode(cp.root_hash),
                block.tree_size,
                hex::encode(block.root_hash)
            ),
        });
    }
    let a = Anchoring {
        origin: cp.origin,
        height,
        tree_size: block.tree_size,
        root_hash: block.root_hash,
        sealed_at_ms: block.sealed_at_ms,
        checkpoint: block.checkpoint.clone(),
    };
    let receipt = tokio::time::timeout(
        ctx.request_timeout,
        deliver(ctx, &sink.name, &sink.target, &a),
    )
    .await
    .map_err(|_| AttemptError::Timeout(ctx.request_timeout))??;
    store::insert_receipt(&**c, &block, &sink.name, sink.target.kind(), &receipt).await?;
    Ok(block)
}

async fn deliver(
    ctx: &Ctx,
    sink: &str,
    target: &Target,
    a: &Anchoring,
) -> Result<serde_json::Value, AttemptError> {
    Ok(match target {
        Target::Nats => {
            let js = ctx.js.as_ref().ok_or(AttemptError::NoNats)?;
            sink::nats::send(js, &ctx.checkpoint_subject, a).await?
        }
        Target::Webhook { url, secret } => {
            sink::webhook::send(&ctx.http, url, secret.expose().as_bytes(), a).await?
        }
        Target::Rfc3161 { url, trust } => sink::tsa::send(&ctx.http, url, trust, a).await?,
        Target::Witness { url, key } => {
            sink::witness::send(&ctx.http, &ctx.pool, sink, url, key, a).await?
        }
    })
}
