//! ace-reader: the auditors' read-only HTTP API over the log (DESIGN.md, "Reader API v1").
//!
//! Connects as `ace_reader`, checks at start that the role can read every table and write
//! none, and that the latest checkpoint verifies with the configured ledger keys; then
//! serves entries, blocks, proofs, search and C2SP tiles until told to stop.

pub mod api;
pub mod config;
pub mod metrics;
pub mod model;
pub mod problem;
pub mod proofs;
pub mod state;
pub mod store;

use std::sync::Arc;

use ace_core::checkpoint::open_checkpoint;
use ace_core::db::{self, DbError};
use axum::extract::State;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use tokio::sync::{watch, Semaphore};
use utoipa::OpenApi;
use utoipa_swagger_ui::SwaggerUi;

pub use config::Config;

use api::{AppState, Shared};
use metrics::Metrics;
use proofs::{Heads, Prover, TileCache};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "ACE Ledger reader API",
        description = "Read-only API over the ACE Ledger Merkle log: entries, blocks, checkpoints, inclusion and consistency proofs, search, and C2SP tlog-tiles. Hashes are lowercase hex; errors are RFC 9457 problem+json."
    ),
    paths(
        api::checkpoint,
        api::keys,
        api::entry,
        api::proof,
        api::consistency,
        api::envelope,
        api::search,
        api::block,
        api::cosigned_checkpoint,
        api::blocks,
        api::policy,
        api::state,
        api::tlog_checkpoint,
        api::tile
    ),
    components(schemas(
        model::Entry,
        model::Subject,
        model::InclusionProof,
        model::ConsistencyProof,
        model::EnvelopeStatus,
        model::Reason,
        model::EntryPage,
        model::Block,
        model::BlockPage,
        model::Anchor,
        model::Keys,
        model::ProducerKey,
        model::PolicyText,
        state::StateAt,
        state::LoggedRef,
        state::ComponentRef,
        problem::Problem
    ))
)]
pub struct ApiDoc;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("the latest checkpoint (block {height}, tree size {tree_size}) does not verify with ACE_LEDGER_VKEYS: {problem}")]
    Checkpoint {
        height: u64,
        tree_size: u64,
        problem: String,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Connects, checks the role and the latest checkpoint, and builds the state the routes
/// share. Fails, naming the cause, rather than serve from a database it should not use.
pub async fn prepare(cfg: &Config) -> Result<Shared, StartError> {
    let metrics = Arc::new(Metrics::new()?);
    let pool = db::pool_with(
        cfg.database_url.expose(),
        cfg.pool_size,
        Some(cfg.statement_timeout),
    )?;
    {
        let c = db::connect(cfg.database_url.expose()).await?;
        // SELECT only, and no write on any table, sequence or the schema (core's
        // READER_GRANTS, the list the role tests use).
        db::assert_role_grants(&c, &db::READER_GRANTS).await?;
    }
    let obj = pool.get().await.map_err(|e| DbError::Pool {
        target: db::describe_url(cfg.database_url.expose()),
        message: e.to_string(),
    })?;
    match store::latest_head(&obj).await? {
        Some(head) => {
            let cp = open_checkpoint(&head.checkpoint, &cfg.ledger_keys).map_err(|e| {
                StartError::Checkpoint {
                    height: head.height,
                    tree_size: head.tree_size,
                    problem: e.to_string(),
                }
            })?;
            if !cfg.ledger_keys.iter().any(|k| k.name() == cp.origin) {
                return Err(StartError::Checkpoint {
                    height: head.height,
                    tree_size: head.tree_size,
                    problem: format!(
                        "its origin {:?} is not the name of any configured key",
                        cp.origin
                    ),
                });
            }
            if cp.tree_size != head.tree_size || cp.root_hash != head.root_hash {
                return Err(StartError::Checkpoint {
                    height: head.height,
                    tree_size: head.tree_size,
                    problem: format!(
                        "it says tree size {} and root {}, the block says root {}",
                        cp.tree_size,
                        hex::encode(cp.root_hash),
                        hex::encode(head.root_hash)
                    ),
                });
            }
            tracing::info!(height = head.height, tree_size = head.tree_size, "latest checkpoint verified");
        }
        None => tracing::warn!("the ledger has no block yet; proofs and checkpoints answer 404 until the writer seals genesis"),
    }
    drop(obj);
    Ok(Arc::new(AppState {
        prover: Prover {
            pool,
            tiles: TileCache::new(cfg.tile_cache_bytes),
            heads: Heads::new(cfg.head_max_age),
            metrics,
        },
        ledger_keys: cfg.ledger_keys.iter().map(|k| k.to_vkey()).collect(),
        request_timeout: cfg.request_timeout,
        in_flight: Arc::new(Semaphore::new(cfg.max_concurrent)),
        max_concurrent: cfg.max_concurrent,
    }))
}

/// Every route. API routes are bounded and counted by [`api::guard`]; health, metrics and
/// the OpenAPI pages are not, so that an overloaded reader can still be observed.
pub fn router(state: Shared) -> Router {
    let api_routes = Router::new()
        .route("/v1/checkpoint", get(api::checkpoint))
        .route("/v1/keys", get(api::keys))
        .route("/v1/entries", get(api::search))
        .route("/v1/entries/{index}", get(api::entry))
        .route("/v1/entries/{index}/proof", get(api::proof))
        .route("/v1/consistency", get(api::consistency))
        .route("/v1/envelopes/{digest}", get(api::envelope))
        .route("/v1/blocks", get(api::blocks))
        .route("/v1/blocks/{height}", get(api::block))
        .route(
            "/v1/blocks/{height}/checkpoint",
            get(api::cosigned_checkpoint),
        )
        .route("/v1/policies/{version}", get(api::policy))
        .route("/v1/state/{service}", get(api::state))
        .route("/checkpoint", get(api::tlog_checkpoint))
        .route("/tile/{*path}", get(api::tile))
        .route_layer(axum::middleware::from_fn_with_state(
            Arc::clone(&state),
            api::guard,
        ));
    Router::new()
        .merge(api_routes)
        .merge(SwaggerUi::new("/docs").url("/openapi.json", ApiDoc::openapi()))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .fallback(api::not_found)
        .method_not_allowed_fallback(api::method_not_allowed)
        .with_state(state)
}

/// Ready when Postgres answers.
async fn readyz(State(s): State<Shared>) -> Response {
    let ping = async {
        let c = s.prover.pool.get().await.map_err(|e| e.to_string())?;
        c.simple_query("SELECT 1").await.map_err(|e| e.to_string())
    };
    match ping.await {
        Ok(_) => (StatusCode::OK, "ready\n").into_response(),
        Err(e) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: Postgres: {e}\n"),
        )
            .into_response(),
    }
}

async fn metrics(State(s): State<Shared>) -> Response {
    let mut r = s.prover.metrics.render().into_response();
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; version=0.0.4"),
    );
    r
}

/// Serves on `listener` until `shutdown` turns true; requests in flight are finished.
pub async fn serve(
    state: Shared,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    axum::serve(listener, router(state))
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(StartError::Serve)
}

/// Prepares, listens on `cfg.listen`, and serves until `shutdown`.
pub async fn run(cfg: Config, shutdown: watch::Receiver<bool>) -> Result<(), StartError> {
    let state = prepare(&cfg).await?;
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: cfg.listen,
            source,
        })?;
    tracing::info!(listen = %cfg.listen, "reader listening");
    serve(state, listener, shutdown).await
}
