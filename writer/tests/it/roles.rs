use std::time::Duration;

use super::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_tables_refuse_update_delete_and_truncate_even_for_the_owner() {
    let mut l = Ledger::new().await;
    l.add_producer("acme").await;
    let w = l.spawn_writer(l.writer_config());
    let mut acks = l.ack_stream().await;
    l.publish_raw("acme", sign(&statement(1, "ro"), l.key("acme")), None)
        .await;
    collect_acks(&mut acks, 1, Duration::from_secs(30)).await;
    w.stop().await;

    // A superuser (triggers still on), the owner, and the writer.
    let owner = ace_core::db::connect(&l.db.url("ace_owner")).await.unwrap();
    let writer = ace_core::db::connect(&l.db.url("ace_writer"))
        .await
        .unwrap();
    let admin = l.db.admin().await;
    // Row triggers guard rows: every log table needs one for UPDATE and DELETE to meet them.
    admin
        .batch_execute(
            "INSERT INTO anchor_receipts (height, tree_size, sink, kind, receipt) \
             VALUES (0, 0, 'test', 'nats', '{}')",
        )
        .await
        .unwrap();
    for (who, c) in [
        ("superuser", &admin),
        ("ace_owner", &owner),
        ("ace_writer", &writer),
    ] {
        for table in ace_core::db::LOG_TABLES {
            for stmt in [
                format!(
                    "UPDATE {table} SET {} = {}",
                    first_col(table),
                    first_col(table)
                ),
                format!("DELETE FROM {table}"),
                format!("TRUNCATE {table} CASCADE"),
            ] {
                let err = c
                    .batch_execute(&stmt)
                    .await
                    .err()
                    .unwrap_or_else(|| panic!("{who}: {stmt} succeeded"));
                let msg = err
                    .as_db_error()
                    .map(|e| e.message().to_string())
                    .unwrap_or_default();
                assert!(
                    msg.contains("append-only") || msg.contains("permission denied"),
                    "{who}: {stmt}: {msg}"
                );
            }
        }
    }
    let n: i64 = admin
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1);
    // The reader role writes nothing.
    let reader = ace_core::db::connect(&l.db.url("ace_reader"))
        .await
        .unwrap();
    for stmt in [
        "INSERT INTO producers (producer) VALUES ('x')",
        "DELETE FROM dlq_items",
        "UPDATE producers SET status = 'suspended'",
    ] {
        assert!(
            reader.batch_execute(stmt).await.is_err(),
            "ace_reader: {stmt} succeeded"
        );
    }
}

fn first_col(table: &str) -> &'static str {
    match table {
        "ledger_tiles" => "level",
        "ledger_blocks" => "height",
        "anchor_receipts" => "id",
        "ledger_policies" => "version",
        "key_events" => "id",
        "key_event_entries" => "event_id",
        _ => "idx",
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writer_refuses_to_start_with_a_role_that_could_rewrite_the_log() {
    let l = Ledger::new().await;
    // A superuser.
    let mut cfg = l.writer_config();
    cfg.database_url = ace_core::config::Secret::new(l.db.url("postgres"));
    let err = refusal(&l, cfg).await;
    assert!(err.contains("superuser"), "{err}");

    // A role that holds UPDATE on ledger_entries.
    let role = unique("ace_t_role_");
    let admin = l.db.admin().await;
    admin
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT ace_writer TO {role}; GRANT UPDATE ON ledger_entries TO {role};"
        ))
        .await
        .unwrap();
    let mut cfg = l.writer_config();
    cfg.database_url = ace_core::config::Secret::new(l.db.url(&role));
    let err = refusal(&l, cfg).await;
    admin
        .batch_execute(&format!(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM {role}; REVOKE ace_writer FROM {role};"
        ))
        .await
        .unwrap();
    drop(l);
    let root = ace_core::db::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .unwrap();
    let _ = root
        .batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
        .await;
    assert!(err.contains("UPDATE on ledger_entries"), "{err}");

    // A role missing what it needs.
    let l = Ledger::new().await;
    let mut cfg = l.writer_config();
    cfg.database_url = ace_core::config::Secret::new(l.db.url("ace_reader"));
    let err = refusal(&l, cfg).await;
    assert!(err.contains("lacks INSERT on ledger_entries"), "{err}");
}

/// Why a writer started with `cfg` refused to run (it must refuse).
async fn refusal(l: &Ledger, cfg: ace_writer::Config) -> String {
    l.spawn_writer(cfg)
        .task
        .await
        .unwrap()
        .expect_err("the writer must refuse to start")
        .to_string()
}
