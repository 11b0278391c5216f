//! A fresh, migrated database per test on the machine's real Postgres, dropped when the
//! test ends (the semantics of the writer's own `tests/it/support.rs::TestDb`).

use ace_core::db::DbError;
use rand::Rng;

/// The test Postgres server (trust auth, superuser `postgres`).
pub const PG_HOST: &str = "127.0.0.1";
pub const PG_PORT: u16 = 5432;

/// `prefix` followed by 12 random hex digits: names that parallel tests never share.
pub fn unique(prefix: &str) -> String {
    let n: u64 = rand::thread_rng().gen();
    format!("{prefix}{:012x}", n & 0xffff_ffff_ffff)
}

/// Why a test database could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TestDbError {
    #[error("the test Postgres at {host}:{port} is needed: {source}")]
    Server {
        host: String,
        port: u16,
        source: DbError,
    },
    #[error("creating database {name}: {source}")]
    Create {
        name: String,
        source: tokio_postgres::Error,
    },
    #[error("migrating database {name}: {source}")]
    Migrate { name: String, source: DbError },
}

/// A fresh database, migrated with [`ace_core::db::migrate`], dropped `WITH (FORCE)` on drop.
pub struct TestDb {
    pub name: String,
    pub host: String,
    pub port: u16,
}

impl TestDb {
    /// A fresh database on the test server.
    ///
    /// # Panics
    /// When the test server is unreachable or the database cannot be made: a test that
    /// needs it must fail, naming the server, never pass silently.
    pub async fn new() -> TestDb {
        match Self::create(PG_HOST, PG_PORT).await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh database on the Postgres at `host:port` (a test's private server).
    ///
    /// # Panics
    /// As [`TestDb::new`].
    pub async fn on(host: &str, port: u16) -> TestDb {
        match Self::create(host, port).await {
            Ok(db) => db,
            Err(e) => panic!("{e}"),
        }
    }

    /// A fresh database on the Postgres at `host:port`.
    ///
    /// # Errors
    /// [`TestDbError`] naming the server or the database.
    pub async fn create(host: &str, port: u16) -> Result<TestDb, TestDbError> {
        let name = unique("ace_t_");
        let admin = format!("postgres://postgres@{host}:{port}/postgres");
        let c = ace_core::db::connect(&admin)
            .await
            .map_err(|source| TestDbError::Server {
                host: host.into(),
                port,
                source,
            })?;
        c.batch_execute(&format!("CREATE DATABASE {name}"))
            .await
            .map_err(|source| TestDbError::Create {
                name: name.clone(),
                source,
            })?;
        // From here on the database exists: dropping `db` on an error removes it again.
        let db = TestDb {
            name,
            host: host.into(),
            port,
        };
        let mut c = db.try_admin().await.map_err(|source| TestDbError::Server {
            host: host.into(),
            port,
            source,
        })?;
        ace_core::db::migrate(&mut c)
            .await
            .map_err(|source| TestDbError::Migrate {
                name: db.name.clone(),
                source,
            })?;
        Ok(db)
    }

    /// DSN of this database as `user` (trust auth, so no password).
    pub fn url(&self, user: &str) -> String {
        format!(
            "postgres://{user}@{}:{}/{}",
            self.host, self.port, self.name
        )
    }

    /// A superuser connection to this database.
    ///
    /// # Panics
    /// When the server is unreachable (see [`TestDb::new`]).
    pub async fn admin(&self) -> tokio_postgres::Client {
        match self.try_admin().await {
            Ok(c) => c,
            Err(e) => panic!("connecting to test database {}: {e}", self.name),
        }
    }

    /// A superuser connection to this database.
    ///
    /// # Errors
    /// [`DbError`] naming the server.
    pub async fn try_admin(&self) -> Result<tokio_postgres::Client, DbError> {
        ace_core::db::connect(&self.url("postgres")).await
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        drop_database(&self.host, self.port, &self.name);
    }
}

/// Drops database `name` on the server at `host:port` (`WITH (FORCE)`), from anywhere,
/// a `Drop` included. Failures are ignored: this is cleanup.
pub fn drop_database(host: &str, port: u16, name: &str) {
    let admin = format!("postgres://postgres@{host}:{port}/postgres");
    let sql = format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)");
    run_detached(async move {
        if let Ok(c) = ace_core::db::connect(&admin).await {
            let _ = c.batch_execute(&sql).await;
        }
    });
}

/// Runs `cleanup` to completion, inside or outside a Tokio runtime (as a `Drop` may be):
/// on a thread of its own, with a runtime of its own.
pub fn run_detached<F>(cleanup: F)
where
    F: std::future::Future<Output = ()> + Send + 'static,
{
    let _ = std::thread::spawn(move || {
        if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            rt.block_on(cleanup);
        }
    })
    .join();
}
