//! Postgres plumbing shared by the services and acectl: connecting, migrating, checking a
//! role's privileges, and reading the producer registry.

use std::collections::HashMap;

use deadpool_postgres::{Pool, Runtime};
use tokio_postgres::{Client, GenericClient, NoTls};

use crate::block::BlockHeader;
use crate::merkle::Hash;
use crate::tiles::{self, TileAppender, TileSet};

use crate::ids::KeyId;
use crate::keys::RegisteredKey;
use crate::policy::ProducerStatus;

mod embedded {
    refinery::embed_migrations!("../sql/migrations");
}

/// The roles script (sql/roles.sql), run before the migrations.
pub const ROLES_SQL: &str = include_str!("../../sql/roles.sql");

/// Advisory lock key that serialises concurrent `acectl db migrate` runs ("ACEMIGR" in ASCII).
pub const MIGRATION_LOCK_KEY: i64 = 0x0041_4345_4d49_4752;

/// The tables whose rows are never updated or deleted.
pub const LOG_TABLES: [&str; 8] = [
    "ledger_entries",
    "ledger_subjects",
    "ledger_tiles",
    "ledger_blocks",
    "anchor_receipts",
    "ledger_policies",
    "key_events",
    "key_event_entries",
];

/// Every table the migrations create.
pub const ALL_TABLES: [&str; 11] = [
    "producers",
    "producer_keys",
    "ledger_entries",
    "ledger_subjects",
    "ledger_tiles",
    "ledger_blocks",
    "dlq_items",
    "anchor_receipts",
    "ledger_policies",
    "key_events",
    "key_event_entries",
];

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("bad database URL ({0})")]
    BadUrl(String),
    #[error("cannot connect to Postgres at {target}: {}", describe_pg(source))]
    Connect {
        target: String,
        source: tokio_postgres::Error,
    },
    #[error("Postgres pool for {target}: {message}")]
    Pool { target: String, message: String },
    #[error("{what}: {}", describe_pg(source))]
    Query {
        what: &'static str,
        source: tokio_postgres::Error,
    },
    #[error("migrations failed: {0}")]
    Migrate(String),
    #[error("role {role} {problem}")]
    Privilege { role: String, problem: String },
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
    /// A connection the caller kept open (e.g. for LISTEN) ended.
    #[error("the Postgres connection {0} closed")]
    Closed(String),
}

impl DbError {
    pub fn query(what: &'static str) -> impl FnOnce(tokio_postgres::Error) -> DbError {
        move |source| DbError::Query { what, source }
    }

    /// A fault that goes away by itself (server down, connection lost, overload): retry,
    /// never reject the envelope.
    pub fn is_transient(&self) -> bool {
        match self {
            DbError::Connect { .. } | DbError::Pool { .. } | DbError::Closed(_) => true,
            DbError::Query { source, .. } => is_transient(source),
            _ => false,
        }
    }
}

/// Connection loss, shutdown, overload and serialization failures are transient; a
/// constraint violation or a missing privilege is not.
pub fn is_transient(e: &tokio_postgres::Error) -> bool {
    if e.is_closed() {
        return true;
    }
    match e.code() {
        // No SQLSTATE: an I/O error on the socket.
        None => true,
        Some(code) => {
            let c = code.code();
            c.starts_with("08") // connection exception
                || c.starts_with("53") // insufficient resources
                || c.starts_with("57P") // operator intervention (shutdown, crash)
                || c == "40001" // serialization failure
                || c == "40P01" // deadlock
        }
    }
}

/// A Postgres error with the server's own words: `tokio_postgres::Error`'s Display says only
/// "db error" for errors the server reports, which names nothing.
pub fn describe_pg(e: &tokio_postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => {
            let mut s = format!("{} (SQLSTATE {})", db.message(), db.code().code());
            if let Some(d) = db.detail() {
                s.push_str(": ");
                s.push_str(d);
            }
            s
        }
        None => match std::error::Error::source(e) {
            Some(cause) => format!("{e}: {cause}"),
            None => e.to_string(),
        },
    }
}

/// Whether the server cancelled a statement for running past `statement_timeout`.
pub fn is_statement_timeout(e: &DbError) -> bool {
    matches!(e, DbError::Query { source, .. }
        if source.code() == Some(&tokio_postgres::error::SqlState::QUERY_CANCELED))
}

/// "host:port/db as user" for error messages, never the password.
pub fn describe_url(url: &str) -> String {
    match url.parse::<tokio_postgres::Config>() {
        Ok(cfg) => {
            let host = cfg
                .get_hosts()
                .first()
                .map(|h| match h {
                    tokio_postgres::config::Host::Tcp(s) => s.clone(),
                    tokio_postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .unwrap_or_else(|| "localhost".into());
            let port = cfg.get_ports().first().copied().unwrap_or(5432);
            format!(
                "{host}:{port}/{} as {}",
                cfg.get_dbname().unwrap_or("?"),
                cfg.get_user().unwrap_or("?")
            )
        }
        Err(_) => "<unparseable URL>".into(),
    }
}

fn parse_url(url: &str) -> Result<tokio_postgres::Config, DbError> {
    url.parse()
        .map_err(|e: tokio_postgres::Error| DbError::BadUrl(format!("{}: {e}", describe_url(url))))
}

/// Add a server setting (`name=value`) to the session options, keeping any the URL gave.
fn add_setting(cfg: &mut tokio_postgres::Config, setting: &str) {
    let mut options = cfg.get_options().unwrap_or_default().to_owned();
    if !options.is_empty() {
        options.push(' ');
    }
    options.push_str("-c ");
    options.push_str(setting);
    cfg.options(options);
}

/// Connect with `cfg` (parsed from `url`, which names the target in errors) and spawn the
/// connection's driver task on the current runtime.
async fn connect_with(url: &str, cfg: &tokio_postgres::Config) -> Result<Client, DbError> {
    let (client, conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|source| DbError::Connect {
            target: describe_url(url),
            source,
        })?;
    tokio::spawn(async move {
        if let Err(e) = conn.await {
            tracing::debug!(error = %e, "postgres connection closed");
        }
    });
    Ok(client)
}

/// One connection, its driver task spawned on the current runtime.
pub async fn connect(url: &str) -> Result<Client, DbError> {
    connect_with(url, &parse_url(url)?).await
}

/// [`connect`] for a service that must not hang on a stalled network: the connect, and
/// any data left unacknowledged by the peer's TCP, give up after `timeout`
/// (`tcp_user_timeout`); and the server ends the session if it sits idle inside a
/// transaction for `timeout` (so that a session whose client vanished mid-transaction
/// frees its locks, the writer's sequencer lock among them).
pub async fn connect_guarded(url: &str, timeout: std::time::Duration) -> Result<Client, DbError> {
    let mut cfg = parse_url(url)?;
    let ms = timeout.as_millis().max(1);
    add_setting(
        &mut cfg,
        &format!("idle_in_transaction_session_timeout={ms}"),
    );
    cfg.connect_timeout(timeout)
        .tcp_user_timeout(timeout)
        .keepalives_idle(timeout);
    connect_with(url, &cfg).await
}

/// A connection whose notifications (LISTEN) arrive on the returned channel, which
/// closes when the connection does: the caller learns of a lost connection by it.
pub async fn connect_listening(
    url: &str,
) -> Result<
    (
        Client,
        tokio::sync::mpsc::UnboundedReceiver<tokio_postgres::Notification>,
    ),
    DbError,
> {
    let cfg = parse_url(url)?;
    let (client, mut conn) = cfg
        .connect(NoTls)
        .await
        .map_err(|source| DbError::Connect {
            target: describe_url(url),
            source,
        })?;
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    tokio::spawn(async move {
        let mut messages = futures::stream::poll_fn(move |cx| conn.poll_message(cx));
        while let Some(m) = futures::StreamExt::next(&mut messages).await {
            match m {
                Ok(tokio_postgres::AsyncMessage::Notification(n)) => {
                    if tx.send(n).is_err() {
                        break;
                    }
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "listening postgres connection closed");
                    break;
                }
            }
        }
    });
    Ok((client, rx))
}

/// A pool; connections are opened lazily, so this does not touch the server.
pub fn pool(url: &str, max_size: usize) -> Result<Pool, DbError> {
    pool_with(url, max_size, None)
}

/// [`pool`], with a server-side `statement_timeout` on every connection, so that no query
/// an HTTP client can trigger runs longer than that, whatever the client does.
pub fn pool_with(
    url: &str,
    max_size: usize,
    statement_timeout: Option<std::time::Duration>,
) -> Result<Pool, DbError> {
    let mut pg = parse_url(url)?;
    if let Some(t) = statement_timeout {
        add_setting(
            &mut pg,
            &format!("statement_timeout={}", t.as_millis().max(1)),
        );
    }
    let mgr = deadpool_postgres::Manager::from_config(
        pg,
        NoTls,
        deadpool_postgres::ManagerConfig {
            recycling_method: deadpool_postgres::RecyclingMethod::Fast,
        },
    );
    Pool::builder(mgr)
        .max_size(max_size)
        // Waiting for a free connection is bounded like the statements themselves.
        .wait_timeout(statement_timeout)
        .create_timeout(statement_timeout)
        .runtime(Runtime::Tokio1)
        .build()
        .map_err(|e| DbError::Pool {
            target: describe_url(url),
            message: e.to_string(),
        })
}

/// What `migrate` did.
#[derive(Debug, Clone)]
pub struct MigrateReport {
    pub applied: Vec<String>,
    /// Service roles' grants that were missing and were given back (`SELECT on
    /// ledger_entries to ace_reader`): a grant revoked by hand is restored by a rerun.
    pub restored_grants: Vec<String>,
}

/// Create the roles if missing, then apply pending migrations as `ace_owner`, all under
/// an advisory lock so concurrent runs serialise instead of racing. Run by
/// `acectl db migrate`, never implicitly by services.
pub async fn migrate(client: &mut Client) -> Result<MigrateReport, DbError> {
    client
        .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK_KEY])
        .await
        .map_err(DbError::query("taking the migration lock"))?;
    let result = migrate_locked(client).await;
    // The lock is released with the session anyway; unlock explicitly for pooled callers.
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK_KEY])
        .await;
    result
}

async fn migrate_locked(client: &mut Client) -> Result<MigrateReport, DbError> {
    let row = client
        .query_one(
            "SELECT current_user::text, \
                    (SELECT count(*) FROM pg_roles WHERE rolname IN ('ace_owner','ace_writer','ace_reader','ace_anchor','ace_dashboard'))",
            &[],
        )
        .await
        .map_err(DbError::query("checking roles before migrating"))?;
    let user: String = row.get(0);
    let roles: i64 = row.get(1);
    if roles < 5 {
        client.batch_execute(ROLES_SQL).await.map_err(|e| {
            DbError::Migrate(format!(
                "creating roles (sql/roles.sql) as {user}: {}",
                describe_pg(&e)
            ))
        })?;
    }
    let owner_can_create: bool = client
        .query_one(
            "SELECT has_schema_privilege('ace_owner', 'public', 'CREATE')",
            &[],
        )
        .await
        .map_err(DbError::query("checking ace_owner's schema privilege"))?
        .get(0);
    if !owner_can_create {
        client
            .batch_execute("GRANT USAGE, CREATE ON SCHEMA public TO ace_owner")
            .await
            .map_err(|e| {
                DbError::Migrate(format!(
                    "granting CREATE on schema public to ace_owner as {user}: {}",
                    describe_pg(&e)
                ))
            })?;
    }
    if user != "ace_owner" {
        client
            .batch_execute("SET ROLE ace_owner")
            .await
            .map_err(|e| {
                DbError::Migrate(format!("SET ROLE ace_owner as {user}: {}", describe_pg(&e)))
            })?;
    }
    let report = embedded::migrations::runner()
        .set_abort_divergent(true)
        .set_abort_missing(true)
        .run_async(client)
        .await;
    // As the tables' owner: the grants each service's start check requires.
    let restored = match &report {
        Ok(_) => restore_grants(client).await,
        Err(_) => Ok(Vec::new()),
    };
    if user != "ace_owner" {
        let _ = client.batch_execute("RESET ROLE").await;
    }
    let report = report.map_err(|e| DbError::Migrate(e.to_string()))?;
    Ok(MigrateReport {
        applied: report
            .applied_migrations()
            .iter()
            .map(|m| m.to_string())
            .collect(),
        restored_grants: restored?,
    })
}

/// Gives each service role back any privilege of [`SERVICE_GRANTS`] it lacks (the
/// migrations granted them once; a hand-made REVOKE would otherwise stay). Grants nothing
/// beyond them: the start checks refuse a role with more.
async fn restore_grants(client: &Client) -> Result<Vec<String>, DbError> {
    let mut restored = Vec::new();
    for g in &SERVICE_GRANTS {
        let wanted = g
            .reads
            .iter()
            .map(|t| ("SELECT", *t, false))
            .chain(g.appends.iter().map(|t| ("INSERT", *t, false)))
            .chain(g.sequences.iter().map(|s| ("USAGE", *s, true)));
        for (privilege, object, sequence) in wanted {
            let check = if sequence {
                "SELECT has_sequence_privilege($1, $2, $3)"
            } else {
                "SELECT has_table_privilege($1, $2, $3)"
            };
            let has: bool = client
                .query_one(check, &[&g.role, &object, &privilege])
                .await
                .map_err(DbError::query("checking the service roles' grants"))?
                .get(0);
            if has {
                continue;
            }
            let what = if sequence { "SEQUENCE " } else { "" };
            client
                .batch_execute(&format!(
                    "GRANT {privilege} ON {what}{object} TO {}",
                    g.role
                ))
                .await
                .map_err(|e| {
                    DbError::Migrate(format!(
                        "restoring {privilege} on {object} to {}: {}",
                        g.role,
                        describe_pg(&e)
                    ))
                })?;
            restored.push(
                format!("{privilege} on {what}{object} to {}", g.role)
                    .replace("SEQUENCE ", "sequence "),
            );
        }
    }
    Ok(restored)
}

/// A privilege on a table, as `has_table_privilege` names it.
#[derive(Debug, Clone, Copy)]
pub struct TablePrivilege {
    pub table: &'static str,
    pub privilege: &'static str,
}

/// Check at start that the connected role holds every `required` privilege and none of
/// the `forbidden` ones, and is not a superuser (which holds them all). The error names
/// the role, the table and the privilege.
pub async fn assert_privileges(
    client: &Client,
    required: &[TablePrivilege],
    forbidden: &[TablePrivilege],
) -> Result<String, DbError> {
    let row = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .map_err(DbError::query("reading the connected role"))?;
    let role: String = row.get(0);
    let superuser: bool = row.get(1);
    if superuser {
        return Err(DbError::Privilege {
            role,
            problem: "is a superuser: it could rewrite the log. Connect as the service's own role (see docs/operator.md, \"Postgres roles\")".into(),
        });
    }
    let check = |tp: &TablePrivilege| {
        let sql = "SELECT has_table_privilege(current_user, $1, $2)";
        (sql, tp.table, tp.privilege)
    };
    for tp in required {
        let (sql, t, p) = check(tp);
        let has: bool = client
            .query_one(sql, &[&t, &p])
            .await
            .map_err(|e| DbError::Privilege {
                role: role.clone(),
                problem: format!(
                    "cannot be checked for {p} on {t}: {} (has `acectl db migrate` run?)",
                    describe_pg(&e)
                ),
            })?
            .get(0);
        if !has {
            return Err(DbError::Privilege {
                role,
                problem: format!("lacks {p} on {t}, which it needs (re-run `acectl db migrate` to restore the grants)"),
            });
        }
    }
    for tp in forbidden {
        let (sql, t, p) = check(tp);
        let has: bool = client
            .query_one(sql, &[&t, &p])
            .await
            .map_err(DbError::query("checking a forbidden privilege"))?
            .get(0);
        if has {
            let problem = format!(
                "holds {p} on {t}, which it must not have: revoke it (REVOKE {p} ON {t} FROM {role})"
            );
            return Err(DbError::Privilege { role, problem });
        }
    }
    Ok(role)
}

/// What one service's role is granted: the one source of truth for the services' start
/// checks ([`assert_role_grants`]) and for the role tests (acectl's tests/roles.rs), which
/// try every other write against a migrated database. The migrations' GRANTs must match
/// it: a grant missing there fails the service's start, a grant too many fails both.
#[derive(Debug, Clone, Copy)]
pub struct RoleGrants {
    /// The role's default name (a deployment may use another name with the same grants).
    pub role: &'static str,
    /// The service that connects as it.
    pub service: &'static str,
    /// Tables it SELECTs from.
    pub reads: &'static [&'static str],
    /// Tables it INSERTs into; every other write on every table is forbidden.
    pub appends: &'static [&'static str],
    /// Sequences it draws from (USAGE: `nextval` through a serial column's default).
    pub sequences: &'static [&'static str],
}

/// The writer: appends to the log and the DLQ, reads the registry.
pub const WRITER_GRANTS: RoleGrants = RoleGrants {
    role: "ace_writer",
    service: "writer",
    reads: &[
        "producers",
        "producer_keys",
        "ledger_entries",
        "ledger_subjects",
        "ledger_tiles",
        "ledger_blocks",
        "dlq_items",
        "ledger_policies",
        "key_events",
        "key_event_entries",
    ],
    appends: &[
        "ledger_entries",
        "ledger_subjects",
        "ledger_tiles",
        "ledger_blocks",
        "dlq_items",
        "ledger_policies",
        "key_event_entries",
    ],
    sequences: &["dlq_items_id_seq"],
};

/// The reader: reads what auditors may see, writes nothing.
pub const READER_GRANTS: RoleGrants = RoleGrants {
    role: "ace_reader",
    service: "reader",
    reads: &[
        "producers",
        "producer_keys",
        "ledger_entries",
        "ledger_subjects",
        "ledger_tiles",
        "ledger_blocks",
        "dlq_items",
        "anchor_receipts",
        "ledger_policies",
        "dlq_actions",
        "operator_audit",
        "key_events",
        "key_event_entries",
    ],
    appends: &[],
    sequences: &[],
};

/// The anchor: reads blocks and tiles, appends receipts.
pub const ANCHOR_GRANTS: RoleGrants = RoleGrants {
    role: "ace_anchor",
    service: "anchor",
    reads: &["ledger_blocks", "ledger_tiles", "anchor_receipts"],
    appends: &["anchor_receipts"],
    sequences: &["anchor_receipts_id_seq"],
};

/// The dashboard: reads what it shows, appends DLQ actions and audit rows.
pub const DASHBOARD_GRANTS: RoleGrants = RoleGrants {
    role: "ace_dashboard",
    service: "dashboard",
    reads: &[
        "producers",
        "producer_keys",
        "ledger_entries",
        "ledger_subjects",
        "ledger_blocks",
        "dlq_items",
        "anchor_receipts",
        "ledger_policies",
        "dlq_actions",
        "operator_audit",
        "key_events",
        "key_event_entries",
    ],
    appends: &["dlq_actions", "operator_audit"],
    sequences: &["dlq_actions_id_seq"],
};

/// The four services' roles (ace_owner owns the schema and is not a service's role).
pub const SERVICE_GRANTS: [RoleGrants; 4] = [
    WRITER_GRANTS,
    READER_GRANTS,
    ANCHOR_GRANTS,
    DASHBOARD_GRANTS,
];

/// Every role the ledger uses, the owner first.
pub const ROLES: [&str; 5] = [
    "ace_owner",
    "ace_writer",
    "ace_reader",
    "ace_anchor",
    "ace_dashboard",
];

/// Table privileges that write (or could be turned into writes: REFERENCES lets a role
/// block deletes, TRIGGER lets it run code on others' writes).
pub const WRITE_PRIVILEGES: [&str; 6] = [
    "INSERT",
    "UPDATE",
    "DELETE",
    "TRUNCATE",
    "REFERENCES",
    "TRIGGER",
];

impl RoleGrants {
    /// SELECT on every read table, INSERT on every appended one.
    pub fn required(&self) -> Vec<TablePrivilege> {
        let reads = self.reads.iter().map(|&table| TablePrivilege {
            table,
            privilege: "SELECT",
        });
        let appends = self.appends.iter().map(|&table| TablePrivilege {
            table,
            privilege: "INSERT",
        });
        reads.chain(appends).collect()
    }

    /// Whether the role may hold `privilege` (a table privilege) on `table`.
    pub fn allows(&self, table: &str, privilege: &str) -> bool {
        match privilege {
            "SELECT" => self.reads.contains(&table),
            "INSERT" => self.appends.contains(&table),
            _ => false,
        }
    }
}

/// The start check of a service: the connected role (whatever its name) holds everything
/// in `grants`, and no other write on any table or sequence of the schema (enumerated from
/// the catalog, so tables added later are covered without touching this list), no CREATE
/// on the schema or database, no membership of ace_owner, and is not a superuser. Extra
/// SELECTs are not refused: they write nothing. Returns the role's name; the error names
/// the role and every privilege that is wrong.
pub async fn assert_role_grants(client: &Client, grants: &RoleGrants) -> Result<String, DbError> {
    // One read-only transaction: through a transaction-pooling pgbouncer, the checks'
    // prepared statements then stay on the one server connection that prepared them.
    client
        .batch_execute("BEGIN READ ONLY")
        .await
        .map_err(DbError::query("starting the role's privilege check"))?;
    let checked = check_role_grants(client, grants).await;
    let _ = client.batch_execute("ROLLBACK").await;
    checked
}

async fn check_role_grants(client: &Client, grants: &RoleGrants) -> Result<String, DbError> {
    let role = assert_privileges(client, &grants.required(), &[]).await?;
    for seq in grants.sequences {
        let has: bool = client
            .query_one(
                "SELECT has_sequence_privilege(current_user, $1, 'USAGE')",
                &[seq],
            )
            .await
            .map_err(|e| DbError::Privilege {
                role: role.clone(),
                problem: format!(
                    "cannot be checked for USAGE on sequence {seq}: {} (has `acectl db migrate` run?)",
                    describe_pg(&e)
                ),
            })?
            .get(0);
        if !has {
            return Err(DbError::Privilege {
                role,
                problem: format!("lacks USAGE on sequence {seq}, which it needs (re-run `acectl db migrate` to restore the grants)"),
            });
        }
    }
    let extra = excess_privileges(client, grants).await?;
    if extra.is_empty() {
        return Ok(role);
    }
    let revokes: Vec<String> = extra.iter().map(|x| x.revoke(&role)).collect();
    let named: Vec<String> = extra.iter().map(|x| x.to_string()).collect();
    Err(DbError::Privilege {
        problem: format!(
            "holds {}, which it must not have as the {}'s role: revoke {} ({})",
            named.join(", "),
            grants.service,
            if extra.len() == 1 { "it" } else { "them" },
            revokes.join("; ")
        ),
        role,
    })
}

/// A privilege a role holds beyond its [`RoleGrants`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Excess {
    Table { table: String, privilege: String },
    Sequence { sequence: String, privilege: String },
    CreateOnSchema(String),
    CreateOnDatabase(String),
    MemberOf(String),
}

impl std::fmt::Display for Excess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Excess::Table { table, privilege } => write!(f, "{privilege} on {table}"),
            Excess::Sequence {
                sequence,
                privilege,
            } => write!(f, "{privilege} on sequence {sequence}"),
            Excess::CreateOnSchema(s) => write!(f, "CREATE on schema {s}"),
            Excess::CreateOnDatabase(d) => write!(f, "CREATE on database {d}"),
            Excess::MemberOf(r) => write!(f, "membership of {r}"),
        }
    }
}

impl Excess {
    /// The statement that takes it away from `role`.
    pub fn revoke(&self, role: &str) -> String {
        match self {
            Excess::Table { table, privilege } => {
                format!("REVOKE {privilege} ON {table} FROM {role}")
            }
            Excess::Sequence {
                sequence,
                privilege,
            } => format!("REVOKE {privilege} ON SEQUENCE {sequence} FROM {role}"),
            Excess::CreateOnSchema(s) => format!("REVOKE CREATE ON SCHEMA {s} FROM {role}"),
            Excess::CreateOnDatabase(d) => format!("REVOKE CREATE ON DATABASE {d} FROM {role}"),
            Excess::MemberOf(r) => format!("REVOKE {r} FROM {role}"),
        }
    }
}

/// Every write privilege the connected role holds beyond `grants`, in the current schema.
pub async fn excess_privileges(
    client: &Client,
    grants: &RoleGrants,
) -> Result<Vec<Excess>, DbError> {
    let appends: Vec<&str> = grants.appends.to_vec();
    let sequences: Vec<&str> = grants.sequences.to_vec();
    let privs: Vec<&str> = WRITE_PRIVILEGES.to_vec();
    let rows = client
        .query(
            "SELECT 't', c.relname::text, p.priv FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               CROSS JOIN unnest($3::text[]) AS p(priv) \
              WHERE n.nspname = current_schema() AND c.relkind IN ('r', 'p', 'v', 'm', 'f') \
                AND has_table_privilege(current_user, c.oid, p.priv) \
                AND NOT (p.priv = 'INSERT' AND c.relname = ANY($1::text[])) \
             UNION ALL \
             SELECT 's', c.relname::text, p.priv FROM pg_class c \
               JOIN pg_namespace n ON n.oid = c.relnamespace \
               CROSS JOIN unnest(ARRAY['USAGE', 'UPDATE']) AS p(priv) \
              WHERE n.nspname = current_schema() AND c.relkind = 'S' \
                AND has_sequence_privilege(current_user, c.oid, p.priv) \
                AND NOT (p.priv = 'USAGE' AND c.relname = ANY($2::text[])) \
             UNION ALL \
             SELECT 'n', current_schema()::text, 'CREATE' \
              WHERE has_schema_privilege(current_user, current_schema(), 'CREATE') \
             UNION ALL \
             SELECT 'd', current_database()::text, 'CREATE' \
              WHERE has_database_privilege(current_user, current_database(), 'CREATE') \
             UNION ALL \
             SELECT 'm', r.rolname::text, 'MEMBER' FROM pg_roles r \
              WHERE r.rolname = 'ace_owner' AND r.rolname <> current_user \
                AND pg_has_role(current_user, r.oid, 'MEMBER') \
             ORDER BY 1, 2, 3",
            &[&appends, &sequences, &privs],
        )
        .await
        .map_err(DbError::query(
            "listing the role's privileges in the catalog",
        ))?;
    Ok(rows
        .iter()
        .map(|r| {
            let (kind, name, privilege): (String, String, String) = (r.get(0), r.get(1), r.get(2));
            match kind.as_str() {
                "t" => Excess::Table {
                    table: name,
                    privilege,
                },
                "s" => Excess::Sequence {
                    sequence: name,
                    privilege,
                },
                "n" => Excess::CreateOnSchema(name),
                "d" => Excess::CreateOnDatabase(name),
                _ => Excess::MemberOf(name),
            }
        })
        .collect())
}

/// A 32-byte hash column, or [`DbError::Corrupt`] naming `what`.
pub fn stored_hash(v: &[u8], what: &str) -> Result<Hash, DbError> {
    v.try_into()
        .map_err(|_| DbError::Corrupt(format!("{what} is {} bytes, not 32", v.len())))
}

/// A non-negative bigint column, or [`DbError::Corrupt`] naming `what`.
pub fn stored_u64(v: i64, what: &str) -> Result<u64, DbError> {
    u64::try_from(v).map_err(|_| DbError::Corrupt(format!("{what} is negative ({v})")))
}

/// The latest block header, if any block exists, checked against its stored block hash.
pub async fn latest_block<C: GenericClient>(c: &C) -> Result<Option<BlockHeader>, DbError> {
    let row = c
        .query_opt(
            "SELECT height, first_index, tree_size, root_hash, prev_block_hash, sealed_at, block_hash \
             FROM ledger_blocks ORDER BY height DESC LIMIT 1",
            &[],
        )
        .await
        .map_err(DbError::query("reading the latest block"))?;
    let Some(r) = row else { return Ok(None) };
    let height = stored_u64(r.get(0), "ledger_blocks.height")?;
    let header = BlockHeader {
        height,
        first_index: stored_u64(r.get(1), "ledger_blocks.first_index")?,
        tree_size: stored_u64(r.get(2), "ledger_blocks.tree_size")?,
        root_hash: stored_hash(r.get(3), "ledger_blocks.root_hash")?,
        prev_block_hash: stored_hash(r.get(4), "ledger_blocks.prev_block_hash")?,
        sealed_at: r.get(5),
    };
    let stored = stored_hash(r.get(6), "ledger_blocks.block_hash")?;
    if header.block_hash() != stored {
        return Err(DbError::Corrupt(format!(
            "block {height}: stored block_hash {} does not match its header ({})",
            hex::encode(stored),
            hex::encode(header.block_hash())
        )));
    }
    Ok(Some(header))
}

/// The right edge of the tree at `tree_size`, from the stored partial tiles (for each, the
/// narrowest row at least as wide as needed, truncated).
pub async fn load_right_edge<C: GenericClient>(
    c: &C,
    tree_size: u64,
) -> Result<TileAppender, DbError> {
    let mut set = TileSet::new();
    for id in tiles::partial_tile_ids(tree_size) {
        let row = c
            .query_opt(
                "SELECT hashes FROM ledger_tiles WHERE level = $1 AND idx = $2 AND width >= $3 \
                 ORDER BY width LIMIT 1",
                &[&i16::from(id.level), &(id.index as i64), &(id.width as i16)],
            )
            .await
            .map_err(DbError::query("reading a partial tile"))?;
        let Some(r) = row else {
            return Err(DbError::Corrupt(format!(
                "tile {} is missing for tree size {tree_size}",
                id.path()
            )));
        };
        let bytes: Vec<u8> = r.get(0);
        let hashes = tiles::tile_from_bytes(&bytes)
            .map_err(|e| DbError::Corrupt(format!("tile {}: {e}", id.path())))?;
        set.insert(id, hashes)
            .map_err(|e| DbError::Corrupt(format!("tile {}: {e}", id.path())))?;
    }
    TileAppender::from_partial_tiles(tree_size, &set).map_err(|e| {
        DbError::Corrupt(format!(
            "rebuilding the tree's right edge at size {tree_size}: {e}"
        ))
    })
}

/// Tiles by id, each the narrowest stored row at least as wide as asked. Parameters: levels
/// (`smallint[]`), indexes (`bigint[]`), widths (`smallint[]`), from [`tile_params`];
/// rows decode with [`tile_rows`].
pub const TILES_SQL: &str =
    "SELECT DISTINCT ON (t.level, t.idx) t.level, t.idx, t.width, t.hashes \
     FROM unnest($1::smallint[], $2::bigint[], $3::smallint[]) AS w(level, idx, width) \
     JOIN ledger_tiles t ON t.level = w.level AND t.idx = w.idx AND t.width >= w.width \
     ORDER BY t.level, t.idx, t.width";

/// [`TILES_SQL`]'s parameters for `ids`.
pub fn tile_params(ids: &[tiles::TileId]) -> (Vec<i16>, Vec<i64>, Vec<i16>) {
    (
        ids.iter().map(|t| i16::from(t.level)).collect(),
        ids.iter()
            .map(|t| i64::try_from(t.index).unwrap_or(i64::MAX))
            .collect(),
        ids.iter().map(|t| t.width as i16).collect(),
    )
}

/// [`TILES_SQL`]'s rows as (stored tile id, hash bytes).
pub fn tile_rows(rows: &[tokio_postgres::Row]) -> Result<Vec<(tiles::TileId, Vec<u8>)>, DbError> {
    rows.iter()
        .map(|r| {
            let (level, idx, width): (i16, i64, i16) = (r.get(0), r.get(1), r.get(2));
            let id = u8::try_from(level)
                .ok()
                .zip(u64::try_from(idx).ok())
                .zip(u16::try_from(width).ok())
                .and_then(|((l, i), w)| tiles::TileId::new(l, i, w).ok())
                .ok_or_else(|| {
                    DbError::Corrupt(format!(
                        "ledger_tiles row (level {level}, idx {idx}, width {width}) is not a valid tile"
                    ))
                })?;
            Ok((id, r.get(3)))
        })
        .collect()
}

/// The tiles holding `nodes` in the tree of `tree_size`, read in one query; partial rows
/// wider than needed are cut to the width the tree has.
pub async fn load_tile_set<C: GenericClient>(
    c: &C,
    nodes: &[crate::merkle::NodeId],
    tree_size: u64,
) -> Result<TileSet, DbError> {
    let ids = tiles::tiles_for_nodes(nodes, tree_size)
        .map_err(|e| DbError::Corrupt(format!("planning tiles at tree size {tree_size}: {e}")))?;
    let (levels, indexes, widths) = tile_params(&ids);
    let rows = c
        .query(TILES_SQL, &[&levels, &indexes, &widths])
        .await
        .map_err(DbError::query("reading tiles"))?;
    let rows = tile_rows(&rows)?;
    let mut set = TileSet::new();
    for want in ids {
        let Some((got, bytes)) = rows
            .iter()
            .find(|(got, _)| got.level == want.level && got.index == want.index)
        else {
            return Err(DbError::Corrupt(format!(
                "tile {} is not stored, though the tree of size {tree_size} needs it",
                want.path()
            )));
        };
        let mut hashes = tiles::tile_from_bytes(bytes)
            .map_err(|e| DbError::Corrupt(format!("tile {}: {e}", got.path())))?;
        hashes.truncate(usize::from(want.width));
        set.insert(want, hashes)
            .map_err(|e| DbError::Corrupt(format!("tile {}: {e}", want.path())))?;
    }
    Ok(set)
}

/// The latest block and the tree's right edge, checked against each other: what anything
/// that appends to the log starts from.
pub async fn load_log_head<C: GenericClient>(
    c: &C,
) -> Result<Option<(BlockHeader, TileAppender)>, DbError> {
    let Some(last_block) = latest_block(c).await? else {
        return Ok(None);
    };
    let tiles = load_right_edge(c, last_block.tree_size).await?;
    if tiles.root() != last_block.root_hash {
        return Err(DbError::Corrupt(format!(
            "tiles at tree size {} give root {}, block {} says {}",
            last_block.tree_size,
            hex::encode(tiles.root()),
            last_block.height,
            hex::encode(last_block.root_hash)
        )));
    }
    Ok(Some((last_block, tiles)))
}

/// Registered producers among `ids`, with their status.
pub async fn load_producers<C: GenericClient>(
    client: &C,
    ids: &[String],
) -> Result<HashMap<String, ProducerStatus>, DbError> {
    let rows = client
        .query(
            "SELECT producer, status FROM producers WHERE producer = ANY($1)",
            &[&ids],
        )
        .await
        .map_err(DbError::query("reading producers"))?;
    Ok(rows
        .iter()
        .map(|r| {
            let status: &str = r.get(1);
            let s = if status == "suspended" {
                ProducerStatus::Suspended
            } else {
                ProducerStatus::Active
            };
            (r.get::<_, String>(0), s)
        })
        .collect())
}

/// The keys lock of migration V9, in the two-integer advisory key space: every registry
/// change holds it exclusively (by trigger) until it commits.
pub const KEYS_LOCK: (i32, i32) = (1_094_927_665, 1);

/// The time a registry snapshot is taken at, and the last key event it includes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegistryClock {
    /// Database clock, unix ms (floor).
    pub now_ms: i64,
    pub last_event: u64,
}

/// Inside a transaction: take the keys lock shared, then read the database clock and the
/// last key event. Every registry change either committed before (and the transaction's
/// later statements see it) or commits after the transaction ends, stamped later than
/// `now_ms`: the registry read in this transaction is the registry at `now_ms`.
pub async fn registry_clock(
    tx: &tokio_postgres::Transaction<'_>,
) -> Result<RegistryClock, DbError> {
    tx.execute(
        "SELECT pg_advisory_xact_lock_shared($1, $2)",
        &[&KEYS_LOCK.0, &KEYS_LOCK.1],
    )
    .await
    .map_err(DbError::query("taking the keys lock (shared)"))?;
    let row = tx
        .query_one(
            "SELECT floor(extract(epoch FROM clock_timestamp()) * 1000)::bigint, \
                    coalesce((SELECT max(id) FROM key_events), 0)",
            &[],
        )
        .await
        .map_err(DbError::query(
            "reading the database clock and the last key event",
        ))?;
    Ok(RegistryClock {
        now_ms: row.get(0),
        last_event: stored_u64(row.get(1), "key_events.id")?,
    })
}

/// Registered keys among `keyids` (of any producer). Times are floored to the millisecond,
/// as the key events (migration V9, `ace_ms`) and the reader floor them, so that the writer
/// and an auditor compare the same numbers.
pub async fn load_keys<C: GenericClient>(
    client: &C,
    keyids: &[String],
) -> Result<HashMap<String, RegisteredKey>, DbError> {
    let rows = client
        .query(
            "SELECT keyid, producer, public_key, \
                    floor(extract(epoch FROM valid_from) * 1000)::bigint, \
                    floor(extract(epoch FROM valid_until) * 1000)::bigint, \
                    floor(extract(epoch FROM revoked_at) * 1000)::bigint \
             FROM producer_keys WHERE keyid = ANY($1)",
            &[&keyids],
        )
        .await
        .map_err(DbError::query("reading producer keys"))?;
    let mut out = HashMap::with_capacity(rows.len());
    for r in rows {
        let keyid: String = r.get(0);
        let pk: Vec<u8> = r.get(2);
        let bytes: [u8; 32] = pk.as_slice().try_into().map_err(|_| {
            DbError::Corrupt(format!("producer_keys {keyid}: public key is not 32 bytes"))
        })?;
        let public_key = ed25519_dalek::VerifyingKey::from_bytes(&bytes)
            .map_err(|e| DbError::Corrupt(format!("producer_keys {keyid}: public key: {e}")))?;
        let id = KeyId::parse(&keyid)
            .map_err(|e| DbError::Corrupt(format!("producer_keys {keyid}: {e}")))?;
        out.insert(
            keyid,
            RegisteredKey {
                keyid: id,
                producer: r.get(1),
                public_key,
                valid_from_ms: r.get(3),
                valid_until_ms: r.get(4),
                revoked_at_ms: r.get(5),
            },
        );
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn described_urls_never_show_the_password() {
        let d = describe_url("postgres://ace_writer:s3cret@db.internal:6432/ace");
        assert_eq!(d, "db.internal:6432/ace as ace_writer");
        assert!(!d.contains("s3cret"));
        assert_eq!(describe_url("not a url at all ::"), "<unparseable URL>");
    }

    #[test]
    fn pools_are_lazy_and_bad_urls_are_refused() {
        // Building a pool opens no connection, so an unreachable host is fine here.
        assert!(pool("postgres://ace_reader@127.0.0.1:1/ace", 4).is_ok());
        let err = pool("postgres://x:pw@h:notaport/db", 4)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("bad database URL") && !err.contains("pw"),
            "{err}"
        );
    }
}
