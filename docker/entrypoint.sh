#!/bin/sh
# The entrypoint of every ACE Ledger container but init (docker-compose.yml).
#
# docker compose bind-mounts a `secrets:` file at /run/secrets/<name> with the host file's
# owner and mode (0600, the user who ran docker/make-secrets.sh), which the service's own
# user could not read; compose ignores `uid`/`mode` for file secrets. So, started as root,
# this copies each secret to /run/ace/secrets/<name> (a tmpfs, never on disk), owned by
# the `ace` user (uid 10001) and mode 0400, and then runs the command as `ace`, with no
# capabilities (setpriv: a change of uid from 0 clears them). The services read their
# secrets from there (ACE_DATABASE_URL_FILE=/run/ace/secrets/ace_writer.url, …).
#
# Started as another user (docker run --user …), it runs the command as that user: the
# *_FILE settings must then name files that user can read.
set -eu
ace_uid=10001
ace_gid=10001

if [ "$(id -u)" = 0 ]; then
  if [ -d /run/secrets ]; then
    # Only root may enter the directory until every copy has its owner and mode.
    mkdir -p /run/ace/secrets
    chmod 700 /run/ace/secrets
    for f in /run/secrets/*; do
      [ -f "$f" ] || continue
      copy=/run/ace/secrets/${f##*/}
      cp "$f" "$copy"
      chown "$ace_uid:$ace_gid" "$copy"
      chmod 400 "$copy"
    done
    chown "$ace_uid:$ace_gid" /run/ace/secrets
    chmod 500 /run/ace/secrets
  fi
  exec setpriv --reuid="$ace_uid" --regid="$ace_gid" --clear-groups -- "$@"
fi
exec "$@"
