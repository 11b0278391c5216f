#!/usr/bin/env bash
# Run every test: unit, property, vector and integration tests, against the real
# PostgreSQL and NATS servers on 127.0.0.1 (started, or installed, if missing).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_packages
ensure_postgres
ensure_nats
ensure_nextest
# A from-scratch build (CI's) gains nothing from incremental compilation and pays for its
# bookkeeping; a developer's repeated runs may set CARGO_INCREMENTAL=1.
export CARGO_INCREMENTAL="${CARGO_INCREMENTAL:-0}"
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo nextest run --workspace --locked --profile ci "$@"
