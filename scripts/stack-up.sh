#!/usr/bin/env bash
# Bring the whole ACE Ledger stack up on a Debian/Ubuntu machine, without Docker:
#  1. install nats-server and PostgreSQL from apt if missing, and start them;
#  2. create the database `ace`, the roles (with generated passwords) and the schema;
#  3. create the JetStream streams and the writer's consumer;
#  4. generate the ledger key and a demo producer with its key;
#  5. build and start the writer (logs in .stack/writer.log);
#  6. publish a sample statement and print the ledger's ack.
# Re-running it is safe: every step is idempotent. Secrets live in .stack/secrets (0600).
# Stop the writer with: kill "$(cat .stack/writer.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/services.sh
ensure_packages
ensure_postgres
ensure_nats

DB=${ACE_DB_NAME:-ace}
PREFIX=${ACE_PREFIX:-ace}
ORIGIN=${ACE_LOG_ORIGIN:-localhost/ace-ledger}
STACK=.stack
SECRETS=$STACK/secrets
mkdir -p "$SECRETS"
chmod 700 "$SECRETS"
umask 077

psql_admin() { as_root runuser -u postgres -- psql -v ON_ERROR_STOP=1 -qtA "$@"; }

echo "== database $DB and roles"
if [ "$(psql_admin -d postgres -c "SELECT 1 FROM pg_database WHERE datname = '$DB'")" != "1" ]; then
  psql_admin -d postgres -c "CREATE DATABASE $DB"
fi
psql_admin -d "$DB" < sql/roles.sql
psql_admin -d "$DB" -c "GRANT USAGE, CREATE ON SCHEMA public TO ace_owner"
for role in ace_owner ace_writer ace_reader; do
  f="$SECRETS/$role.url"
  if [ ! -s "$f" ]; then
    pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    psql_admin -d postgres -c "ALTER ROLE $role PASSWORD '$pw'"
    printf 'postgres://%s:%s@127.0.0.1:5432/%s\n' "$role" "$pw" "$DB" > "$f"
  fi
done

echo "== build"
cargo build --release --locked -p ace-writer -p acectl
ACECTL=target/release/acectl

echo "== schema"
ACE_DATABASE_URL="$(cat $SECRETS/ace_owner.url)" $ACECTL db migrate

echo "== JetStream"
ACE_PREFIX=$PREFIX $ACECTL nats init

echo "== ledger key and demo producer"
if [ ! -s "$SECRETS/ledger.key" ]; then
  $ACECTL ledger-key generate --origin "$ORIGIN" --out "$SECRETS/ledger.key" > "$STACK/ledger.vkey"
fi
echo "ledger verifier key: $(cat $STACK/ledger.vkey)"
export ACE_DATABASE_URL="$(cat $SECRETS/ace_owner.url)"
$ACECTL producer add demo
if [ ! -s "$SECRETS/demo.key" ]; then
  $ACECTL key add demo --generate --out "$SECRETS/demo.key"
fi
unset ACE_DATABASE_URL

echo "== writer"
if [ -s "$STACK/writer.pid" ] && kill -0 "$(cat $STACK/writer.pid)" 2>/dev/null; then
  echo "writer already running (pid $(cat $STACK/writer.pid))"
else
  ACE_DATABASE_URL_FILE=$SECRETS/ace_writer.url \
  ACE_LEDGER_KEY_FILE=$SECRETS/ledger.key \
  ACE_PREFIX=$PREFIX \
    nohup target/release/ace-writer >> "$STACK/writer.log" 2>&1 &
  echo $! > "$STACK/writer.pid"
  for _ in $(seq 1 50); do
    curl -fsS http://127.0.0.1:9101/readyz >/dev/null 2>&1 && break
    kill -0 "$(cat $STACK/writer.pid)" 2>/dev/null || { echo "writer exited:"; tail -20 "$STACK/writer.log"; exit 1; }
    sleep 0.2
  done
  echo "writer running (pid $(cat $STACK/writer.pid)); health and metrics on http://127.0.0.1:9101"
fi

echo "== publish a sample statement"
ACE_PREFIX=$PREFIX $ACECTL publish --producer demo --key "$SECRETS/demo.key" --statement examples/statement.json
