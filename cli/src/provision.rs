//! `acectl db provision`: the five Postgres roles with their passwords (or certificate
//! auth), connection limits and attributes, then the migrations (which hold the grants).
//! Idempotent: what is already right is left alone, and said to be.
//!
//! Passwords come only from files; the SCRAM-SHA-256 verifier is computed here, so the
//! plaintext never reaches the server (nor its statement log). Nothing printed or logged
//! here contains a password or a verifier.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use ace_core::config::Secret;
use ace_core::db::{self, ROLES};
use anyhow::{bail, Context, Result};
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

/// Default connection limits, per role. Each service's own use plus headroom: the writer
/// holds two connections per instance (leader or standby), the reader's pool is 16 per
/// instance, the dashboard's 8 plus a listener, the anchor one per sink plus two.
pub const DEFAULT_LIMITS: [(&str, i32); 5] = [
    ("ace_owner", 5),
    ("ace_writer", 10),
    ("ace_reader", 40),
    ("ace_anchor", 10),
    ("ace_dashboard", 20),
];

#[derive(clap::Args, Clone)]
#[command(group(clap::ArgGroup::new("auth").required(true).args(["password_dir", "cert_auth"])))]
#[command(group(clap::ArgGroup::new("dsn").required(true).args(["database_url", "database_url_file"])))]
pub struct ProvisionArgs {
    /// DSN of a superuser or a CREATEROLE role (from the environment, not the command line,
    /// when it holds a password).
    #[arg(long, env = "ACE_DATABASE_URL", hide_env_values = true)]
    database_url: Option<Secret>,
    /// File holding that DSN.
    #[arg(long, env = "ACE_DATABASE_URL_FILE")]
    database_url_file: Option<PathBuf>,
    /// Directory holding `<role>.password` for each of the five roles (not world-readable).
    #[arg(long)]
    password_dir: Option<PathBuf>,
    /// No passwords: the roles log in with client certificates (pg_hba `hostssl … cert`,
    /// docs/operator.md). Any password a role has is removed.
    #[arg(long)]
    cert_auth: bool,
    /// CONNECTION LIMIT of ace_owner (-1: none).
    #[arg(long, default_value_t = DEFAULT_LIMITS[0].1, allow_negative_numbers = true)]
    owner_connections: i32,
    /// CONNECTION LIMIT of ace_writer.
    #[arg(long, default_value_t = DEFAULT_LIMITS[1].1, allow_negative_numbers = true)]
    writer_connections: i32,
    /// CONNECTION LIMIT of ace_reader.
    #[arg(long, default_value_t = DEFAULT_LIMITS[2].1, allow_negative_numbers = true)]
    reader_connections: i32,
    /// CONNECTION LIMIT of ace_anchor.
    #[arg(long, default_value_t = DEFAULT_LIMITS[3].1, allow_negative_numbers = true)]
    anchor_connections: i32,
    /// CONNECTION LIMIT of ace_dashboard.
    #[arg(long, default_value_t = DEFAULT_LIMITS[4].1, allow_negative_numbers = true)]
    dashboard_connections: i32,
}

/// How a role authenticates.
enum Auth {
    Password(Secret),
    Certificate,
}

/// A role's password from `dir/<role>.password`: the file must exist, be a regular file
/// nobody else may read, and hold a non-empty password (one trailing newline is dropped).
pub fn read_password_file(dir: &Path, role: &str) -> Result<Secret> {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(format!("{role}.password"));
    let meta = std::fs::metadata(&path)
        .with_context(|| format!("password file {} for {role}", path.display()))?;
    if !meta.is_file() {
        bail!(
            "password file {} for {role} is not a regular file",
            path.display()
        );
    }
    let mode = meta.permissions().mode();
    if mode & 0o007 != 0 {
        bail!(
            "password file {} for {role} is accessible to every user (mode {:o}): chmod 600 it",
            path.display(),
            mode & 0o777
        );
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading password file {} for {role}", path.display()))?;
    let pw = text
        .strip_suffix('\n')
        .map(|s| s.strip_suffix('\r').unwrap_or(s))
        .unwrap_or(&text);
    if pw.is_empty() {
        bail!("password file {} for {role} is empty", path.display());
    }
    if pw.contains('\0') {
        bail!(
            "password file {} for {role} holds a NUL byte, which Postgres cannot store",
            path.display()
        );
    }
    Ok(Secret::new(pw))
}

/// Whether the stored SCRAM-SHA-256 verifier `stored` is one of `password`: recomputed
/// with its salt and iteration count. `None` when this cannot be told here (another
/// format, or a non-ASCII password, whose SASLprep form this does not compute).
pub fn verifier_matches(stored: &str, password: &str) -> Option<bool> {
    if !password.is_ascii() || password.bytes().any(|b| b.is_ascii_control()) {
        return None;
    }
    let rest = stored.strip_prefix("SCRAM-SHA-256$")?;
    let (params, keys) = rest.split_once('$')?;
    let (iterations, salt) = params.split_once(':')?;
    let (stored_key, server_key) = keys.split_once(':')?;
    let iterations: u32 = iterations.parse().ok()?;
    let b64 = base64::engine::general_purpose::STANDARD;
    let salt = b64.decode(salt).ok()?;
    let (want_stored, want_server) = (b64.decode(stored_key).ok()?, b64.decode(server_key).ok()?);
    // RFC 5802: SaltedPassword = Hi(password, salt, i), i.e. PBKDF2-HMAC-SHA-256.
    let mac = |key: &[u8], data: &[u8]| -> Option<Vec<u8>> {
        let mut m = Hmac::<Sha256>::new_from_slice(key).ok()?;
        m.update(data);
        Some(m.finalize().into_bytes().to_vec())
    };
    let mut first = salt.clone();
    first.extend_from_slice(&[0, 0, 0, 1]);
    let mut u = mac(password.as_bytes(), &first)?;
    let mut salted = u.clone();
    for _ in 1..iterations {
        u = mac(password.as_bytes(), &u)?;
        salted.iter_mut().zip(&u).for_each(|(s, x)| *s ^= x);
    }
    let client_key = mac(&salted, b"Client Key")?;
    let server = mac(&salted, b"Server Key")?;
    Some(Sha256::digest(&client_key).as_slice() == want_stored.as_slice() && server == want_server)
}

/// What provisioning did, one line per role and one for the schema.
pub async fn provision(args: &ProvisionArgs) -> Result<Vec<String>> {
    let url = match (&args.database_url, &args.database_url_file) {
        (Some(u), None) => u.clone(),
        (None, Some(path)) => Secret::new(
            std::fs::read_to_string(path)
                .with_context(|| format!("reading --database-url-file {}", path.display()))?
                .trim(),
        ),
        _ => bail!("give the admin DSN by ACE_DATABASE_URL or --database-url-file, not both"),
    };
    // Every file first: a bad one stops provisioning before anything changes.
    let mut auth = BTreeMap::new();
    for role in ROLES {
        let a = match (&args.password_dir, args.cert_auth) {
            (Some(dir), false) => Auth::Password(read_password_file(dir, role)?),
            (None, true) => Auth::Certificate,
            _ => bail!("give --password-dir DIR or --cert-auth (one of them)"),
        };
        auth.insert(role, a);
    }
    let limits: BTreeMap<&str, i32> = [
        ("ace_owner", args.owner_connections),
        ("ace_writer", args.writer_connections),
        ("ace_reader", args.reader_connections),
        ("ace_anchor", args.anchor_connections),
        ("ace_dashboard", args.dashboard_connections),
    ]
    .into_iter()
    .collect();
    if let Some((role, n)) = limits.iter().find(|(_, n)| **n < -1) {
        bail!("connection limit of {role} is {n}: give -1 (none) or a count");
    }

    let mut client = db::connect(url.expose()).await?;
    let target = db::describe_url(url.expose());
    let me = client
        .query_one(
            "SELECT current_user::text, rolsuper, rolcreaterole FROM pg_roles WHERE rolname = current_user",
            &[],
        )
        .await
        .with_context(|| format!("reading the connected role at {target}"))?;
    let (admin, superuser, createrole): (String, bool, bool) = (me.get(0), me.get(1), me.get(2));
    if !superuser && !createrole {
        bail!("{admin} at {target} is neither a superuser nor CREATEROLE: provisioning needs one");
    }

    let before = existing_roles(&client).await?;
    if before.len() < ROLES.len() {
        // The one definition of the roles (sql/roles.sql); idempotent.
        client.batch_execute(db::ROLES_SQL).await.map_err(|e| {
            anyhow::anyhow!(
                "creating roles (sql/roles.sql) as {admin} at {target}: {}",
                db::describe_pg(&e)
            )
        })?;
    }

    let mut report = Vec::new();
    for role in ROLES {
        let mut did = Vec::new();
        let mut kept = Vec::new();
        if !before.contains(&role.to_string()) {
            did.push("created".to_string());
        }
        let row = client
            .query_one(
                "SELECT rolcanlogin, rolsuper, rolcreatedb, rolcreaterole, rolreplication, rolbypassrls, rolconnlimit \
                 FROM pg_roles WHERE rolname = $1",
                &[&role],
            )
            .await
            .with_context(|| format!("reading role {role}"))?;
        let attrs = [
            ("LOGIN", row.get::<_, bool>(0), true),
            ("SUPERUSER", row.get(1), false),
            ("CREATEDB", row.get(2), false),
            ("CREATEROLE", row.get(3), false),
            ("REPLICATION", row.get(4), false),
            ("BYPASSRLS", row.get(5), false),
        ];
        for (name, has, want) in attrs {
            if has != want {
                let attr = if want {
                    name.to_string()
                } else {
                    format!("NO{name}")
                };
                alter(&client, role, &attr).await?;
                did.push(attr);
            }
        }
        let limit: i32 = row.get(6);
        let want_limit = limits.get(role).copied().unwrap_or(-1);
        if limit != want_limit {
            alter(&client, role, &format!("CONNECTION LIMIT {want_limit}")).await?;
            did.push(format!("connection limit {want_limit} (was {limit})"));
        } else {
            kept.push(format!("connection limit {limit}"));
        }
        // The stored verifier is readable by superusers only; a CREATEROLE admin cannot
        // compare, so it sets the password each time.
        let stored: Option<Option<String>> = if superuser {
            Some(
                client
                    .query_one(
                        "SELECT rolpassword FROM pg_authid WHERE rolname = $1",
                        &[&role],
                    )
                    .await
                    .with_context(|| format!("reading the password verifier of {role}"))?
                    .get(0),
            )
        } else {
            None
        };
        match auth.get(role) {
            Some(Auth::Password(pw)) => {
                let same = stored
                    .as_ref()
                    .and_then(|s| s.as_deref())
                    .and_then(|s| verifier_matches(s, pw.expose()));
                if same == Some(true) {
                    kept.push("password".into());
                } else {
                    let verifier =
                        postgres_protocol::password::scram_sha_256(pw.expose().as_bytes());
                    // The verifier is base64, digits, '$' and ':' (postgres-protocol says it
                    // needs no escaping); checked anyway, since it goes into the SQL text.
                    if !verifier
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b"$:+/=-".contains(&b))
                    {
                        bail!("the SCRAM verifier computed for {role} has unexpected characters");
                    }
                    alter(&client, role, &format!("PASSWORD '{verifier}'")).await?;
                    did.push(if stored.is_none() {
                        "password set (SCRAM-SHA-256; the stored one cannot be read without superuser)".into()
                    } else {
                        "password set (SCRAM-SHA-256)".into()
                    });
                }
            }
            Some(Auth::Certificate) | None => match stored {
                Some(None) => kept.push("no password (certificate auth)".into()),
                _ => {
                    alter(&client, role, "PASSWORD NULL").await?;
                    did.push("password removed (certificate auth)".into());
                }
            },
        }
        report.push(if did.is_empty() {
            format!("{role}: unchanged ({})", kept.join(", "))
        } else if kept.is_empty() {
            format!("{role}: {}", did.join(", "))
        } else {
            format!("{role}: {}; unchanged: {}", did.join(", "), kept.join(", "))
        });
    }

    let m = db::migrate(&mut client).await?;
    for g in &m.restored_grants {
        report.push(format!("restored grant: {g}"));
    }
    if m.applied.is_empty() {
        report.push("schema and grants: up to date".into());
    } else {
        report.push(format!(
            "schema and grants: applied {}",
            m.applied.join(", ")
        ));
    }
    Ok(report)
}

async fn existing_roles(c: &tokio_postgres::Client) -> Result<Vec<String>> {
    let roles: Vec<&str> = ROLES.to_vec();
    Ok(c.query(
        "SELECT rolname::text FROM pg_roles WHERE rolname = ANY($1)",
        &[&roles],
    )
    .await
    .context("listing the ace_* roles")?
    .iter()
    .map(|r| r.get(0))
    .collect())
}

/// `ALTER ROLE role <what>`; the error names the role and the kind of change, never the
/// statement (it may hold a verifier).
async fn alter(c: &tokio_postgres::Client, role: &str, what: &str) -> Result<()> {
    let kind = if what.starts_with("PASSWORD") {
        "its password"
    } else {
        what
    };
    c.batch_execute(&format!("ALTER ROLE \"{role}\" {what}"))
        .await
        .map_err(|e| anyhow::anyhow!("ALTER ROLE {role} ({kind}): {}", db::describe_pg(&e)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_computed_verifier_matches_its_password_only() {
        let v = postgres_protocol::password::scram_sha_256(b"correct horse");
        assert_eq!(verifier_matches(&v, "correct horse"), Some(true));
        assert_eq!(verifier_matches(&v, "correct horsE"), Some(false));
        assert_eq!(verifier_matches("md5abc", "x"), None);
        assert_eq!(verifier_matches(&v, "pässword"), None);
    }

    #[test]
    fn password_files_must_exist_be_private_and_non_empty() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("ace-pw-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let err = read_password_file(&dir, "ace_writer").unwrap_err();
        assert!(
            format!("{err:#}").contains("ace_writer.password"),
            "{err:#}"
        );
        let f = dir.join("ace_writer.password");
        std::fs::write(&f, "\n").unwrap();
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        let err = read_password_file(&dir, "ace_writer").unwrap_err();
        assert!(err.to_string().contains("is empty"), "{err}");
        std::fs::write(&f, "s3cret pw\n").unwrap();
        assert_eq!(
            read_password_file(&dir, "ace_writer").unwrap().expose(),
            "s3cret pw"
        );
        std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o644)).unwrap();
        let err = read_password_file(&dir, "ace_writer").unwrap_err();
        assert!(
            err.to_string().contains("accessible to every user"),
            "{err}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
