//! What tests and benchmarks across the ACE Ledger crates share: a fresh migrated database
//! per test ([`TestDb`]), a unique NATS stream prefix per test ([`TestNats`]), a headless
//! Chromium under its own chromedriver ([`Browser`]), a throwaway TLS PKI made with
//! OpenSSL ([`TestCerts`]) and the synthetic ledger loader ([`synth`], also the
//! `ace-synth` binary).

pub mod browser;
pub mod certs;
pub mod check;
pub mod db;
pub mod nats;
pub mod pgbouncer;
pub mod pgserver;
pub mod proxy;
pub mod repo;
pub mod synth;
pub mod tsa;
pub mod witness;

pub use browser::{Browser, BrowserError};
pub use certs::TestCerts;
pub use check::{check_log, LogReport};
pub use db::{drop_database, run_detached, unique, TestDb, TestDbError, PG_HOST, PG_PORT};
pub use nats::{PrivateNats, TestNats, NATS_URL};
pub use pgbouncer::PgBouncer;
pub use pgserver::{free_port, PgServer};
pub use proxy::TcpProxy;
pub use repo::{read_text, workspace_root};
pub use synth::{load, load_with_progress, Progress, SynthError, SynthOptions, SynthReport};
