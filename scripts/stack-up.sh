#!/usr/bin/env bash
# Bring the whole ACE Ledger stack up on a Debian/Ubuntu machine, without Docker:
#  1. install nats-server and PostgreSQL from apt if missing, and start them;
#  2. create the database `ace`, the roles (with generated passwords) and the schema;
#  3. create the JetStream streams and the writer's consumer;
#  4. generate the ledger key and a demo producer with its key;
#  5. build and start the writer (health and metrics on 127.0.0.1:9101, log in .stack/writer.log);
#  6. start the reader, the auditors' read-only API, on http://127.0.0.1:8081 (Swagger UI on
#     /docs, log in .stack/reader.log), trusting the ledger verifier key in .stack/ledger.vkey;
#  7. publish a sample statement, print the ledger's ack, and verify entry 0 through the reader;
#  8. start the anchor (health and metrics on 127.0.0.1:9102, log in .stack/anchor.log), which
#     publishes each checkpoint on JetStream (`ace.checkpoint`; sinks in
#     .stack/anchor-sinks.toml, docs/anchor.md adds TSAs, webhooks and witnesses), and show
#     its progress (its /readyz);
#  9. start the dashboard on http://127.0.0.1:8080 (log in .stack/dashboard.log) with one
#     operator account, `admin`, whose generated password is in .stack/secrets/admin.password.
# Re-running it is safe: every step is idempotent. Secrets live in .stack/secrets (0600).
# Stop the services with: kill $(cat .stack/*.pid)
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
for role in ace_owner ace_writer ace_reader ace_anchor ace_dashboard; do
  f="$SECRETS/$role.url"
  if [ ! -s "$f" ]; then
    pw=$(head -c 24 /dev/urandom | od -An -tx1 | tr -d ' \n')
    psql_admin -d postgres -c "ALTER ROLE $role PASSWORD '$pw'"
    printf 'postgres://%s:%s@127.0.0.1:5432/%s\n' "$role" "$pw" "$DB" > "$f"
  fi
done

echo "== build"
cargo build --release --locked -p ace-writer -p ace-reader -p ace-anchor -p ace-dashboard -p acectl
ACECTL=target/release/acectl

echo "== schema"
ACE_DATABASE_URL="$(cat $SECRETS/ace_owner.url)" $ACECTL db migrate

echo "== JetStream"
ACE_PREFIX=$PREFIX $ACECTL nats init

# The verifier key (`name+hash+base64(0x01 ‖ public key)`) of an existing signer key file
# (`PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)`), for a .stack/ that lost ledger.vkey.
vkey_of() {
  local name hash key
  IFS=+ read -r _ _ name hash key < "$1" || [ -n "${key:-}" ]
  printf '%s+%s+' "$name" "$hash"
  { printf '\001'
    { printf '\x30\x2e\x02\x01\x00\x30\x05\x06\x03\x2b\x65\x70\x04\x22\x04\x20' # PKCS#8 ed25519 prefix
      printf '%s' "$key" | base64 -d | tail -c 32
    } | openssl pkey -inform DER -pubout -outform DER | tail -c 32
  } | base64 -w0
  echo
}

echo "== ledger key and demo producer"
if [ ! -s "$SECRETS/ledger.key" ]; then
  $ACECTL ledger-key generate --origin "$ORIGIN" --out "$SECRETS/ledger.key" > "$STACK/ledger.vkey.tmp"
  mv "$STACK/ledger.vkey.tmp" "$STACK/ledger.vkey"
elif [ ! -s "$STACK/ledger.vkey" ]; then
  vkey_of "$SECRETS/ledger.key" > "$STACK/ledger.vkey.tmp"
  mv "$STACK/ledger.vkey.tmp" "$STACK/ledger.vkey"
fi
chmod 644 "$STACK/ledger.vkey"
echo "ledger verifier key: $(cat $STACK/ledger.vkey)"
export ACE_DATABASE_URL="$(cat $SECRETS/ace_owner.url)"
$ACECTL producer add demo
if [ ! -s "$SECRETS/demo.key" ]; then
  $ACECTL key add demo --generate --out "$SECRETS/demo.key"
fi
unset ACE_DATABASE_URL

# start NAME PORT VAR=VALUE...: run target/release/ace-NAME with those settings unless it
# is already running, and wait until its /readyz answers (or say why it did not).
start() {
  local name=$1 port=$2; shift 2
  local pidfile="$STACK/$name.pid" log="$STACK/$name.log"
  if [ -s "$pidfile" ] && kill -0 "$(cat "$pidfile")" 2>/dev/null; then
    echo "$name already running (pid $(cat "$pidfile"))"
    return
  fi
  env "$@" nohup "target/release/ace-$name" >> "$log" 2>&1 &
  echo $! > "$pidfile"
  for _ in $(seq 1 50); do
    curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
    kill -0 "$(cat "$pidfile")" 2>/dev/null || { echo "$name exited:"; tail -20 "$log"; exit 1; }
    sleep 0.2
  done
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null || { echo "$name not ready after 10 s:"; tail -20 "$log"; exit 1; }
  echo "$name running (pid $(cat "$pidfile")) on http://127.0.0.1:$port (logs: $log)"
}

echo "== writer (health and metrics on :9101)"
start writer 9101 \
  ACE_DATABASE_URL_FILE="$SECRETS/ace_writer.url" \
  ACE_LEDGER_KEY_FILE="$SECRETS/ledger.key" \
  ACE_PREFIX="$PREFIX"

echo "== reader (API docs on :8081/docs)"
start reader 8081 \
  ACE_DATABASE_URL_FILE="$SECRETS/ace_reader.url" \
  ACE_LEDGER_VKEYS_FILE="$STACK/ledger.vkey"

echo "== publish a sample statement"
ACK=$(ACE_PREFIX=$PREFIX $ACECTL publish --producer demo --key "$SECRETS/demo.key" --statement examples/statement.json)
echo "$ACK"
# The log starts with the key events of demo's registration, so the entry's index is the ack's.
INDEX=$(printf '%s' "$ACK" | grep -o '"index": *[0-9]*' | grep -o '[0-9]*$' | head -n 1 || true)
[ -n "$INDEX" ] || { echo "stack-up: the publish ack names no index: $ACK" >&2; exit 1; }

echo "== verify entry $INDEX through the reader, with nothing but the verifier key"
$ACECTL verify entry --reader http://127.0.0.1:8081 --ledger-key "$(cat $STACK/ledger.vkey)" --index "$INDEX"

echo "== anchor (health and metrics on :9102)"
if [ ! -s "$STACK/anchor-sinks.toml" ]; then
  cat > "$STACK/anchor-sinks.toml" <<'TOML'
# The anchor's sinks (docs/anchor.md, "Sinks"). JetStream needs nothing outside this stack.
[[sink]]
name = "jetstream"
kind = "nats"
schedule = "every_block"
TOML
fi
start anchor 9102 \
  ACE_DATABASE_URL_FILE="$SECRETS/ace_anchor.url" \
  ACE_LEDGER_VKEYS_FILE="$STACK/ledger.vkey" \
  ACE_ANCHOR_SINKS_FILE="$STACK/anchor-sinks.toml" \
  ACE_PREFIX="$PREFIX"
for _ in $(seq 1 50); do
  curl -fsS http://127.0.0.1:9102/readyz | grep -q '"anchored":[0-9]' && break
  sleep 0.2
done
echo "the anchor's sinks (anchored = height of the last receipt; GET /v1/blocks/{height} on the reader shows them):"
curl -fsS http://127.0.0.1:9102/readyz
echo

echo "== dashboard (operators' UI on :8080)"
if [ ! -s "$SECRETS/admin.password" ]; then
  head -c 18 /dev/urandom | base64 | tr -d '/+=' > "$SECRETS/admin.password"
fi
if [ ! -s "$SECRETS/dashboard-users.toml" ]; then
  hash=$(target/release/ace-dashboard hash-password < "$SECRETS/admin.password")
  printf '[[user]]\nname = "admin"\nrole = "operator"\npassword_hash = "%s"\n' "$hash" > "$SECRETS/dashboard-users.toml"
fi
start dashboard 8080 \
  ACE_DATABASE_URL_FILE="$SECRETS/ace_dashboard.url" \
  ACE_DASHBOARD_USERS_FILE="$SECRETS/dashboard-users.toml" \
  ACE_PREFIX="$PREFIX"
echo "log in at http://127.0.0.1:8080 as admin, password in $SECRETS/admin.password"
