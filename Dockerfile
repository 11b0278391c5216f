# syntax=docker/dockerfile:1
# One image for every ACE Ledger service; docker-compose.yml runs each binary in its own
# container: ace-writer, ace-reader, ace-anchor, ace-dashboard, and acectl (with
# docker/init.sh) in the one-shot init service.
#   docker build -t ace-ledger .

# --- build: the release binaries, with the locked dependency versions --------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target directory are BuildKit caches (kept between builds, not in the
# image), so the binaries are copied out within the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
      -p ace-writer -p ace-reader -p ace-anchor -p ace-dashboard -p acectl \
 && mkdir -p /out \
 && cp target/release/ace-writer target/release/ace-reader target/release/ace-anchor \
       target/release/ace-dashboard target/release/acectl /out/

# --- runtime ---------------------------------------------------------------------------
FROM debian:bookworm-slim
# ca-certificates: TLS to NATS, TSAs, webhooks and witnesses; curl: the health checks.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
# The services run as `ace` (uid and gid 10001, no shell, no home). The state directories
# are the mount points of docker-compose.yml's volumes; /run/ace holds the copies of the
# secrets (a tmpfs in compose; docker/entrypoint.sh).
RUN groupadd --system --gid 10001 ace \
 && useradd --system --uid 10001 --gid ace --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin ace \
 && install -d -m 0755 /var/lib/ace /run/ace \
 && install -d -o ace -g ace -m 0700 /var/lib/ace/writer /var/lib/ace/anchor /var/lib/ace/dashboard \
 && install -d -m 0700 /var/lib/ace/init \
 && install -d -m 0755 /var/lib/ace/public /var/lib/ace/nats-auth
COPY --from=build /out/ /usr/local/bin/
COPY docker/entrypoint.sh /usr/local/bin/ace-entrypoint
COPY docker/init.sh /usr/local/bin/ace-init
# Started as root only to hand the secrets to `ace`, then runs the command as `ace` with no
# capabilities (docker/entrypoint.sh).
ENTRYPOINT ["/usr/local/bin/ace-entrypoint"]
CMD ["acectl", "--help"]
