//! ace-dashboard: the operators' web UI. Intake figures, DLQ triage (inspect, retry,
//! discard, bulk retry), status history, producers and keys, anchors; operator accounts
//! with roles, CSRF-protected actions recorded in a hash-chained audit; alert hooks.
//!
//! Connects as `ace_dashboard`, which may read and may only INSERT into `dlq_actions` and
//! `operator_audit`; it checks that at start and refuses to run otherwise.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod config;
pub mod db;
pub mod dlq;
pub mod error;
pub mod figures;
pub mod history;
pub mod metrics;
pub mod producers;
pub mod scrape;
pub mod web;

use std::sync::Arc;

use ace_core::db::DbError;
use ace_core::nats::{ConnectOptions, Names, NatsError};
use tokio::sync::watch;

pub use config::Config;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] DbError),
    #[error(transparent)]
    Users(#[from] auth::UsersError),
    #[error(transparent)]
    Nats(#[from] NatsError),
    #[error("bad ACE_PREFIX: {0}")]
    Prefix(String),
    #[error("metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("HTTP client: {0}")]
    Http(String),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("serving HTTP: {0}")]
    Serve(std::io::Error),
}

/// Loads the accounts, checks the role, connects to NATS; fails naming the cause.
pub async fn prepare(cfg: Config) -> Result<web::Shared, StartError> {
    let users = auth::Users::load(&cfg.users_file)?;
    let url = cfg.database_url.expose();
    {
        let c = ace_core::db::connect(url).await?;
        // Reads what it shows, appends actions and audit rows, nothing else (core's
        // DASHBOARD_GRANTS, the list the role tests use).
        ace_core::db::assert_role_grants(&c, &ace_core::db::DASHBOARD_GRANTS).await?;
    }
    let pool = ace_core::db::pool_with(url, cfg.pool_size, Some(cfg.statement_timeout))?;
    let database = db::Db {
        pool,
        target: ace_core::db::describe_url(url),
    };
    let names = Names::new(&cfg.prefix).map_err(|e| StartError::Prefix(e.to_string()))?;
    let client = ace_core::nats::connect(&ConnectOptions {
        url: cfg.nats_url.clone(),
        creds_file: cfg.nats_creds.clone(),
        nkey_file: cfg.nats_nkey_file.clone(),
        name: "ace-dashboard".into(),
        tls: cfg.nats_tls.clone(),
    })
    .await?;
    let intake = dlq::Intake {
        js: async_nats::jetstream::new(client),
        url: cfg.nats_url.clone(),
    };
    let http = reqwest::Client::builder()
        .user_agent("ace-dashboard")
        .build()
        .map_err(|e| StartError::Http(e.to_string()))?;
    let metrics = metrics::Metrics::new()?;
    Ok(Arc::new(web::AppState::new(
        cfg, database, intake, names, users, metrics, http,
    )))
}

/// Serves on `listener` until `shutdown`; the alert loop runs beside it.
pub async fn serve(
    state: web::Shared,
    listener: tokio::net::TcpListener,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), StartError> {
    let alerts = tokio::spawn(alerts::run(Arc::clone(&state), shutdown.clone()));
    let app = web::router(state).into_make_service_with_connect_info::<std::net::SocketAddr>();
    let res = axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
        .map_err(StartError::Serve);
    alerts.abort();
    res
}

/// Prepares, listens on `cfg.listen`, and serves until `shutdown`.
pub async fn run(cfg: Config, shutdown: watch::Receiver<bool>) -> Result<(), StartError> {
    let listen = cfg.listen;
    let state = prepare(cfg).await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|source| StartError::Bind {
            addr: listen,
            source,
        })?;
    tracing::info!(%listen, "dashboard listening");
    serve(state, listener, shutdown).await
}
