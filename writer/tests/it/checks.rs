use std::time::Duration;

use super::support::*;

/// The digest check of migration V11 accepts exactly what V6's did (`sha256:` and 64
/// lowercase hex digits), whatever the writer: each candidate is inserted as a copy of a
/// real entry, and the outcome compared with V6's expression evaluated on it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_digest_check_accepts_exactly_sha256_and_64_lowercase_hex_digits() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let w = l.spawn_writer(l.writer_config());
    let mut acks = l.ack_stream().await;
    l.publish_raw("acme", sign(&statement(1, "check"), l.key("acme")), None)
        .await;
    collect_acks(&mut acks, 1, Duration::from_secs(30)).await;
    w.stop().await;

    let hex = "0123456789abcdef".repeat(4);
    let candidates = [
        format!("sha256:{hex}"),
        format!("sha256:{}", hex.to_uppercase()),
        format!("sha256:{}g", &hex[1..]),
        format!("sha256:{} ", &hex[1..]),
        format!("sha256:{} {}", &hex[..31], &hex[33..]),
        format!("sha256:{}", &hex[1..]),
        format!("sha256:{hex}0"),
        format!("sha512:{hex}"),
        format!("SHA256:{hex}"),
        format!("sha256:{}é", &hex[1..]),
        format!("sha256:{}\n", &hex[1..]),
        String::new(),
    ];
    let mut admin = l.db.admin().await;
    let mut accepted = Vec::new();
    for (i, digest) in candidates.iter().enumerate() {
        let v6: bool = admin
            .query_one(
                "SELECT length($1::text) = 71 AND starts_with($1::text, 'sha256:') \
                 AND translate(substr($1::text, 8), '0123456789abcdef', '') = ''",
                &[digest],
            )
            .await
            .unwrap()
            .get(0);
        let tx = admin.transaction().await.unwrap();
        let inserted = tx
            .execute(
                "INSERT INTO ledger_entries (idx, digest, producer, envelope, leaf, integrated_time, \
                     block_height, payload_type, predicate_type, keyid, stream_seq, warnings) \
                 SELECT 1000 + $2::bigint, $1, producer, envelope, leaf, integrated_time, block_height, \
                     payload_type, predicate_type, keyid, NULL, warnings \
                 FROM ledger_entries WHERE producer = 'acme'",
                &[digest, &(i as i64)],
            )
            .await;
        tx.rollback().await.unwrap();
        match inserted {
            Ok(n) => {
                assert_eq!(n, 1);
                accepted.push(i);
                assert!(v6, "{digest:?} was inserted; V6's check refused it");
            }
            Err(e) => assert!(!v6, "{digest:?} was refused ({e}); V6's check accepted it"),
        }
    }
    // Only the well-formed one: both outcomes were seen.
    assert_eq!(accepted, [0]);
}
