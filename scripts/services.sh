# Sourced by stack-up.sh and test.sh: make sure PostgreSQL 15+ and nats-server (with
# JetStream) are installed and running on loopback, and that the test tools are installed
# (Chromium and chromedriver for browser tests, promtool for the alert rules). Installs
# from apt when missing. Never stops or reconfigures a server that is already running.

as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

ensure_packages() {
  local missing=()
  command -v nats-server >/dev/null 2>&1 || [ -x /usr/sbin/nats-server ] || missing+=(nats-server)
  command -v pg_ctlcluster >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
  command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
  # The tests' RFC 3161 authority is `openssl ts`; stack-up derives keys with it too.
  command -v openssl >/dev/null 2>&1 || missing+=(openssl)
  # The connection-pooling tests (ace_testkit::PgBouncer) start a private pgbouncer.
  [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  # Browser tests (ace_testkit::browser) drive headless Chromium through chromedriver.
  command -v chromium >/dev/null 2>&1 || missing+=(chromium)
  command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
  # promtool checks and unit-tests prometheus/ace-alerts.yml; Debian ships it only in the
  # server's package. Installed on its own, without Recommends: those are
  # prometheus-node-exporter, a second daemon nothing here uses.
  local promtool=0
  command -v promtool >/dev/null 2>&1 || promtool=1
  # The static check of docker-compose.yml (testkit/tests/compose.rs) runs a real compose
  # parser: the `docker compose` plugin if there is one, else Debian's docker-compose 1.29,
  # installed without Recommends (docker.io: a Docker engine, which nothing here runs).
  local compose=0
  docker compose version >/dev/null 2>&1 || command -v docker-compose >/dev/null 2>&1 || compose=1
  if [ ${#missing[@]} -gt 0 ] || [ "$promtool" -eq 1 ] || [ "$compose" -eq 1 ]; then
    as_root apt-get update -qq
  fi
  if [ ${#missing[@]} -gt 0 ]; then
    echo "installing from apt: ${missing[*]}"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"
  fi
  if [ "$promtool" -eq 1 ]; then
    echo "installing from apt: prometheus (for promtool only)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus
    stop_prometheus_server
  fi
  if [ "$compose" -eq 1 ]; then
    echo "installing from apt: docker-compose (to parse docker-compose.yml; no engine)"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends docker-compose
  fi
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo is missing: install a Rust toolchain (1.89 or newer, e.g. with rustup) and re-run" >&2
    exit 1
  fi
}

# The prometheus package's postinst starts the server (systemd, or /etc/init.d through
# invoke-rc.d) unless a policy-rc.d forbids it, as in most containers. It was installed
# here for promtool alone: stop it and keep it from starting at boot. Only called right
# after this script installed the package, so it never stops someone's own Prometheus.
stop_prometheus_server() {
  if [ -d /run/systemd/system ]; then
    as_root systemctl disable --now prometheus.service >/dev/null 2>&1 || true
  elif [ -x /etc/init.d/prometheus ]; then
    as_root /etc/init.d/prometheus stop >/dev/null 2>&1 || true
    as_root update-rc.d prometheus disable >/dev/null 2>&1 || true
  fi
  if pgrep -x prometheus >/dev/null 2>&1; then
    echo "warning: a Prometheus server is still running after installing the prometheus package (for promtool); stop it if it is not yours" >&2
  fi
}

ensure_postgres() {
  if port_open 5432; then return; fi
  local v
  v=$(ls /etc/postgresql 2>/dev/null | sort -n | tail -1)
  if [ -z "$v" ]; then echo "no PostgreSQL cluster under /etc/postgresql" >&2; exit 1; fi
  echo "starting PostgreSQL $v"
  as_root pg_ctlcluster --skip-systemctl-redirect "$v" main start
  for _ in $(seq 1 50); do port_open 5432 && return; sleep 0.2; done
  echo "PostgreSQL did not start listening on 127.0.0.1:5432" >&2; exit 1
}

ensure_nats() {
  if port_open 4222; then return; fi
  local bin store
  bin=$(command -v nats-server || echo /usr/sbin/nats-server)
  store="${ACE_NATS_STORE:-/var/lib/nats-server}"
  as_root mkdir -p "$store"
  echo "starting nats-server (JetStream store $store)"
  as_root start-stop-daemon --start --oknodo --background --exec "$bin" -- \
    -a 127.0.0.1 -p 4222 -js -sd "$store" -l /var/log/nats-server.log
  for _ in $(seq 1 50); do port_open 4222 && return; sleep 0.2; done
  echo "nats-server did not start listening on 127.0.0.1:4222 (see /var/log/nats-server.log)" >&2; exit 1
}

ensure_nextest() {
  if ! cargo nextest --version >/dev/null 2>&1; then
    echo "installing cargo-nextest from crates.io"
    cargo install --locked cargo-nextest
  fi
}
