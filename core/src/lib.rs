//! ACE Ledger core.
//!
//! The pure modules (`envelope`, `statement`, `canonical`, `leaf`, `merkle`, `tiles`,
//! `checkpoint`, `block`, `rejection`, `keys`) do no I/O. Postgres and NATS live only in
//! `db` and `nats`, which no pure module imports.
