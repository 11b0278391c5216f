//! Following the log's head: one Postgres connection holds the anchoring lock, LISTENs
//! for `ace_blocks` and reads the latest block on each notification and every poll
//! interval. Workers watch what it publishes.

use std::sync::Arc;
use std::time::Duration;

use ace_core::config::Secret;
use ace_core::db;
use tokio::sync::watch;

use crate::http::{Role, Status};
use crate::store::{self, BlockRow};
use crate::worker::Ctx;

/// Distinct from the writer's sequencer lock: one anchor per database.
pub const ANCHOR_LOCK_KEY: i64 = 0x0041_4345_414e_4348;

/// What the workers act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Head {
    /// This process holds the anchoring lock.
    pub leader: bool,
    pub latest: Option<BlockRow>,
}

pub async fn follow(
    url: Secret,
    ctx: Arc<Ctx>,
    status: Arc<Status>,
    tx: watch::Sender<Head>,
    mut stop: watch::Receiver<bool>,
) {
    let mut failures = 0u32;
    while !*stop.borrow() {
        match lead(&url, &ctx, &status, &tx, &mut stop).await {
            Ok(()) => return,
            Err(e) => {
                failures += 1;
                status.set_postgres(false);
                status.set_role(Role::Starting);
                ctx.metrics.leader.set(0);
                let _ = tx.send(Head::default());
                let wait = crate::schedule::backoff(
                    Duration::from_millis(200),
                    ctx.poll,
                    failures,
                    rand::random::<f64>(),
                );
                tracing::error!(error = %e, retry_in_ms = wait.as_millis() as u64, "following the log's head failed");
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }
}

/// Take the lock (standing by until it is free), then publish the head until the
/// connection fails (an error) or `stop`.
async fn lead(
    url: &Secret,
    ctx: &Ctx,
    status: &Status,
    tx: &watch::Sender<Head>,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), db::DbError> {
    let (client, mut notes) = db::connect_listening(url.expose()).await?;
    status.set_postgres(true);
    loop {
        let got: bool = client
            .query_one("SELECT pg_try_advisory_lock($1)", &[&ANCHOR_LOCK_KEY])
            .await
            .map_err(db::DbError::query("taking the anchoring lock"))?
            .get(0);
        if got {
            break;
        }
        if status.role() != Role::Standby {
            tracing::info!("another anchor holds the lock; standing by");
        }
        status.set_role(Role::Standby);
        tokio::select! {
            _ = tokio::time::sleep(ctx.poll) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
    client
        .batch_execute("LISTEN ace_blocks")
        .await
        .map_err(db::DbError::query("listening for blocks"))?;
    status.set_role(Role::Leader);
    ctx.metrics.leader.set(1);
    tracing::info!("anchoring: holding the lock, listening for blocks");
    loop {
        let latest = store::latest_block(&client).await?;
        if let Some(b) = &latest {
            ctx.metrics.latest_height.set(b.height as i64);
        }
        tx.send_if_modified(|h| {
            let next = Head {
                leader: true,
                latest: latest.clone(),
            };
            let changed = *h != next;
            *h = next;
            changed
        });
        tokio::select! {
            n = notes.recv() => {
                if n.is_none() {
                    return Err(db::DbError::Closed(format!(
                        "listening for blocks on {}",
                        db::describe_url(url.expose())
                    )));
                }
                // Several blocks may be notified at once; one read covers them all.
                while notes.try_recv().is_ok() {}
            }
            _ = tokio::time::sleep(ctx.poll) => {}
            _ = stop.wait_for(|s| *s) => return Ok(()),
        }
    }
}
