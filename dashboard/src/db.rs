//! The dashboard's Postgres pool. What its role may do is core's `DASHBOARD_GRANTS`,
//! checked at start by `ace_core::db::assert_role_grants`.

use ace_core::db::DbError;
use deadpool_postgres::{Object, Pool};

use crate::error::DashError;

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
