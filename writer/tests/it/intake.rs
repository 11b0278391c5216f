use std::collections::HashSet;
use std::time::Duration;

use ace_core::ack::AckStatus;

use super::support::*;

/// GET over plain HTTP/1.1 on loopback; returns the status and body.
pub async fn try_http_get(port: u16, path: &str) -> std::io::Result<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
    s.write_all(
        format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n").as_bytes(),
    )
    .await?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await?;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let code = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((code, body))
}

pub async fn http_get(port: u16, path: &str) -> (u16, String) {
    try_http_get(port, path)
        .await
        .unwrap_or_else(|e| panic!("GET {path} on port {port}: {e}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_envelopes_from_three_producers_make_a_verified_log() {
    let mut l = Ledger::new().await;
    for p in ["alpha", "bravo", "charlie"] {
        l.add_producer(p).await;
    }
    let port = free_port();
    let mut cfg = l.writer_config();
    cfg.listen = format!("127.0.0.1:{port}").parse().unwrap();
    let w = l.spawn_writer(cfg);
    let mut acks = l.ack_stream().await;

    let producers = ["alpha", "bravo", "charlie"];
    let items: Vec<(String, Vec<u8>)> = (0..1000u64)
        .map(|n| {
            let p = producers[(n % 3) as usize];
            (p.to_string(), sign(&statement(n, p), l.key(p)))
        })
        .collect();
    let seqs = l.publish_many(items).await;
    let acks = collect_acks(&mut acks, 1000, Duration::from_secs(60)).await;

    assert!(
        acks.iter().all(|a| a.status == AckStatus::Accepted),
        "every ack accepted: {:?}",
        acks.iter().find(|a| a.status != AckStatus::Accepted)
    );
    let acked: HashSet<u64> = acks.iter().map(|a| a.stream_seq).collect();
    assert_eq!(
        acked,
        seqs.iter().copied().collect(),
        "one ack per published message"
    );

    let c = l.db.admin().await;
    let report = check_log(&c, &l.signer).await;
    assert_eq!(report.entries, 1000);
    assert!(report.blocks >= 2, "genesis plus at least one block");
    for a in &acks {
        let d = a.digest.as_ref().unwrap();
        assert_eq!(report.digests.get(d), a.index.as_ref(), "ack index for {d}");
    }
    let dlq: i64 = c
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0);
    let subjects: i64 = c
        .query_one("SELECT count(*) FROM ledger_subjects", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(subjects, 1000, "one indexed subject per statement");

    // The metrics count what happened.
    let (code, metrics) = http_get(port, "/metrics").await;
    assert_eq!(code, 200);
    for p in producers {
        let n = if p == "alpha" { 334 } else { 333 };
        let line =
            format!("ace_writer_envelopes_total{{outcome=\"accepted\",producer=\"{p}\"}} {n}");
        assert!(metrics.contains(&line), "missing {line:?} in\n{metrics}");
    }
    // The 1000 envelopes and the key events of three producers and their keys.
    assert!(metrics.contains("ace_writer_tree_size 1006"), "{metrics}");
    assert!(
        metrics.contains("ace_writer_publish_to_commit_seconds_count{producer=\"alpha\"} 334"),
        "{metrics}"
    );
    let (code, ready) = http_get(port, "/readyz").await;
    assert_eq!(code, 200, "{ready}");
    assert!(ready.contains("\"role\":\"leader\""), "{ready}");
    w.stop().await;
}
