//! `acectl verify entry` and `acectl verify consistency`: an auditor's checks against a
//! reader that is not trusted. Everything is recomputed here from the bytes served and the
//! ledger's verifier key; the reader's own hashes are only compared, never believed.
//!
//! Exit codes: 0 verified, 1 a check failed (the step is named), 2 the check could not run
//! (bad argument, reader unreachable, state file unreadable).

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use ace_core::checkpoint::{open_checkpoint, Checkpoint, NoteVerifier};
use ace_core::envelope::{envelope_sha256, Envelope};
use ace_core::keys::{verify_envelope, RegisteredKey};
use ace_core::leaf::LeafRecord;
use ace_core::merkle::{leaf_hash, verify_consistency_proof, verify_inclusion_proof, Hash};
use base64::Engine;
use clap::{Args, Subcommand};
use serde_json::Value;

use crate::http::{HttpError, Reader};

#[derive(Subcommand)]
pub enum VerifyCmd {
    /// Verify one entry: recompute its leaf from the envelope bytes and fields, check the
    /// producer's signature, the inclusion proof and the checkpoint's signature. Names the
    /// step that failed.
    Entry(EntryArgs),
    /// Prove that the reader's latest checkpoint extends the last one trusted (kept in
    /// --state); refuse a fork loudly. The first run trusts what it sees and says so.
    Consistency(ConsistencyArgs),
}

#[derive(Args)]
pub struct ReaderArgs {
    /// Base URL of a reader, e.g. http://127.0.0.1:8081 or https://ledger.example.
    #[arg(long, env = "ACE_READER_URL")]
    reader: String,
    /// PEM CA certificate(s) to trust for an https reader, instead of the public roots.
    #[arg(long, env = "ACE_READER_CA_FILE")]
    reader_ca_file: Option<PathBuf>,
    /// The ledger's note verifier key (`name+hash+base64`, as `acectl ledger-key generate`
    /// prints it); repeat for a rotated key.
    #[arg(long = "ledger-key", required = true)]
    ledger_keys: Vec<String>,
}

#[derive(Args)]
pub struct EntryArgs {
    #[command(flatten)]
    reader: ReaderArgs,
    #[arg(long)]
    index: u64,
    /// Prove against this checkpointed tree size instead of the latest.
    #[arg(long)]
    tree_size: Option<u64>,
}

#[derive(Args)]
pub struct ConsistencyArgs {
    #[command(flatten)]
    reader: ReaderArgs,
    /// File holding the last trusted checkpoint note; created on first use, replaced
    /// (atomically) only after a verified extension.
    #[arg(long)]
    state: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("{0}")]
    Usage(String),
    #[error(transparent)]
    Http(#[from] HttpError),
    #[error("state file {path}: {reason}")]
    State { path: String, reason: String },
    #[error("entry {index}: {step} check failed: {detail}")]
    Entry {
        index: u64,
        step: &'static str,
        detail: String,
    },
    #[error("FORK: {0}")]
    Fork(String),
    #[error("{0}")]
    Stale(String),
}

impl VerifyError {
    pub fn exit_code(&self) -> i32 {
        match self {
            VerifyError::Entry { .. } | VerifyError::Fork(_) | VerifyError::Stale(_) => 1,
            VerifyError::Usage(_) | VerifyError::Http(_) | VerifyError::State { .. } => 2,
        }
    }
}

pub fn verifiers(keys: &[String]) -> Result<Vec<NoteVerifier>, VerifyError> {
    keys.iter()
        .map(|k| {
            NoteVerifier::parse(k)
                .map_err(|e| VerifyError::Usage(format!("--ledger-key {k:?}: {e}")))
        })
        .collect()
}

pub async fn run(cmd: VerifyCmd) -> i32 {
    let result = match cmd {
        VerifyCmd::Entry(a) => entry(a).await,
        VerifyCmd::Consistency(a) => consistency(a).await,
    };
    match result {
        Ok(report) => {
            say!("{report}");
            0
        }
        Err(e) => {
            eprintln!("acectl verify: {e}");
            e.exit_code()
        }
    }
}

async fn entry(a: EntryArgs) -> Result<String, VerifyError> {
    let verifiers = verifiers(&a.reader.ledger_keys)?;
    let reader = Reader::with_ca(&a.reader.reader, a.reader.reader_ca_file.as_deref())?;
    let index = a.index;
    let keys = reader.get_json("/v1/keys").await?;
    let (verified, entry) = fetch_and_check(&reader, index, a.tree_size, &keys, &verifiers).await?;
    let policy = match entry.get("policy_version").and_then(Value::as_str) {
        Some(v) => Some(reader.get_json(&format!("/v1/policies/{v}")).await?),
        None => None,
    };
    Ok(format!(
        "{verified}; {}",
        check_policy(index, &entry, policy.as_ref())?
    ))
}

/// Fetches an entry and its inclusion proof (at `tree_size`, default the latest
/// checkpoint) and runs [`check_entry`] on them; returns its summary and the entry.
///
/// # Errors
/// [`VerifyError::Entry`] naming the failed step, or the reader's failure.
pub async fn fetch_and_check(
    reader: &Reader,
    index: u64,
    tree_size: Option<u64>,
    keys: &Value,
    verifiers: &[NoteVerifier],
) -> Result<(String, Value), VerifyError> {
    let entry = reader.get_json(&format!("/v1/entries/{index}")).await?;
    let proof_path = match tree_size {
        Some(n) => format!("/v1/entries/{index}/proof?tree_size={n}"),
        None => format!("/v1/entries/{index}/proof"),
    };
    // A reader that finds its own tiles contradicting the signed root answers 500: that is
    // a failed check of this entry, not a failure to run.
    let proof = match reader.get_json(&proof_path).await {
        Err(HttpError::Status {
            status: 500,
            detail,
            ..
        }) => {
            return Err(VerifyError::Entry {
                index,
                step: "inclusion proof",
                detail: format!("the reader cannot prove it: {detail}"),
            })
        }
        other => other?,
    };
    let verified = check_entry(index, &entry, &proof, keys, verifiers)?;
    Ok((verified, entry))
}

/// The policy version that admitted the entry, if the ledger kept one: the text served for
/// it must hash to it. Pure, for tests.
pub fn check_policy(
    index: u64,
    entry: &Value,
    policy: Option<&Value>,
) -> Result<String, VerifyError> {
    let fail = |detail: String| VerifyError::Entry {
        index,
        step: "policy",
        detail,
    };
    let Some(version) = entry.get("policy_version").and_then(Value::as_str) else {
        if entry.get("producer").and_then(Value::as_str) == Some(ace_core::ids::ProducerId::LEDGER)
        {
            return Ok("a key event, appended by the ledger itself (no admission policy)".into());
        }
        return Ok("no policy version recorded (admitted before versions were kept)".into());
    };
    let source = policy
        .and_then(|p| p.get("source"))
        .and_then(Value::as_str)
        .ok_or_else(|| fail(format!("the reader served no text for policy {version}")))?;
    let computed = ace_core::policy::version_of(source.as_bytes());
    if computed != version {
        return Err(fail(format!(
            "the text served for policy {version} hashes to {computed}"
        )));
    }
    Ok(format!(
        "admitted under policy {version} (its text rehashed)"
    ))
}

/// The checks of `verify entry`, in order, on what a reader served. Pure, for tests.
///
/// # Errors
/// [`VerifyError::Entry`] naming the first step that fails.
pub fn check_entry(
    index: u64,
    entry: &Value,
    proof: &Value,
    keys: &Value,
    verifiers: &[NoteVerifier],
) -> Result<String, VerifyError> {
    let fail = |step: &'static str, detail: String| VerifyError::Entry {
        index,
        step,
        detail,
    };
    let field = |v: &Value, name: &str| -> Result<Value, VerifyError> {
        v.get(name)
            .cloned()
            .ok_or_else(|| fail("answer", format!("the reader's answer lacks {name:?}")))
    };
    let string = |v: &Value, name: &str| -> Result<String, VerifyError> {
        field(v, name)?
            .as_str()
            .map(str::to_owned)
            .ok_or_else(|| fail("answer", format!("{name:?} is not a string")))
    };
    if field(entry, "index")?.as_u64() != Some(index) {
        return Err(fail(
            "answer",
            format!("the reader served entry {} instead", entry["index"]),
        ));
    }

    // 1. The envelope bytes, and the digest of their PAE.
    let raw = base64::engine::general_purpose::STANDARD
        .decode(string(entry, "envelope")?)
        .map_err(|e| fail("envelope", format!("not base64: {e}")))?;
    let env = Envelope::parse(&raw).map_err(|r| fail("envelope", r.to_string()))?;
    let digest = env.digest();
    let served_digest = string(entry, "digest")?;
    if digest.as_str() != served_digest {
        return Err(fail(
            "digest",
            format!("the envelope's PAE hashes to {digest}, the entry says {served_digest}"),
        ));
    }

    // 2. The leaf, rebuilt from the envelope bytes and the entry's fields.
    let integrated_time = field(entry, "integrated_time")?
        .as_i64()
        .ok_or_else(|| fail("answer", "\"integrated_time\" is not an integer".into()))?;
    let producer = string(entry, "producer")?;
    let leaf = LeafRecord {
        digest: digest.as_str().to_owned(),
        envelope_sha256: envelope_sha256(&raw),
        index,
        integrated_time,
        producer: producer.clone(),
    };
    let leaf_bytes = leaf.to_bytes();
    let served_leaf = string(entry, "leaf")?;
    if served_leaf.as_bytes() != leaf_bytes {
        let detail = match LeafRecord::parse(served_leaf.as_bytes()) {
            Err(e) => format!("the served leaf does not parse: {e}"),
            Ok(s) => differing_fields(&leaf, &s),
        };
        return Err(fail("leaf", detail));
    }

    // 3. A signature by a key of the producer, valid when the entry was integrated. Key
    // events are the ledger's own: signed by a ledger key the verifier was given, which
    // `/v1/keys` does not list among producers' keys.
    let registry = if producer == ace_core::ids::ProducerId::LEDGER {
        ledger_registry(verifiers)
    } else {
        registry(keys).map_err(|e| fail("keys", e))?
    };
    let keyid = verify_envelope(&env, &env.pae(), &producer, &registry, integrated_time)
        .map_err(|r| fail("signature", format!("{}: {}", r.code, r.detail)))?;

    // 4. The checkpoint, signed by the ledger.
    let note = string(proof, "checkpoint")?;
    let cp = open_checkpoint(&note, verifiers)
        .map_err(|e| fail("checkpoint signature", e.to_string()))?;
    let tree_size = field(proof, "tree_size")?.as_u64();
    if tree_size != Some(cp.tree_size) {
        return Err(fail(
            "checkpoint",
            format!(
                "the proof is for tree size {tree_size:?}, its checkpoint for {}",
                cp.tree_size
            ),
        ));
    }
    let served_root = string(proof, "root_hash")?;
    if served_root != hex::encode(cp.root_hash) {
        return Err(fail(
            "checkpoint",
            format!(
                "the proof's root_hash {served_root} is not the signed root {}",
                hex::encode(cp.root_hash)
            ),
        ));
    }

    // 5. The inclusion proof, from the recomputed leaf to the signed root.
    let lh = leaf_hash(&leaf_bytes);
    let served_leaf_hash = string(proof, "leaf_hash")?;
    if served_leaf_hash != hex::encode(lh) {
        return Err(fail(
            "leaf hash",
            format!(
                "the proof is for leaf hash {served_leaf_hash}, the recomputed leaf hashes to {}",
                hex::encode(lh)
            ),
        ));
    }
    let path = hashes(&field(proof, "hashes")?).map_err(|e| fail("answer", e))?;
    verify_inclusion_proof(&lh, index, cp.tree_size, &path, &cp.root_hash)
        .map_err(|e| fail("inclusion proof", e.to_string()))?;

    Ok(format!(
        "entry {index} verified: envelope {digest} by {producer} (key {keyid}); leaf recomputed; \
         included in {} at tree size {} (root {}), checkpoint signed by {}",
        cp.origin,
        cp.tree_size,
        hex::encode(cp.root_hash),
        verifiers
            .iter()
            .map(|v| v.name())
            .collect::<Vec<_>>()
            .join(", ")
    ))
}

fn differing_fields(want: &LeafRecord, got: &LeafRecord) -> String {
    let d: Vec<String> = want
        .differences(got)
        .into_iter()
        .map(|(field, rebuilt, served)| {
            format!("{field}: rebuilt from the entry {rebuilt}, in the served leaf {served}")
        })
        .collect();
    if d.is_empty() {
        "the served leaf is not the canonical form of its fields".into()
    } else {
        format!("the leaf does not match: {}", d.join("; "))
    }
}

fn hashes(v: &Value) -> Result<Vec<Hash>, String> {
    v.as_array()
        .ok_or("\"hashes\" is not an array")?
        .iter()
        .enumerate()
        .map(|(i, h)| {
            h.as_str()
                .and_then(|s| hex::decode(s).ok())
                .and_then(|b| Hash::try_from(b.as_slice()).ok())
                .ok_or_else(|| format!("hashes[{i}] is not 64 hex digits"))
        })
        .collect()
}

fn ms(v: &Value, what: &str) -> Result<Option<i64>, String> {
    match v {
        Value::Null => Ok(None),
        Value::String(s) => chrono::DateTime::parse_from_rfc3339(s)
            .map(|t| Some(t.timestamp_millis()))
            .map_err(|e| format!("{what} {s:?}: {e}")),
        other => Err(format!("{what} is {other}, not an RFC 3339 string")),
    }
}

/// The ledger keys (`--ledger-key`) as the `_ledger` producer's keys, valid forever: the
/// checkpoint signature of the same run is what ties them to the log.
fn ledger_registry(verifiers: &[NoteVerifier]) -> HashMap<String, RegisteredKey> {
    verifiers
        .iter()
        .map(|v| {
            let k =
                RegisteredKey::new(ace_core::ids::ProducerId::LEDGER, *v.public_key(), i64::MIN);
            (k.keyid.as_str().to_owned(), k)
        })
        .collect()
}

/// The producer keys of `/v1/keys`, by keyid, each checked against its public key.
fn registry(keys: &Value) -> Result<HashMap<String, RegisteredKey>, String> {
    let list = keys
        .get("producers")
        .and_then(Value::as_array)
        .ok_or("/v1/keys has no \"producers\" array")?;
    let mut out = HashMap::new();
    for (i, k) in list.iter().enumerate() {
        let s = |name: &str| {
            k.get(name)
                .and_then(Value::as_str)
                .ok_or_else(|| format!("producers[{i}].{name} is missing"))
        };
        let pk: [u8; 32] = hex::decode(s("public_key")?)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| format!("producers[{i}].public_key is not 32 bytes of hex"))?;
        let public_key = ed25519_dalek::VerifyingKey::from_bytes(&pk)
            .map_err(|e| format!("producers[{i}].public_key: {e}"))?;
        let mut key = RegisteredKey::new(
            s("producer")?,
            public_key,
            ms(&k["valid_from"], "valid_from")?.unwrap_or(i64::MIN),
        );
        if key.keyid.as_str() != s("keyid")? {
            return Err(format!(
                "producers[{i}]: keyid {} is not the SHA-256 of its public key ({})",
                s("keyid")?,
                key.keyid
            ));
        }
        key.valid_until_ms = ms(&k["valid_until"], "valid_until")?;
        key.revoked_at_ms = ms(&k["revoked_at"], "revoked_at")?;
        out.insert(key.keyid.as_str().to_owned(), key);
    }
    Ok(out)
}

async fn consistency(a: ConsistencyArgs) -> Result<String, VerifyError> {
    let verifiers = verifiers(&a.reader.ledger_keys)?;
    let reader = Reader::with_ca(&a.reader.reader, a.reader.reader_ca_file.as_deref())?;
    let new_note = String::from_utf8(reader.get_ok("/v1/checkpoint").await?).map_err(|_| {
        VerifyError::Http(HttpError::Failed {
            url: reader.url("/v1/checkpoint"),
            reason: "the checkpoint is not UTF-8".into(),
        })
    })?;
    let new = open_checkpoint(&new_note, &verifiers).map_err(|e| {
        VerifyError::Fork(format!(
            "the reader's latest checkpoint does not verify with the ledger key: {e}"
        ))
    })?;
    let trusted = read_state(&a.state, &verifiers)?;
    let Some(old) = trusted else {
        write_state(&a.state, &new_note)?;
        return Ok(format!(
            "no trusted checkpoint yet: trusting {} at tree size {} (root {}) on first use; saved to {}",
            new.origin,
            new.tree_size,
            hex::encode(new.root_hash),
            a.state.display()
        ));
    };
    let proof = if new.tree_size > old.tree_size {
        let path = format!(
            "/v1/consistency?from={}&to={}",
            old.tree_size, new.tree_size
        );
        let v = match reader.get_json(&path).await {
            // The reader, which just served its signed checkpoint, says it has no
            // checkpoint at the trusted size: it cannot prove that its log extends the
            // trusted one, so it is not verified (a rollback continued by a writer, or a
            // fork), not a failure to run.
            Err(HttpError::Status {
                status: 400 | 404,
                detail,
                ..
            }) => {
                return Err(VerifyError::Fork(format!(
                    "FORK or rollback: the reader's log (tree size {}) cannot prove that it extends the trusted checkpoint at tree size {}: {detail}",
                    new.tree_size, old.tree_size
                )))
            }
            other => other?,
        };
        hashes(&v["hashes"]).map_err(|e| {
            VerifyError::Http(HttpError::Failed {
                url: reader.url(&path),
                reason: e,
            })
        })?
    } else {
        Vec::new()
    };
    let outcome = check_extension(&old, &new, &proof)?;
    if new.tree_size > old.tree_size {
        write_state(&a.state, &new_note)?;
    }
    Ok(outcome)
}

/// Whether `new` extends `old` by `proof`. Pure, for tests.
///
/// # Errors
/// [`VerifyError::Fork`] for two different trees, [`VerifyError::Stale`] for an older one.
pub fn check_extension(
    old: &Checkpoint,
    new: &Checkpoint,
    proof: &[Hash],
) -> Result<String, VerifyError> {
    let describe = |c: &Checkpoint| {
        format!(
            "tree size {} root {}",
            c.tree_size,
            hex::encode(c.root_hash)
        )
    };
    if old.origin != new.origin {
        return Err(VerifyError::Fork(format!(
            "the reader serves log {:?}, the trusted checkpoint is of log {:?}",
            new.origin, old.origin
        )));
    }
    if new.tree_size < old.tree_size {
        return Err(VerifyError::Stale(format!(
            "the reader's checkpoint ({}) is older than the trusted one ({}): a lagging replica, \
             or a rollback. The trusted state is unchanged",
            describe(new),
            describe(old)
        )));
    }
    if new.tree_size == old.tree_size {
        if new.root_hash != old.root_hash {
            return Err(VerifyError::Fork(format!(
                "two signed checkpoints of tree size {} with different roots: trusted {}, served {}",
                old.tree_size,
                hex::encode(old.root_hash),
                hex::encode(new.root_hash)
            )));
        }
        return Ok(format!(
            "unchanged: {} at {} is the trusted checkpoint",
            new.origin,
            describe(new)
        ));
    }
    verify_consistency_proof(
        old.tree_size,
        new.tree_size,
        proof,
        &old.root_hash,
        &new.root_hash,
    )
    .map_err(|e| {
        VerifyError::Fork(format!(
            "the reader's checkpoint ({}) does not extend the trusted one ({}): {e}",
            describe(new),
            describe(old)
        ))
    })?;
    Ok(format!(
        "consistent: {} grew from {} to {} ({} proof hashes verified); trusted state updated",
        new.origin,
        describe(old),
        describe(new),
        proof.len()
    ))
}

fn read_state(path: &Path, verifiers: &[NoteVerifier]) -> Result<Option<Checkpoint>, VerifyError> {
    let bad = |reason: String| VerifyError::State {
        path: path.display().to_string(),
        reason,
    };
    let note = match std::fs::read_to_string(path) {
        Ok(n) => n,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(bad(format!("cannot read: {e}"))),
    };
    let cp = open_checkpoint(&note, verifiers).map_err(|e| {
        bad(format!(
            "the trusted checkpoint does not verify with --ledger-key: {e}"
        ))
    })?;
    Ok(Some(cp))
}

/// Replaces the state file atomically: a crash leaves the old or the new note, never half.
fn write_state(path: &Path, note: &str) -> Result<(), VerifyError> {
    let bad = |reason: String| VerifyError::State {
        path: path.display().to_string(),
        reason,
    };
    let tmp = path.with_extension("tmp");
    let mut f = std::fs::File::create(&tmp)
        .map_err(|e| bad(format!("cannot create {}: {e}", tmp.display())))?;
    f.write_all(note.as_bytes())
        .and_then(|()| f.sync_all())
        .map_err(|e| bad(format!("cannot write {}: {e}", tmp.display())))?;
    std::fs::rename(&tmp, path).map_err(|e| bad(format!("cannot replace it: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use ace_core::checkpoint::{sign_checkpoint, NoteSigner};
    use ace_core::merkle::MemoryTree;

    fn tree(n: u64, salt: u8) -> MemoryTree {
        let mut t = MemoryTree::new();
        for i in 0..n {
            t.push(leaf_hash(&[salt, i as u8, (i >> 8) as u8]));
        }
        t
    }

    fn cp(origin: &str, t: &MemoryTree, size: u64) -> Checkpoint {
        Checkpoint {
            origin: origin.into(),
            tree_size: size,
            root_hash: t.root_at(size).unwrap(),
            extensions: vec![],
        }
    }

    #[test]
    fn a_policy_text_must_hash_to_the_entrys_version() {
        let text = "[[rule]]\nid = \"m\"\n";
        let v = ace_core::policy::version_of(text.as_bytes());
        let entry = serde_json::json!({"policy_version": v});
        let ok = check_policy(3, &entry, Some(&serde_json::json!({"source": text}))).unwrap();
        assert!(ok.contains(&v), "{ok}");
        let e = check_policy(3, &entry, Some(&serde_json::json!({"source": "x"})))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("entry 3: policy check failed: the text served for policy"),
            "{e}"
        );
        let event = serde_json::json!({"policy_version": null, "producer": "_ledger"});
        assert!(check_policy(0, &event, None)
            .unwrap()
            .starts_with("a key event"));
        let old = check_policy(3, &serde_json::json!({"policy_version": null}), None).unwrap();
        assert!(old.starts_with("no policy version recorded"), "{old}");
    }

    #[test]
    fn extensions_verify_and_forks_are_refused() {
        let t = tree(300, 1);
        let old = cp("o", &t, 100);
        let new = cp("o", &t, 300);
        let proof = ace_core::merkle::consistency_proof(100, 300, &t).unwrap();
        assert!(check_extension(&old, &new, &proof)
            .unwrap()
            .starts_with("consistent"));
        assert!(check_extension(&new, &new, &[])
            .unwrap()
            .starts_with("unchanged"));
        // Another tree of the same sizes: a fork, at equal size and by a failed proof.
        let other = cp("o", &tree(300, 2), 300);
        let e = check_extension(&new, &other, &[]).unwrap_err();
        assert!(matches!(e, VerifyError::Fork(_)), "{e}");
        let e = check_extension(&old, &other, &proof).unwrap_err();
        assert!(
            matches!(e, VerifyError::Fork(_)) && e.to_string().starts_with("FORK"),
            "{e}"
        );
        let e = check_extension(&new, &old, &[]).unwrap_err();
        assert!(matches!(e, VerifyError::Stale(_)), "{e}");
        let e = check_extension(&old, &cp("p", &t, 300), &proof).unwrap_err();
        assert!(matches!(e, VerifyError::Fork(_)), "{e}");
    }

    #[test]
    fn state_files_are_replaced_whole_and_checked() {
        let dir = std::env::temp_dir().join(format!("acectl-verify-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("state");
        let s = NoteSigner::generate("o").unwrap();
        let t = tree(5, 1);
        let note = sign_checkpoint(&cp("o", &t, 5), &[&s]).unwrap();
        assert!(read_state(&path, &[s.verifier()]).unwrap().is_none());
        write_state(&path, &note).unwrap();
        let c = read_state(&path, &[s.verifier()]).unwrap().unwrap();
        assert_eq!(c.tree_size, 5);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), note);
        let other = NoteSigner::generate("o").unwrap();
        let e = read_state(&path, &[other.verifier()]).unwrap_err();
        assert!(e.to_string().contains("does not verify"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
