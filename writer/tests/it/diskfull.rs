//! The disk under the log's entries fills (a private Postgres whose `ledger_entries` lives
//! in a tablespace on a small tmpfs): the writer stops taking work, counts why, sends
//! nothing to the DLQ, and resumes by itself once space returns.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use ace_testkit::PgServer;

use super::support::*;

/// A tmpfs mounted for the test, unmounted when dropped.
struct Mount(PathBuf);

impl Mount {
    fn tmpfs(size: &str) -> Mount {
        let dir = std::env::temp_dir().join(unique("ace-tmpfs-"));
        std::fs::create_dir_all(&dir).unwrap();
        let ok = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(&dir)
            .status()
            .expect("running mount")
            .success();
        assert!(
            ok,
            "mounting a tmpfs on {} (the tests run as root)",
            dir.display()
        );
        let ok = Command::new("chown")
            .arg("postgres:postgres")
            .arg(&dir)
            .status()
            .expect("running chown")
            .success();
        assert!(ok, "chown of {}", dir.display());
        Mount(dir)
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Write zeros into `path` until the filesystem is full.
fn fill(path: &Path) {
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0u8; 1 << 20];
    while f.write_all(&chunk).is_ok() {}
    let _ = f.flush();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_disk_stops_intake_without_loss_and_it_resumes_when_space_returns() {
    // Dropped last: the server must stop before its tablespace goes.
    let mount = tokio::task::spawn_blocking(|| Mount::tmpfs("16m"))
        .await
        .unwrap();
    let pg = tokio::task::spawn_blocking(PgServer::start).await.unwrap();
    let db = TestDb::on("127.0.0.1", pg.port).await;
    let admin = db.admin().await;
    let location = mount.0.join("ts");
    std::fs::create_dir_all(&location).unwrap();
    let ok = Command::new("chown")
        .arg("postgres:postgres")
        .arg(&location)
        .status()
        .unwrap()
        .success();
    assert!(ok);
    // One statement per call: CREATE TABLESPACE refuses a transaction block.
    admin
        .batch_execute(&format!(
            "CREATE TABLESPACE ace_small LOCATION '{}'",
            location.display()
        ))
        .await
        .unwrap();
    admin
        .batch_execute("ALTER TABLE ledger_entries SET TABLESPACE ace_small")
        .await
        .unwrap();
    let filler = mount.0.join("filler");
    let f = filler.clone();
    tokio::task::spawn_blocking(move || fill(&f)).await.unwrap();

    let mut l = Ledger::from_parts(db, TestNats::new().await);
    l.add_producer("acme").await;
    let port = free_port();
    let log = mount.0.with_extension("writer.log");
    let mut w = l.spawn_writer_process_with(port, &[], Some(&log));
    const TOTAL: u64 = 1000;
    let items: Vec<(String, Vec<u8>)> = (0..TOTAL)
        .map(|n| {
            (
                "acme".to_string(),
                sign(&statement(n, "full"), l.key("acme")),
            )
        })
        .collect();
    l.publish_many(items).await;

    // Full: nothing gets in, and the writer says it is a Postgres fault, again and again.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while writer_metric(port, POSTGRES_FAULTS).await < 2.0 {
        assert!(
            std::time::Instant::now() < deadline,
            "the writer never reported the full disk as a Postgres fault"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let entries: i64 = admin
        .query_one(
            "SELECT count(*) FROM ledger_entries WHERE producer <> '_ledger'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(entries, 0, "nothing is written while the disk is full");
    let said = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        said.contains("No space left on device"),
        "the writer's log names the cause:\n{said}"
    );

    // Space returns: the writer resumes by itself.
    std::fs::remove_file(&filler).unwrap();
    wait_for_entries(&admin, TOTAL as i64, Duration::from_secs(60)).await;
    let report = check_log(&admin, &l.signer).await;
    full_audit(&l);
    assert_eq!(report.entries, TOTAL, "each envelope exactly once");
    let dlq: i64 = admin
        .query_one("SELECT count(*) FROM dlq_items", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(dlq, 0, "a full disk never lands in the DLQ");
    w.sigkill();
    drop(l);
    drop(admin);
    drop(pg);
    drop(mount);
    let _ = std::fs::remove_file(&log);
}
