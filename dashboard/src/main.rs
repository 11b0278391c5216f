//! ace-dashboard: serves the operators' UI until SIGTERM or SIGINT.
//! `ace-dashboard hash-password` reads a password on stdin and prints its argon2 hash for
//! the users file.

use std::io::BufRead;

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    if std::env::args().nth(1).as_deref() == Some("hash-password") {
        let mut line = String::new();
        std::io::stdin()
            .lock()
            .read_line(&mut line)
            .context("reading the password from stdin")?;
        let pw = line.trim_end_matches(['\n', '\r']);
        anyhow::ensure!(!pw.is_empty(), "no password on stdin");
        println!(
            "{}",
            ace_dashboard::auth::hash_password(pw).map_err(anyhow::Error::msg)?
        );
        return Ok(());
    }
    ace_core::service::init_logging();
    let config = ace_dashboard::Config::from_env().context("dashboard configuration")?;
    let stop = ace_core::service::stop_on_signal("finishing requests in flight")
        .context("installing the signal handlers")?;
    ace_dashboard::run(config, stop).await?;
    Ok(())
}
