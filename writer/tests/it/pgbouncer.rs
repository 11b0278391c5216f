//! The writer through pgbouncer. It needs a session of its own (the sequencer's advisory
//! lock is session-level), so it is supported in pool_mode=session only; docs/operator.md,
//! "Connection pooling", says why transaction mode is not.

use std::time::Duration;

use ace_core::ack::AckStatus;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_appends_through_a_session_pooling_pgbouncer() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let bouncer = ace_testkit::PgBouncer::start(
        ace_testkit::PG_HOST,
        ace_testkit::PG_PORT,
        "session",
        &["ace_writer"],
    );
    let mut cfg = l.writer_config();
    cfg.database_url = ace_core::config::Secret::new(bouncer.url("ace_writer", &l.db.name));
    let w = l.spawn_writer(cfg);
    let mut acks = l.ack_stream().await;
    for n in 0..3 {
        l.publish_raw(
            "acme",
            sign(&statement(n, "pgbouncer"), l.key("acme")),
            None,
        )
        .await;
    }
    let got = collect_acks(&mut acks, 3, Duration::from_secs(60)).await;
    w.stop().await;
    for a in &got {
        assert!(matches!(a.status, AckStatus::Accepted), "{a:?}");
    }
    let admin = l.db.admin().await;
    wait_for_entries(&admin, 3, Duration::from_secs(10)).await;
    // It went through the pooler: pgbouncer logged the writer's logins to this database.
    let log = bouncer.log();
    assert!(
        log.contains(&format!("db={} user=ace_writer", l.db.name)),
        "no writer login in pgbouncer's log:\n{log}"
    );
}
