//! Inclusion-proof throughput of the reader over HTTP, on an existing ledger (load one with
//! `ace-synth`; see docs/performance.md).
//!
//! The reader runs in this process on its own runtime and port; the load generator keeps
//! `ACE_BENCH_CONNECTIONS` keep-alive HTTP/1.1 connections busy asking for proofs of random
//! entries at the latest tree size, on a second runtime. Both share the machine's cores, as
//! a reader and its clients on one box would. Every 64th proof is verified.
//!
//! Settings (environment):
//! - `ACE_BENCH_DATABASE_URL` (default `postgres://ace_reader@127.0.0.1:5432/ace_bench_10m`)
//! - `ACE_BENCH_LEDGER_KEY_FILE` (required): the ledger's key file, for its verifier key
//! - `ACE_BENCH_CONNECTIONS` (default 32), `ACE_BENCH_SECONDS` per round (default 10),
//!   `ACE_BENCH_ROUNDS` (default 5)
//! - `ACE_BENCH_CACHE_MB`: tile cache sizes to measure, comma-separated (default `512,0`)
//!
//! Run: `cargo bench -p ace-reader --bench proofs`

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ace_core::checkpoint::NoteSigner;
use ace_core::merkle::{verify_inclusion_proof, Hash};
use ace_reader::config::Config;
use http_body_util::BodyExt;
use rand::Rng;

fn env(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_string())
}

fn main() -> anyhow::Result<()> {
    let url = env(
        "ACE_BENCH_DATABASE_URL",
        "postgres://ace_reader@127.0.0.1:5432/ace_bench_10m",
    );
    let key_file = std::env::var("ACE_BENCH_LEDGER_KEY_FILE").map_err(|_| {
        anyhow::anyhow!(
            "ACE_BENCH_LEDGER_KEY_FILE is required: the ledger key file the ledger was loaded with"
        )
    })?;
    let signer = NoteSigner::parse_key_file(&std::fs::read_to_string(&key_file)?)?;
    let connections: usize = env("ACE_BENCH_CONNECTIONS", "32").parse()?;
    let seconds: u64 = env("ACE_BENCH_SECONDS", "10").parse()?;
    let rounds: usize = env("ACE_BENCH_ROUNDS", "5").parse()?;
    let caches: Vec<u64> = env("ACE_BENCH_CACHE_MB", "512,0")
        .split(',')
        .map(|s| s.trim().parse())
        .collect::<Result<_, _>>()?;

    println!(
        "reader proof benchmark: {} (connections {connections}, {rounds} rounds of {seconds} s)",
        ace_core::db::describe_url(&url)
    );
    for cache_mb in caches {
        // The binary's defaults, but for the cache size measured and room for every client.
        let cfg = Config {
            max_concurrent: 4096,
            tile_cache_bytes: cache_mb << 20,
            ..Config::with_defaults(
                ace_core::config::Secret::new(url.clone()),
                vec![signer.verifier()],
            )
        };
        // The reader on its own runtime, as its binary runs it (all cores).
        let server_rt = tokio::runtime::Builder::new_multi_thread()
            .enable_all()
            .build()?;
        let (addr, stop) = server_rt.block_on(async {
            let state = ace_reader::prepare(&cfg).await?;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            let addr = listener.local_addr()?;
            let (tx, rx) = tokio::sync::watch::channel(false);
            tokio::spawn(ace_reader::serve(state, listener, rx));
            anyhow::Ok((addr, tx))
        })?;
        let client_rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()?;
        let result = client_rt.block_on(measure(addr, connections, seconds, rounds, cache_mb));
        let _ = stop.send(true);
        drop(server_rt);
        result?;
    }
    Ok(())
}

struct Round {
    proofs: u64,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

async fn measure(
    addr: std::net::SocketAddr,
    connections: usize,
    seconds: u64,
    rounds: usize,
    cache_mb: u64,
) -> anyhow::Result<()> {
    let (size, root) = latest(addr).await?;
    println!("\ntile cache {cache_mb} MiB; tree size {size}");
    // Warm-up: one round's worth, not counted (fills the cache as a running reader's is).
    let warm = round(addr, connections, Duration::from_secs(seconds), size, root).await?;
    println!(
        "  warm-up: {:.0} proofs/s",
        warm.proofs as f64 / warm.elapsed.as_secs_f64()
    );
    let mut rates = Vec::new();
    let mut all_lat = Vec::new();
    for r in 0..rounds {
        let res = round(addr, connections, Duration::from_secs(seconds), size, root).await?;
        let rate = res.proofs as f64 / res.elapsed.as_secs_f64();
        println!(
            "  round {}: {rate:.0} proofs/s ({} proofs)",
            r + 1,
            res.proofs
        );
        rates.push(rate);
        all_lat.extend(res.latencies_us);
    }
    rates.sort_by(f64::total_cmp);
    all_lat.sort_unstable();
    let pct = |p: f64| all_lat[((all_lat.len() - 1) as f64 * p) as usize];
    println!(
        "  MEDIAN {:.0} proofs/s (min {:.0}, max {:.0}); latency p50 {} us, p99 {} us",
        rates[rates.len() / 2],
        rates[0],
        rates[rates.len() - 1],
        pct(0.5),
        pct(0.99)
    );
    Ok(())
}

async fn latest(addr: std::net::SocketAddr) -> anyhow::Result<(u64, Hash)> {
    let mut c = Conn::open(addr).await?;
    let v: serde_json::Value = serde_json::from_slice(&c.get("/v1/entries/0/proof").await?)?;
    let size = v["tree_size"]
        .as_u64()
        .ok_or_else(|| anyhow::anyhow!("no tree_size"))?;
    let root: Hash = hex::decode(v["root_hash"].as_str().unwrap_or_default())?
        .try_into()
        .map_err(|_| anyhow::anyhow!("bad root"))?;
    Ok((size, root))
}

async fn round(
    addr: std::net::SocketAddr,
    connections: usize,
    length: Duration,
    size: u64,
    root: Hash,
) -> anyhow::Result<Round> {
    let stop = Arc::new(AtomicBool::new(false));
    let count = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..connections {
        let stop = Arc::clone(&stop);
        let count = Arc::clone(&count);
        tasks.push(tokio::spawn(async move {
            let mut c = Conn::open(addr).await?;
            let mut lat = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let index = rand::thread_rng().gen_range(0..size);
                let t = Instant::now();
                let body = c.get(&format!("/v1/entries/{index}/proof")).await?;
                lat.push(t.elapsed().as_micros() as u64);
                n += 1;
                if n.is_multiple_of(64) {
                    check(&body, index, root)?;
                }
                count.fetch_add(1, Ordering::Relaxed);
            }
            anyhow::Ok(lat)
        }));
    }
    tokio::time::sleep(length).await;
    stop.store(true, Ordering::Relaxed);
    let proofs = count.load(Ordering::Relaxed);
    let elapsed = start.elapsed();
    let mut latencies_us = Vec::new();
    for t in tasks {
        latencies_us.extend(t.await??);
    }
    Ok(Round {
        proofs,
        elapsed,
        latencies_us,
    })
}

fn check(body: &[u8], index: u64, root: Hash) -> anyhow::Result<()> {
    let v: serde_json::Value = serde_json::from_slice(body)?;
    let h = |s: &serde_json::Value| -> anyhow::Result<Hash> {
        hex::decode(s.as_str().unwrap_or_default())?
            .try_into()
            .map_err(|_| anyhow::anyhow!("bad hash"))
    };
    let hashes = v["hashes"]
        .as_array()
        .ok_or_else(|| anyhow::anyhow!("no hashes"))?
        .iter()
        .map(h)
        .collect::<Result<Vec<_>, _>>()?;
    let size = v["tree_size"].as_u64().unwrap_or(0);
    let r = h(&v["root_hash"])?;
    // The benchmark ledger does not grow, so every proof is against the root seen first.
    if r != root {
        anyhow::bail!("proof of {index} is against another root (tree size {size})");
    }
    verify_inclusion_proof(&h(&v["leaf_hash"])?, index, size, &hashes, &root)?;
    Ok(())
}

/// One keep-alive HTTP/1.1 connection.
struct Conn {
    sender: hyper::client::conn::http1::SendRequest<http_body_util::Empty<bytes::Bytes>>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> anyhow::Result<Conn> {
        let stream = tokio::net::TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        let (sender, conn) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
        tokio::spawn(conn);
        Ok(Conn { sender })
    }

    async fn get(&mut self, path: &str) -> anyhow::Result<Vec<u8>> {
        self.sender.ready().await?;
        let req = hyper::Request::get(path)
            .header(hyper::header::HOST, "bench")
            .body(http_body_util::Empty::new())?;
        let resp = self.sender.send_request(req).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes().to_vec();
        if status != 200 {
            anyhow::bail!("GET {path}: {status}: {}", String::from_utf8_lossy(&body));
        }
        Ok(body)
    }
}
