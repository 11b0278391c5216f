//! The dashboard's Postgres pool, and the checks that its role may read what it shows and
//! write nothing but DLQ actions and audit rows.

use ace_core::db::{DbError, TablePrivilege};
use deadpool_postgres::{Object, Pool};

use crate::error::DashError;

/// Tables the dashboard reads.
pub const READS: [&str; 10] = [
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
];

/// Tables it may append to.
pub const APPENDS: [&str; 2] = ["dlq_actions", "operator_audit"];

/// What the role must hold, and what it must not.
pub fn privileges() -> (Vec<TablePrivilege>, Vec<TablePrivilege>) {
    let mut required: Vec<TablePrivilege> = READS
        .iter()
        .map(|&table| TablePrivilege {
            table,
            privilege: "SELECT",
        })
        .collect();
    required.extend(APPENDS.iter().map(|&table| TablePrivilege {
        table,
        privilege: "INSERT",
    }));
    let mut forbidden = Vec::new();
    for table in ace_core::db::ALL_TABLES.iter().chain(APPENDS.iter()) {
        for privilege in [
            "INSERT",
            "UPDATE",
            "DELETE",
            "TRUNCATE",
            "TRIGGER",
            "REFERENCES",
        ] {
            if privilege == "INSERT" && APPENDS.contains(table) {
                continue;
            }
            forbidden.push(TablePrivilege { table, privilege });
        }
    }
    (required, forbidden)
}

/// Creating objects would be a write the table checks do not see.
pub async fn assert_no_ddl(c: &tokio_postgres::Client, role: &str) -> Result<(), DbError> {
    let row = c
        .query_one(
            "SELECT has_schema_privilege(current_user, 'public', 'CREATE'), \
                    has_database_privilege(current_user, current_database(), 'CREATE')",
            &[],
        )
        .await
        .map_err(DbError::query("checking the dashboard's schema privileges"))?;
    let problem = if row.get::<_, bool>(0) {
        format!("holds CREATE on schema public, which it must not have: REVOKE CREATE ON SCHEMA public FROM {role}")
    } else if row.get::<_, bool>(1) {
        format!("holds CREATE on the database, which it must not have: REVOKE CREATE ON DATABASE <db> FROM {role}")
    } else {
        return Ok(());
    };
    Err(DbError::Privilege {
        role: role.to_owned(),
        problem,
    })
}

/// The pool, with the server it points at for error messages (never the password).
#[derive(Clone)]
pub struct Db {
    pub pool: Pool,
    pub target: String,
}

impl Db {
    /// A pooled connection, or an error naming the server.
    pub async fn client(&self) -> Result<Object, DashError> {
        self.pool.get().await.map_err(|e| {
            DashError::Db(DbError::Pool {
                target: self.target.clone(),
                message: e.to_string(),
            })
        })
    }
}
