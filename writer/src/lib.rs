//! ACE Ledger writer: consumes the intake stream, verifies, sequences, and appends to the
//! Merkle log in Postgres, one block and signed checkpoint per committed batch.
//!
//! Order of effects for a batch (DESIGN.md, "Writer pipeline"): fetch → parse and verify
//! in parallel → policy → one transaction (dedupe, entries, subjects, tiles, block,
//! checkpoint, DLQ rows) → commit → ack JetStream → publish acks and DLQ notices. Nothing
//! is acked before its outcome is committed; a crash anywhere leads to redelivery, and
//! dedupe by envelope digest keeps every envelope in the log exactly once.

pub mod batch;
pub mod config;
pub mod crashpoint;
pub mod http;
pub mod metrics;
pub mod policy;
pub mod store;
pub mod verify;

mod sequencer;

pub use config::Config;
pub use sequencer::{run, WriterError};
