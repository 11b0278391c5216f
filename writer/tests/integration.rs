//! Writer integration tests on the machine's real Postgres and NATS (one binary; each
//! test with its own database and stream prefix, so they run in parallel).

mod it;
