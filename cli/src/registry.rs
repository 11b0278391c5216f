//! Producer and key changes: `acectl producer add|suspend|resume`, `acectl key
//! add|rotate|revoke`. Each is one transaction on the registry; the database records it as
//! a key event (migration V9), stamped by its clock, with the actor set here, and the
//! writer appends the event to the log. Every command is idempotent: run again, it says
//! what is already so and changes nothing.

use std::path::PathBuf;
use std::time::Duration;

use ace_core::ids::{KeyId, ProducerId};
use anyhow::{bail, Context, Result};
use chrono::{DateTime, Utc};
use ed25519_dalek::VerifyingKey;
use tokio_postgres::{Client, Transaction};

/// Who the key events name: `ACE_ACTOR`, else the login name, else "acectl".
pub fn actor() -> String {
    std::env::var("ACE_ACTOR")
        .or_else(|_| std::env::var("USER"))
        .ok()
        .filter(|a| !a.trim().is_empty())
        .unwrap_or_else(|| "acectl".to_owned())
}

async fn begin(c: &mut Client) -> Result<Transaction<'_>> {
    let tx = c.transaction().await.context("starting the transaction")?;
    tx.execute("SELECT set_config('ace.actor', $1, true)", &[&actor()])
        .await
        .context("naming the actor of the change")?;
    Ok(tx)
}

/// Registers a producer. Returns false when it already was.
pub async fn add_producer(c: &mut Client, id: &ProducerId) -> Result<bool> {
    let tx = begin(c).await?;
    let n = tx
        .execute(
            "INSERT INTO producers (producer) VALUES ($1) ON CONFLICT DO NOTHING",
            &[&id.as_str()],
        )
        .await
        .context("inserting into producers")?;
    tx.commit().await.context("committing")?;
    Ok(n == 1)
}

/// What a key registration did.
#[derive(Debug, PartialEq, Eq)]
pub enum KeyAdded {
    Added(KeyId),
    /// The same key was already registered to this producer.
    Already(KeyId),
}

async fn insert_key(
    tx: &Transaction<'_>,
    producer: &ProducerId,
    vk: &VerifyingKey,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<KeyAdded> {
    let keyid = KeyId::from_public_key(vk);
    if let Some(r) = tx
        .query_opt(
            "SELECT producer FROM producer_keys WHERE keyid = $1",
            &[&keyid.as_str()],
        )
        .await
        .context("looking up the key")?
    {
        let owner: String = r.get(0);
        if owner != producer.as_str() {
            bail!("key {keyid} is registered to producer {owner}, not {producer}");
        }
        return Ok(KeyAdded::Already(keyid));
    }
    let known = tx
        .query_opt(
            "SELECT 1 FROM producers WHERE producer = $1",
            &[&producer.as_str()],
        )
        .await
        .context("looking up the producer")?;
    if known.is_none() {
        bail!("producer {producer} is not registered: run `acectl producer add {producer}` first");
    }
    let ms = |t: Option<DateTime<Utc>>| t.map(|t| t.timestamp_millis() as f64);
    tx.execute(
        "INSERT INTO producer_keys (keyid, producer, public_key, valid_from, valid_until) \
         VALUES ($1, $2, $3, coalesce(to_timestamp($4::float8 / 1000), now()), to_timestamp($5::float8 / 1000))",
        &[
            &keyid.as_str(),
            &producer.as_str(),
            &vk.as_bytes().as_slice(),
            &ms(from),
            &ms(until),
        ],
    )
    .await
    .with_context(|| format!("registering key {keyid} for producer {producer}"))?;
    Ok(KeyAdded::Added(keyid))
}

/// Registers `vk` for `producer`, valid from `from` (default now) until `until` (default
/// open-ended).
pub async fn add_key(
    c: &mut Client,
    producer: &ProducerId,
    vk: &VerifyingKey,
    from: Option<DateTime<Utc>>,
    until: Option<DateTime<Utc>>,
) -> Result<KeyAdded> {
    let tx = begin(c).await?;
    let added = insert_key(&tx, producer, vk, from, until).await?;
    tx.commit().await.context("committing")?;
    Ok(added)
}

/// What a rotation did.
#[derive(Debug)]
pub struct Rotation {
    pub new: KeyAdded,
    /// The producer's other keys, each now valid until the end of the overlap.
    pub retiring: Vec<(KeyId, DateTime<Utc>)>,
}

/// Registers `vk` for `producer` from now and ends every other usable key of the producer
/// at now + `overlap`, in one transaction: during the overlap both sign, after it only the
/// new one. Keys already ending sooner keep their end.
pub async fn rotate_key(
    c: &mut Client,
    producer: &ProducerId,
    vk: &VerifyingKey,
    overlap: Duration,
) -> Result<Rotation> {
    let tx = begin(c).await?;
    let new = insert_key(&tx, producer, vk, None, None).await?;
    let new_id = match &new {
        KeyAdded::Added(k) | KeyAdded::Already(k) => k.clone(),
    };
    let overlap_ms = i64::try_from(overlap.as_millis()).context("--overlap is too long")?;
    let rows = tx
        .query(
            "UPDATE producer_keys SET valid_until = clock_timestamp() + make_interval(secs => $3::float8 / 1000) \
             WHERE producer = $1 AND keyid <> $2 AND revoked_at IS NULL \
               AND (valid_until IS NULL OR valid_until > clock_timestamp() + make_interval(secs => $3::float8 / 1000)) \
             RETURNING keyid, valid_until",
            &[&producer.as_str(), &new_id.as_str(), &(overlap_ms as f64)],
        )
        .await
        .context("ending the producer's other keys after the overlap")?;
    let mut retiring = Vec::new();
    for r in rows {
        let keyid: String = r.get(0);
        let until: std::time::SystemTime = r.get(1);
        retiring.push((
            KeyId::parse(&keyid).with_context(|| format!("stored keyid {keyid:?}"))?,
            DateTime::<Utc>::from(until),
        ));
    }
    tx.commit().await.context("committing the rotation")?;
    Ok(Rotation { new, retiring })
}

/// Revokes a key from now on. Returns its revocation time, or None when it already was
/// revoked (with that time).
pub async fn revoke_key(
    c: &mut Client,
    keyid: &KeyId,
    reason: &str,
) -> Result<(bool, DateTime<Utc>)> {
    if reason.trim().is_empty() {
        bail!("--reason must say why the key is revoked");
    }
    let tx = begin(c).await?;
    let row = tx
        .query_opt(
            "SELECT revoked_at FROM producer_keys WHERE keyid = $1 FOR UPDATE",
            &[&keyid.as_str()],
        )
        .await
        .context("looking up the key")?;
    let Some(row) = row else {
        bail!("key {keyid} is not registered");
    };
    if let Some(at) = row.get::<_, Option<std::time::SystemTime>>(0) {
        return Ok((false, at.into()));
    }
    // The database stamps the revocation with its own clock (migration V9).
    let at: std::time::SystemTime = tx
        .query_one(
            "UPDATE producer_keys SET revoked_at = clock_timestamp(), revoke_reason = $2 \
             WHERE keyid = $1 RETURNING revoked_at",
            &[&keyid.as_str(), &reason],
        )
        .await
        .context("revoking the key")?
        .get(0);
    tx.commit().await.context("committing the revocation")?;
    Ok((true, at.into()))
}

/// Suspends (or resumes) a producer. Returns false when it already was in that state.
pub async fn set_suspended(
    c: &mut Client,
    id: &ProducerId,
    suspended: bool,
    reason: &str,
) -> Result<bool> {
    if suspended && reason.trim().is_empty() {
        bail!("--reason must say why the producer is suspended");
    }
    let tx = begin(c).await?;
    let (to, from) = if suspended {
        ("suspended", "active")
    } else {
        ("active", "suspended")
    };
    let n = tx
        .execute(
            "UPDATE producers SET status = $2, status_reason = $4 WHERE producer = $1 AND status = $3",
            &[&id.as_str(), &to, &from, &reason],
        )
        .await
        .with_context(|| format!("setting producer {id} {to}"))?;
    if n == 0 {
        let known = tx
            .query_opt(
                "SELECT status FROM producers WHERE producer = $1",
                &[&id.as_str()],
            )
            .await
            .context("looking up the producer")?;
        if known.is_none() {
            bail!("producer {id} is not registered");
        }
    }
    tx.commit().await.context("committing")?;
    Ok(n == 1)
}

/// Where nats-server's authorization file is, to re-render it after a change that moves
/// a producer's NATS rights.
#[derive(clap::Args, Debug, Clone)]
pub struct NatsSync {
    /// Re-render nats-server's authorization file here after the change
    /// (as `acectl nats render --out`).
    #[arg(long = "nats-auth-out", value_name = "FILE")]
    pub out: Option<PathBuf>,
    /// SIGHUP this nats-server after rendering.
    #[arg(long, requires = "out")]
    pub reload_pid: Option<u32>,
    #[arg(long = "nats-prefix", env = "ACE_PREFIX", default_value = "ace")]
    pub prefix: String,
}

impl NatsSync {
    /// Renders and reloads when asked to; returns what it did.
    pub async fn apply(&self, database_url: &str) -> Result<Option<String>> {
        match &self.out {
            None => Ok(None),
            Some(out) => {
                crate::nats_users::render(database_url, &self.prefix, out, self.reload_pid)
                    .await
                    .map(Some)
            }
        }
    }
}

/// Parses `90s`, `15m`, `24h`, `7d` or plain seconds.
pub fn parse_duration(text: &str) -> Result<Duration> {
    let t = text.trim();
    let (num, unit) = match t.find(|c: char| !c.is_ascii_digit()) {
        Some(i) => t.split_at(i),
        None => (t, "s"),
    };
    let n: u64 = num
        .parse()
        .with_context(|| format!("{text:?} is not a duration like 90s, 15m, 24h or 7d"))?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3_600,
        "d" => 86_400,
        _ => bail!("{text:?}: the unit must be s, m, h or d"),
    };
    Ok(Duration::from_secs(n.saturating_mul(secs)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90").unwrap(), Duration::from_secs(90));
        assert_eq!(parse_duration("15m").unwrap(), Duration::from_secs(900));
        assert_eq!(parse_duration("2d").unwrap(), Duration::from_secs(172_800));
        assert!(parse_duration("1w").is_err());
        assert!(parse_duration("h").is_err());
    }
}
