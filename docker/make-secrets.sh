#!/bin/sh
# Make the secrets docker-compose.yml mounts, in ./secrets (or the directory given):
#   postgres_password              the Postgres superuser's password (the postgres image
#                                  sets it at its first start only)
#   admin_database_url             the superuser's DSN, for the init container alone
#   ace_<role>.password            each role's password (acectl db provision sets them)
#   ace_<role>.url                 each role's DSN, postgres://ace_<role>:…@postgres:5432/ace
#   dashboard_admin.password       the dashboard's `admin` operator (init stores its hash)
# for the roles ace_owner, ace_writer, ace_reader, ace_anchor, ace_dashboard.
# Needs only sh, od and /dev/urandom. Files are 0600 in a 0700 directory; an existing file
# is never overwritten (a DSN missing beside an existing password is made from it), so
# re-running it is safe. Usage: docker/make-secrets.sh [DIR]
set -eu
dir=${1:-"$(dirname "$0")/../secrets"}
db=ace
host=postgres:5432

umask 077
mkdir -p "$dir"
chmod 700 "$dir"

# 24 random bytes as 48 lowercase hex digits: safe in a URL without escaping.
random_hex() { od -An -N24 -tx1 /dev/urandom | tr -d ' \n'; }

# put FILE VALUE: write VALUE (and a newline) to FILE unless FILE already exists.
put() {
  if [ -e "$1" ]; then
    echo "kept    $1"
  else
    printf '%s\n' "$2" > "$1.tmp.$$"
    mv "$1.tmp.$$" "$1"
    echo "created $1"
  fi
}

# The first line of FILE, which must not be empty.
first_line() {
  line=
  IFS= read -r line < "$1" || true
  if [ -z "$line" ]; then
    echo "make-secrets: $1 is empty: delete it and run again" >&2
    exit 1
  fi
  printf '%s' "$line"
}

put "$dir/postgres_password" "$(random_hex)"
pw=$(first_line "$dir/postgres_password")
put "$dir/admin_database_url" "postgres://postgres:$pw@$host/$db"
for role in ace_owner ace_writer ace_reader ace_anchor ace_dashboard; do
  put "$dir/$role.password" "$(random_hex)"
  pw=$(first_line "$dir/$role.password")
  put "$dir/$role.url" "postgres://$role:$pw@$host/$db"
done
put "$dir/dashboard_admin.password" "$(random_hex)"
chmod 600 "$dir"/*
echo "secrets in $dir (0600); the dashboard's admin password is in $dir/dashboard_admin.password"
