//! ACE Ledger core.
//!
//! The pure modules (`envelope`, `statement`, `canonical`, `leaf`, `merkle`, `tiles`,
//! `checkpoint`, `block`, `rejection`, `keys`, `prepared_key`) do no I/O. Postgres and NATS live only in
//! `db` and `nats`, which no pure module imports; `service` is the binaries' shared start
//! (logging, stop signals).

pub mod ack;
pub mod block;
pub mod canonical;
pub mod checkpoint;
pub mod config;
pub mod db;
pub mod envelope;
mod fields;
pub mod ids;
pub mod key_event;
pub mod keys;
pub mod leaf;
pub mod merkle;
pub mod nats;
pub mod nats_acl;
pub mod operator_audit;
pub mod policy;
pub mod prepared_key;
pub mod rejection;
pub mod service;
pub mod state;
pub mod statement;
pub mod tiles;
pub mod tsa;
pub mod witness;
