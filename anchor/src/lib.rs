//! ACE Ledger anchor: pushes each sealed block's checkpoint to the configured trust
//! anchors (sinks) and records what each gave back as an append-only receipt.
//!
//! One process anchors at a time (a Postgres advisory lock held by its listening
//! connection); others stand by. The leader learns of blocks from the writer's commits
//! (NOTIFY `ace_blocks`, migration V5) or by polling, and runs one worker per sink, so a
//! slow or failing sink never holds up another, nor the writer. Deliveries are
//! at-least-once: a receipt lost to a crash means the checkpoint is sent again.

pub mod config;
pub mod head;
pub mod http;
pub mod metrics;
pub mod schedule;
pub mod sink;
pub mod store;
mod worker;

use std::sync::Arc;

use ace_core::db::{self, DbError};
use tokio::sync::watch;

pub use config::Config;

use crate::head::Head;
use crate::http::Status;
use crate::metrics::Metrics;
use crate::worker::Ctx;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("NATS (for sink {sink}): {source}")]
    Nats {
        sink: String,
        source: ace_core::nats::NatsError,
    },
    #[error("building the HTTP client: {0}")]
    Http(reqwest::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Everything `run` needs, checked: the role's privileges, NATS if a sink needs it.
pub struct Prepared {
    ctx: Arc<Ctx>,
    status: Arc<Status>,
}

pub async fn prepare(cfg: &Config) -> Result<Prepared, StartError> {
    let metrics = Arc::new(Metrics::new()?);
    {
        let c = db::connect(cfg.database_url.expose()).await?;
        // Reads blocks and tiles, appends receipts, nothing else (core's ANCHOR_GRANTS,
        // the list the role tests use).
        db::assert_role_grants(&c, &db::ANCHOR_GRANTS).await?;
    }
    let pool = db::pool(cfg.database_url.expose(), cfg.sinks.len() + 2)?;
    let names = ace_core::nats::Names::new(&cfg.prefix).map_err(|source| StartError::Nats {
        sink: "-".into(),
        source,
    })?;
    let js = match cfg
        .sinks
        .iter()
        .find(|s| matches!(s.target, sink::Target::Nats))
    {
        None => None,
        Some(s) => {
            let client = ace_core::nats::connect(&ace_core::nats::ConnectOptions {
                url: cfg.nats_url.clone(),
                creds_file: cfg.nats_creds.clone(),
                nkey_file: cfg.nats_nkey_file.clone(),
                name: "ace-anchor".into(),
                tls: cfg.nats_tls.clone(),
            })
            .await
            .map_err(|source| StartError::Nats {
                sink: s.name.clone(),
                source,
            })?;
            Some(async_nats::jetstream::new(client))
        }
    };
    let http = reqwest::Client::builder()
        .timeout(cfg.request_timeout)
        .user_agent(concat!("ace-anchor/", env!("CARGO_PKG_VERSION")))
        // A sink that redirects is misconfigured: say so rather than POST elsewhere.
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .map_err(StartError::Http)?;
    let status = Arc::new(Status::default());
    Ok(Prepared {
        ctx: Arc::new(Ctx {
            pool,
            http,
            js,
            checkpoint_subject: names.checkpoint_subject(),
            ledger_keys: cfg.ledger_keys.clone(),
            metrics,
            retry_min: cfg.retry_min,
            retry_max: cfg.retry_max,
            request_timeout: cfg.request_timeout,
            max_backlog: cfg.max_backlog,
            poll: cfg.poll,
        }),
        status,
    })
}

/// Anchor until `stop` turns true. An attempt in flight when it does is abandoned: its
/// receipt is not recorded, and the next run sends that checkpoint again.
pub async fn run(cfg: Config, stop: watch::Receiver<bool>) -> Result<(), StartError> {
    let prepared = prepare(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
    serve(cfg, prepared, listener, stop).await
}

/// [`run`] on an already bound listener (tests bind port 0).
pub async fn serve(
    cfg: Config,
    prepared: Prepared,
    listener: tokio::net::TcpListener,
    stop: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let Prepared { ctx, status } = prepared;
    tracing::info!(
        listen = %listener.local_addr().map(|a| a.to_string()).unwrap_or_default(),
        sinks = %cfg.sinks.iter().map(|s| format!("{} ({})", s.name, s.target.kind())).collect::<Vec<_>>().join(", "),
        "anchor starting"
    );
    let (head_tx, head_rx) = watch::channel(Head::default());
    let follower = tokio::spawn(head::follow(
        cfg.database_url.clone(),
        Arc::clone(&ctx),
        Arc::clone(&status),
        head_tx,
        stop.clone(),
    ));
    let mut workers = Vec::new();
    for sink in cfg.sinks.clone() {
        workers.push(tokio::spawn(worker::work(
            sink,
            Arc::clone(&ctx),
            head_rx.clone(),
            stop.clone(),
            Arc::clone(&status),
        )));
    }
    let app = http::app(http::AppState {
        status: Arc::clone(&status),
        metrics: Arc::clone(&ctx.metrics),
    });
    let mut http_stop = stop.clone();
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = http_stop.wait_for(|s| *s).await;
        })
        .await;
    for w in workers {
        let _ = w.await;
    }
    let _ = follower.await;
    tracing::info!("anchor stopped");
    served.map_err(StartError::Serve)
}
