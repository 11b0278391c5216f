//! Every service role against every write it is not granted, on a freshly migrated
//! database: INSERT, UPDATE, DELETE, TRUNCATE on every table of the schema (listed from the
//! catalog, so a table added by a later migration is covered without editing this test),
//! DDL, and the sequences. What each role may write comes from core's `RoleGrants`, the
//! same table the services check at start.

use ace_core::db::{self, RoleGrants, SERVICE_GRANTS};
use ace_testkit::{unique, TestDb};

/// A refusal: SQLSTATE 42501 (insufficient_privilege, which the append-only triggers
/// raise too), in the server's words.
fn assert_refused(who: &str, sql: &str, r: Result<(), tokio_postgres::Error>) {
    let e = match r {
        Ok(()) => panic!("{who}: `{sql}` succeeded; it must be refused"),
        Err(e) => e,
    };
    let (code, msg) = match e.as_db_error() {
        Some(d) => (d.code().code().to_string(), d.message().to_string()),
        None => panic!("{who}: `{sql}`: not a server refusal: {e:?}"),
    };
    assert!(
        code == "42501"
            && (msg.contains("permission denied")
                || msg.contains("must be owner")
                || msg.contains("append-only")),
        "{who}: `{sql}`: {code} {msg}"
    );
}

/// Runs `sql` as the connected role inside a transaction that is always rolled back, so
/// that a statement wrongly allowed changes nothing for the statements after it.
async fn attempt(c: &mut tokio_postgres::Client, sql: &str) -> Result<(), tokio_postgres::Error> {
    let tx = c.transaction().await?;
    tx.batch_execute(sql).await
    // dropped: rolled back
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_role_is_refused_every_write_it_is_not_granted() {
    let db = TestDb::new().await;
    let admin = db.admin().await;
    // Tables (with one column each, for UPDATE) and sequences, from the catalog.
    let tables: Vec<(String, String)> = admin
        .query(
            "SELECT c.relname::text, \
                    (SELECT a.attname::text FROM pg_attribute a \
                      WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped \
                      ORDER BY a.attnum LIMIT 1) \
               FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY 1",
            &[],
        )
        .await
        .expect("listing tables")
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let sequences: Vec<String> = admin
        .query(
            "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
              WHERE n.nspname = 'public' AND c.relkind = 'S' ORDER BY 1",
            &[],
        )
        .await
        .expect("listing sequences")
        .iter()
        .map(|r| r.get(0))
        .collect();
    let names: Vec<&str> = tables.iter().map(|(t, _)| t.as_str()).collect();
    for t in db::ALL_TABLES
        .iter()
        .chain(["dlq_actions", "operator_audit", "nats_users"].iter())
    {
        assert!(
            names.contains(t),
            "table {t} is not in the catalog: {names:?}"
        );
    }
    // The grants table names only what exists: a typo there would silently grant nothing.
    for g in SERVICE_GRANTS {
        for t in g.reads.iter().chain(g.appends) {
            assert!(names.contains(t), "{}: unknown table {t}", g.role);
        }
        for s in g.sequences {
            assert!(
                sequences.contains(&s.to_string()),
                "{}: unknown sequence {s}",
                g.role
            );
        }
    }

    let mut total = 0;
    for g in SERVICE_GRANTS {
        let mut c = db::connect(&db.url(g.role))
            .await
            .expect("connect as the role");
        // The migrations grant exactly what the table says: the service's own start check
        // passes on a fresh database.
        db::assert_role_grants(&c, &g).await.unwrap_or_else(|e| {
            panic!(
                "{}: the migrated grants differ from RoleGrants: {e}",
                g.role
            )
        });
        let tried = try_forbidden(&mut c, &g, &tables, &sequences).await;
        println!(
            "{}: {tried} forbidden statements tried, all refused",
            g.role
        );
        total += tried;
    }
    println!(
        "{total} forbidden statements tried in all, on {} tables and {} sequences",
        tables.len(),
        sequences.len()
    );
    // UPDATE, DELETE, TRUNCATE, ALTER and DROP on every table, whatever the role, and the
    // two CREATEs: a loop that skipped too much would fall short of this.
    assert!(
        total >= SERVICE_GRANTS.len() * (tables.len() * 5 + 2),
        "only {total} statements tried"
    );
}

/// Tries every write `g` does not grant; returns how many were tried (all refused).
async fn try_forbidden(
    c: &mut tokio_postgres::Client,
    g: &RoleGrants,
    tables: &[(String, String)],
    sequences: &[String],
) -> usize {
    let who = g.role;
    let mut tried = 0;
    for (table, col) in tables {
        let statements = [
            ("INSERT", format!("INSERT INTO {table} DEFAULT VALUES")),
            ("UPDATE", format!("UPDATE {table} SET {col} = {col}")),
            ("DELETE", format!("DELETE FROM {table}")),
            ("TRUNCATE", format!("TRUNCATE {table}")),
            (
                "ALTER",
                format!("ALTER TABLE {table} ADD COLUMN ace_probe int"),
            ),
            ("DROP", format!("DROP TABLE {table}")),
        ];
        for (privilege, sql) in statements {
            if g.allows(table, privilege) {
                continue;
            }
            assert_refused(who, &sql, attempt(c, &sql).await);
            tried += 1;
        }
    }
    for sql in [
        "CREATE TABLE ace_probe (a int)",
        "CREATE FUNCTION ace_probe() RETURNS int LANGUAGE sql AS 'SELECT 1'",
    ] {
        assert_refused(who, sql, attempt(c, sql).await);
        tried += 1;
    }
    for seq in sequences {
        // setval needs UPDATE, which no service holds; nextval needs USAGE, which only
        // the sequences behind a role's own serial columns allow.
        let mut statements = vec![format!("SELECT setval('{seq}', 1)")];
        if !g.sequences.contains(&seq.as_str()) {
            statements.push(format!("SELECT nextval('{seq}')"));
        }
        for sql in statements {
            assert_refused(who, &sql, attempt(c, &sql).await);
            tried += 1;
        }
    }
    tried
}

/// The check every service runs at start refuses a role that holds one privilege more
/// than its grants, on any table (a table added later included), and names it. The roles
/// are made for this test (services accept any role name), so the shared ace_* roles are
/// untouched; each service's own tests start the service itself with such a role.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_start_check_refuses_each_service_role_with_one_privilege_more() {
    let db = TestDb::new().await;
    let admin = db.admin().await;
    let extras = [
        ("UPDATE", "ledger_entries"),
        ("INSERT", "producers"),
        ("DELETE", "anchor_receipts"),
        ("INSERT", "nats_users"),
    ];
    let mut roles = Vec::new();
    for (g, (privilege, table)) in SERVICE_GRANTS.iter().zip(extras) {
        let role = unique("ace_t_over_");
        roles.push(role.clone());
        admin
            .batch_execute(&format!(
                "CREATE ROLE {role} LOGIN IN ROLE {}; GRANT {privilege} ON {table} TO {role}",
                g.role
            ))
            .await
            .expect("test role");
        let c = db::connect(&db.url(&role)).await.expect("connect");
        let e = db::assert_role_grants(&c, g)
            .await
            .err()
            .map(|e| e.to_string());
        let want = format!("{privilege} on {table}");
        assert!(
            e.as_deref()
                .is_some_and(|e| e.contains(&want) && e.contains(&role)),
            "{}: {e:?} should name {want}",
            g.service
        );
        // Without the extra grant the same role passes: the refusal was for that grant.
        admin
            .batch_execute(&format!("REVOKE {privilege} ON {table} FROM {role}"))
            .await
            .expect("revoke");
        db::assert_role_grants(&c, g)
            .await
            .unwrap_or_else(|e| panic!("{}: {e}", g.service));
    }
    // CREATE on the schema, and membership of the owner, are refused too.
    let g = &SERVICE_GRANTS[1];
    let role = &roles[1];
    for (grant, want) in [
        (
            format!("GRANT CREATE ON SCHEMA public TO {role}"),
            "CREATE on schema public",
        ),
        (
            format!("REVOKE CREATE ON SCHEMA public FROM {role}; GRANT ace_owner TO {role}"),
            "membership of ace_owner",
        ),
    ] {
        admin.batch_execute(&grant).await.expect("grant");
        let c = db::connect(&db.url(role)).await.expect("connect");
        let e = db::assert_role_grants(&c, g)
            .await
            .err()
            .map(|e| e.to_string());
        assert!(
            e.as_deref().is_some_and(|e| e.contains(want)),
            "{e:?} should name {want}"
        );
    }
    admin
        .batch_execute(&format!("REVOKE ace_owner FROM {role}"))
        .await
        .expect("revoke");
    drop(admin);
    drop(db);
    // The database (and the grants in it) are gone: the roles can go too.
    let root = db::connect("postgres://postgres@127.0.0.1:5432/postgres")
        .await
        .expect("connect");
    for role in roles {
        root.batch_execute(&format!("DROP ROLE IF EXISTS {role}"))
            .await
            .expect("drop role");
    }
}
