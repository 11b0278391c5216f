//! `acectl nats user add` and `acectl nats render`: NKey users for producers and services,
//! and the nats-server authorization block that gives each only its own subjects
//! (docs/operator.md, "NATS users").

use std::path::Path;

use ace_core::nats::Names;
use ace_core::nats_acl::{render as render_block, Kind, User};
use anyhow::{bail, Context, Result};

/// Creates the user's NKey (seed written once, 0600, to `seed_out`) and records its public
/// key. Idempotent: an existing user is reported, and no new seed is made.
pub async fn add_user(
    database_url: &str,
    name: &str,
    kind: &str,
    seed_out: &Path,
) -> Result<String> {
    if Kind::parse(kind).is_none() {
        bail!("--kind {kind:?}: must be producer, writer, anchor, dashboard or admin");
    }
    let c = ace_core::db::connect(database_url).await?;
    if kind == "producer" {
        let known = c
            .query_opt("SELECT 1 FROM producers WHERE producer = $1", &[&name])
            .await
            .context("looking up the producer")?;
        if known.is_none() {
            bail!("producer {name:?} is not registered: run `acectl producer add {name}` first");
        }
    }
    if let Some(r) = c
        .query_opt(
            "SELECT kind, public_key FROM nats_users WHERE name = $1",
            &[&name],
        )
        .await
        .context("reading nats_users (has `acectl db migrate` run?)")?
    {
        let (k, pk): (String, String) = (r.get(0), r.get(1));
        if k != kind {
            bail!("NATS user {name:?} exists as a {k}, not a {kind}");
        }
        return Ok(format!(
            "NATS user {name} already exists ({k}, {pk}); its seed was written when it was added"
        ));
    }
    let kp = nkeys::KeyPair::new_user();
    let seed = kp
        .seed()
        .map_err(|e| anyhow::anyhow!("making an NKey seed: {e}"))?;
    // The seed first (refusing to overwrite), then the row: a failed insert leaves an
    // unused seed file, never a registered key whose seed is lost.
    crate::keyfile::write_secret(seed_out, &format!("{seed}\n"))?;
    c.execute(
        "INSERT INTO nats_users (name, kind, public_key) VALUES ($1, $2, $3)",
        &[&name, &kind, &kp.public_key()],
    )
    .await
    .context("recording the NATS user")?;
    Ok(format!(
        "NATS user {name} ({kind}) added: {}; seed in {} (0600)",
        kp.public_key(),
        seed_out.display()
    ))
}

/// Renders the authorization block for every user (suspended producers left out) to
/// `out`, atomically, and signals the server at `reload_pid` to reload it.
pub async fn render(
    database_url: &str,
    prefix: &str,
    out: &Path,
    reload_pid: Option<u32>,
) -> Result<String> {
    let names = Names::new(prefix)?;
    let c = ace_core::db::connect(database_url).await?;
    let rows = c
        .query(
            "SELECT u.name, u.kind, u.public_key FROM nats_users u \
             LEFT JOIN producers p ON u.kind = 'producer' AND p.producer = u.name \
             WHERE u.kind <> 'producer' OR p.status = 'active' ORDER BY u.kind, u.name",
            &[],
        )
        .await
        .context("reading nats_users (has `acectl db migrate` run?)")?;
    let mut users = Vec::new();
    for r in &rows {
        let kind: String = r.get(1);
        users.push(User {
            name: r.get(0),
            kind: Kind::parse(&kind).with_context(|| format!("nats_users holds kind {kind:?}"))?,
            public_key: r.get(2),
        });
    }
    let text = render_block(&names, &users);
    let tmp = out.with_extension("tmp");
    std::fs::write(&tmp, &text).with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("replacing {}", out.display()))?;
    let mut said = format!("{} NATS user(s) rendered to {}", users.len(), out.display());
    if let Some(pid) = reload_pid {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .with_context(|| format!("signalling nats-server (pid {pid})"))?
            .success();
        if !ok {
            bail!("nats-server pid {pid} could not be sent SIGHUP: is it running, and ours?");
        }
        said.push_str(&format!("; nats-server (pid {pid}) reloads it"));
    }
    Ok(said)
}
