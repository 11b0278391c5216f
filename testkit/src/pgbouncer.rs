//! A private pgbouncer on a free port in front of a Postgres, for the connection-pooling
//! tests. Its configuration follows pgbouncer/pgbouncer.ini (the sample operators start
//! from), with trust auth against a test server. Stopped by PID when dropped.

use std::io::Read;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const BIN: &str = "/usr/sbin/pgbouncer";

/// Why a pgbouncer could not be started.
#[derive(Debug, thiserror::Error)]
pub enum PgBouncerError {
    #[error("pgbouncer ({BIN}) is needed (scripts/services.sh installs it): {0}")]
    Spawn(std::io::Error),
    #[error("writing pgbouncer's files in {dir}: {source}")]
    Files { dir: String, source: std::io::Error },
    #[error("pgbouncer on port {port} did not start: {log}")]
    NotListening { port: u16, log: String },
}

pub struct PgBouncer {
    pub port: u16,
    pub dir: PathBuf,
    child: Child,
}

impl PgBouncer {
    /// A pgbouncer on a free loopback port, in `pool_mode` (`session` or `transaction`),
    /// forwarding every database to the Postgres at `pg_host:pg_port` for `users`.
    ///
    /// # Panics
    /// When it cannot start: a test that needs it must fail, naming why.
    pub fn start(pg_host: &str, pg_port: u16, pool_mode: &str, users: &[&str]) -> PgBouncer {
        match Self::try_start(pg_host, pg_port, pool_mode, users) {
            Ok(b) => b,
            Err(e) => panic!("{e}"),
        }
    }

    /// As [`PgBouncer::start`].
    ///
    /// # Errors
    /// [`PgBouncerError`] naming the binary, the files or pgbouncer's own words.
    pub fn try_start(
        pg_host: &str,
        pg_port: u16,
        pool_mode: &str,
        users: &[&str],
    ) -> Result<PgBouncer, PgBouncerError> {
        let dir = std::env::temp_dir().join(crate::unique("ace-pgbouncer-"));
        let files = |source| PgBouncerError::Files {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&dir).map_err(files)?;
        let port = crate::free_port();
        // trust: pgbouncer checks only that the user is listed; Postgres authenticates.
        let userlist: String = users.iter().map(|u| format!("\"{u}\" \"\"\n")).collect();
        std::fs::write(dir.join("userlist.txt"), userlist).map_err(files)?;
        let ini = format!(
            "[databases]\n\
             * = host={pg_host} port={pg_port}\n\
             [pgbouncer]\n\
             listen_addr = 127.0.0.1\n\
             listen_port = {port}\n\
             unix_socket_dir =\n\
             auth_type = trust\n\
             auth_file = {dir}/userlist.txt\n\
             pool_mode = {pool_mode}\n\
             max_client_conn = 200\n\
             default_pool_size = 4\n\
             ignore_startup_parameters = extra_float_digits,options\n\
             server_reset_query = DISCARD ALL\n\
             server_reset_query_always = 0\n",
            dir = dir.display()
        );
        std::fs::write(dir.join("pgbouncer.ini"), ini).map_err(files)?;
        let log = dir.join("pgbouncer.log");
        let log_file = std::fs::File::create(&log).map_err(files)?;
        let err_file = log_file.try_clone().map_err(files)?;
        // pgbouncer will not run as root: -u drops to postgres once the files are read.
        let mut cmd = Command::new(BIN);
        cmd.arg(dir.join("pgbouncer.ini"))
            .stdin(Stdio::null())
            .stdout(Stdio::from(log_file))
            .stderr(Stdio::from(err_file));
        if is_root() {
            cmd.args(["-u", "postgres"]);
        }
        let child = cmd.spawn().map_err(PgBouncerError::Spawn)?;
        let mut b = PgBouncer { port, dir, child };
        // Ready when it accepts connections; an exit (a bad setting, the port taken) ends
        // the wait at once, with its log.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                return Ok(b);
            }
            let exited = matches!(b.child.try_wait(), Ok(Some(_)));
            if exited || Instant::now() > deadline {
                let mut text = String::new();
                let _ = std::fs::File::open(&log).and_then(|mut f| f.read_to_string(&mut text));
                return Err(PgBouncerError::NotListening { port, log: text });
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The DSN of `db` as `user` through this pgbouncer.
    pub fn url(&self, user: &str, db: &str) -> String {
        format!("postgres://{user}@127.0.0.1:{}/{db}", self.port)
    }

    /// pgbouncer's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("pgbouncer.log")).unwrap_or_default()
    }
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("Uid:"))
                .map(|l| l.split_whitespace().nth(1) == Some("0"))
        })
        .unwrap_or(false)
}

impl Drop for PgBouncer {
    fn drop(&mut self) {
        // Our own child, by PID.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
