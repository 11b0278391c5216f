#!/bin/sh
# ace-init: the one-shot `init` service of docker-compose.yml, run on every `docker compose
# up` before the services start; each step is idempotent.
#   1. acectl db provision: the five roles with the passwords from docker/make-secrets.sh,
#      their attributes and connection limits, then the schema and grants (migrations);
#   2. NATS NKey users admin, writer, anchor and dashboard (seeds written once, into each
#      service's volume), and the server's authorization file (acectl nats render), which
#      the nats service waits for before it starts;
#   3. acectl nats init (as the NATS admin): the JetStream streams and the writer's consumer;
#   4. the ledger key (acectl ledger-key generate, first start only) for the writer, and
#      its verifier key for the reader and the anchor;
#   5. the dashboard's users file: one operator, `admin`, with the password in
#      secrets/dashboard_admin.password (first start only);
#   6. owners and modes: each service's volume readable by its user (ace, 10001) only.
# It runs as root (with CHOWN, DAC_OVERRIDE and FOWNER only) because it hands files to the
# services' user and reads the host's 0600 secret files.
#
# With arguments, it runs them as the ledger's administrator instead: ACE_DATABASE_URL is
# the ace_owner DSN and ACE_NATS_NKEY_FILE the NATS admin seed, e.g.
#   docker compose run --rm init acectl producer add acme --public-key HEX …
set -eu

secrets=/run/secrets
state=/var/lib/ace
ace_uid=10001
ace_gid=10001
admin_seed=$state/init/nats-admin.nk
auth_conf=$state/nats-auth/ace-auth.conf

say() { echo "ace-init: $*"; }
die() { echo "ace-init: $*" >&2; exit 1; }

# need FILE: a secret file that must be there and not empty.
need() {
  [ -s "$secrets/$1" ] || die "secret $secrets/$1 is missing or empty: run docker/make-secrets.sh on the host, then docker compose up -d"
}

# retry TRIES WHAT CMD…: run CMD until it succeeds, one try a second; its output is shown
# once, from the try that succeeded (or the last one, with the failure).
retry() {
  tries=$1 what=$2
  shift 2
  n=1
  until out=$("$@" 2>&1); do
    if [ "$n" -ge "$tries" ]; then
      printf '%s\n' "$out" >&2
      die "$what: still failing after $tries tries"
    fi
    n=$((n + 1))
    sleep 1
  done
  [ -z "$out" ] || printf '%s\n' "$out"
}

need ace_owner.url
owner_url=$(cat "$secrets/ace_owner.url")

if [ $# -gt 0 ]; then
  [ -s "$admin_seed" ] || die "no NATS admin seed in $admin_seed: let init run first (docker compose up -d)"
  ACE_DATABASE_URL=$owner_url
  ACE_NATS_NKEY_FILE=$admin_seed
  export ACE_DATABASE_URL ACE_NATS_NKEY_FILE
  exec "$@"
fi

need admin_database_url
need dashboard_admin.password
for role in ace_owner ace_writer ace_reader ace_anchor ace_dashboard; do
  need "$role.password"
done

say "1/6 Postgres roles, passwords, schema and grants"
# The password files go to a private tmpfs first: acectl refuses a file others may read,
# and a bind mount keeps the host's mode (which Docker Desktop does not preserve).
pgdir=/run/ace/pg
mkdir -p "$pgdir"
chmod 700 "$pgdir"
for role in ace_owner ace_writer ace_reader ace_anchor ace_dashboard; do
  cp "$secrets/$role.password" "$pgdir/$role.password"
  chmod 600 "$pgdir/$role.password"
done
retry 30 "acectl db provision (is postgres up?)" \
  acectl db provision --database-url-file "$secrets/admin_database_url" --password-dir "$pgdir"
rm -rf "$pgdir"

say "2/6 NATS users and the server's authorization"
for d in init init/producers writer anchor dashboard public nats-auth; do
  mkdir -p "$state/$d"
done
# add_user NAME KIND SEED: the NKey user NAME, its seed in SEED. A fresh database (a new
# postgres volume) gets new users, whose seeds replace the old files.
add_user() {
  rm -f "$3.new"
  said=$(ACE_DATABASE_URL=$owner_url acectl nats add-user "$1" --kind "$2" --seed-out "$3.new")
  if [ -e "$3.new" ]; then
    mv -f "$3.new" "$3"
  elif [ ! -s "$3" ]; then
    die "NATS user $1 is registered but its seed $3 is gone (a volume removed?): remove the user with
  docker compose exec postgres psql -U postgres -d ace -c \"DELETE FROM nats_users WHERE name = '$1'\"
and run docker compose up -d again"
  fi
  say "$said"
}
add_user admin admin "$admin_seed"
add_user writer writer "$state/writer/nats.nk"
add_user anchor anchor "$state/anchor/nats.nk"
add_user dashboard dashboard "$state/dashboard/nats.nk"
before=$(cat "$auth_conf" 2>/dev/null || true)
said=$(ACE_DATABASE_URL=$owner_url acectl nats render --out "$auth_conf")
say "$said"
if [ -n "$before" ] && [ "$before" != "$(cat "$auth_conf")" ]; then
  say "the NATS users changed: a running nats-server reloads them on: docker compose kill -s HUP nats"
fi

say "3/6 JetStream streams and the writer's consumer"
ACE_NATS_NKEY_FILE=$admin_seed
export ACE_NATS_NKEY_FILE
retry 90 "acectl nats init (is nats up?)" acectl nats init

say "4/6 ledger key"
key=$state/writer/ledger.key
vkey=$state/writer/ledger.vkey
if [ ! -s "$key" ]; then
  rm -f "$key.new" "$vkey.new"
  acectl ledger-key generate --origin "${ACE_LOG_ORIGIN:-localhost/ace-ledger}" --out "$key.new" > "$vkey.new"
  # The verifier key first: a key file is never left without it.
  mv -f "$vkey.new" "$vkey"
  mv -f "$key.new" "$key"
  say "ledger key generated; its verifier key (publish it to auditors): $(cat "$vkey")"
elif [ ! -s "$vkey" ]; then
  die "$key exists but its verifier key $vkey does not: restore it from a backup (or what the reader's /v1/keys served)"
else
  say "ledger key kept; verifier key $(cat "$vkey")"
fi
cp "$vkey" "$state/public/ledger.vkey.new"
mv -f "$state/public/ledger.vkey.new" "$state/public/ledger.vkey"

say "5/6 dashboard accounts"
users=$state/dashboard/users.toml
if [ ! -s "$users" ]; then
  hash=$(ace-dashboard hash-password < "$secrets/dashboard_admin.password")
  printf '[[user]]\nname = "admin"\nrole = "operator"\npassword_hash = "%s"\n' "$hash" > "$users.new"
  mv -f "$users.new" "$users"
  say "dashboard account admin (operator) made; its password is secrets/dashboard_admin.password"
else
  say "dashboard accounts kept ($users)"
fi

say "6/6 owners and modes"
for d in writer anchor dashboard; do
  chown -R "$ace_uid:$ace_gid" "$state/$d"
  chmod 700 "$state/$d"
  find "$state/$d" -type f -exec chmod 400 {} +
done
chown -R 0:0 "$state/init"
chmod 700 "$state/init" "$state/init/producers"
chmod 755 "$state/public" "$state/nats-auth"
chmod 644 "$state/public/ledger.vkey" "$auth_conf"
say "done"
