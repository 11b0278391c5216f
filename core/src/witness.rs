//! Witnesses: C2SP tlog-cosignature v1 (timestamped Ed25519 cosignatures, signature type
//! 0x04) and both sides of the bodies of C2SP tlog-witness `add-checkpoint`.
//!
//! A cosignature is a note signature line `— <witness name> base64(key hash ‖ timestamp ‖
//! signature)`, the timestamp 8 bytes big-endian, the Ed25519 signature over
//! `cosignature/v1\ntime <timestamp>\n` followed by the checkpoint's note body (the note
//! text up to the blank line, extension lines included, with its final newline).
//! Appended to the checkpoint note it leaves a valid signed note: a verifier that does not
//! know the witness key ignores the line.
//!
//! The HTTP exchange itself belongs to the anchor (client) and to whoever runs a witness;
//! this module builds and reads the bodies, so that the anchor, the reader, `acectl audit`
//! and the test witness agree on them. It does no I/O.

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};

use crate::checkpoint::{
    check_name, key_hash_for, open_note, parse_signature_line, split_hash_and_key, Checkpoint,
    CheckpointError, NoteError, NoteVerifier, SIG_PREFIX,
};
use crate::ids::excerpt;
use crate::merkle::Hash;

/// The note signature type of cosignature/v1 (Ed25519).
pub const ALG_COSIGNATURE_V1: u8 = 0x04;
/// tlog-witness: a client sends at most this many consistency proof lines.
pub const MAX_PROOF_LINES: usize = 63;
/// `Content-Type` of a 409 answer carrying the witness's latest size.
pub const SIZE_CONTENT_TYPE: &str = "text/x.tlog.size";
/// The header line of the signed message, without its newline.
pub const COSIGNATURE_V1_HEADER: &str = "cosignature/v1";
/// Bytes of a cosignature/v1 signature after the key hash: timestamp and Ed25519 signature.
pub const COSIGNATURE_V1_LEN: usize = 8 + 64;
/// A cosignature's timestamp may not exceed 2^63 - 1.
pub const MAX_TIMESTAMP: u64 = i64::MAX as u64;
/// Most bytes of a refused answer's body kept in [`AddCheckpointOutcome::Refused`].
pub const MAX_REFUSED_BODY: usize = 1024;

/// What went wrong, named precisely enough to act on.
#[derive(Debug, thiserror::Error)]
pub enum WitnessError {
    /// An invalid witness name, or a malformed key string.
    #[error("witness key: {0}")]
    Key(NoteError),
    /// A verifier key that parses but is not a usable cosignature/v1 key.
    #[error("witness verifier key {vkey:?}: {reason}")]
    BadKey { vkey: String, reason: String },
    /// The operating system's random source failed (key generation).
    #[error("generating a witness key: {0}")]
    Random(String),
    /// A line of a cosignature answer or of a note's signatures is not a note signature line.
    #[error("signature line {line}: {source}")]
    MalformedLine { line: usize, source: NoteError },
    /// A line by a trusted witness key whose signature is not 8 + 64 bytes.
    #[error("cosignature by {witness} (key hash {key_hash:08x}): {len} bytes after the key hash; cosignature/v1 has 8 (timestamp) + 64 (Ed25519)")]
    CosignatureLength {
        witness: String,
        key_hash: u32,
        len: usize,
    },
    /// A timestamp over 2^63 - 1, which the spec forbids.
    #[error("cosignature by {witness} (key hash {key_hash:08x}): timestamp {timestamp} exceeds 2^63 - 1")]
    TimestampOutOfRange {
        witness: String,
        key_hash: u32,
        timestamp: u64,
    },
    /// A line by a trusted witness key whose signature does not verify over this
    /// checkpoint at its stated time: another checkpoint (a fork), an altered timestamp,
    /// or a forged line.
    #[error("cosignature by {witness} (key hash {key_hash:08x}, time {timestamp}) does not verify over this checkpoint")]
    InvalidCosignature {
        witness: String,
        key_hash: u32,
        timestamp: u64,
    },
    /// Two trusted witness keys share a name and key hash but differ.
    #[error("two trusted witness keys are named {witness} with key hash {key_hash:08x}")]
    AmbiguousVerifier { witness: String, key_hash: u32 },
    /// No line verified with any trusted witness key.
    #[error("no cosignature by a trusted witness ({trusted}); the lines were by: {signed_by}")]
    NoCosignature { trusted: String, signed_by: String },
    /// An `add-checkpoint` request body that does not follow tlog-witness.
    #[error("add-checkpoint request body: {0}")]
    Body(String),
    /// A 409 answer with `Content-Type: text/x.tlog.size` whose body is not a size.
    #[error("the witness answered 409 ({SIZE_CONTENT_TYPE}) with a body that is not a tree size: {body:?}")]
    BadConflictBody { body: String },
    /// The checkpoint note: not a note, not signed by the ledger, or not a checkpoint.
    #[error("checkpoint: {0}")]
    Checkpoint(#[from] CheckpointError),
    /// A signed note without a note body (no blank line).
    #[error("the signed note has no blank line ending its text")]
    NoNoteBody,
}

/// A witness's public key, from its verifier key `<name>+<key hash>+base64(0x04 ‖ key)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CosignatureVerifier {
    name: String,
    key_hash: u32,
    public_key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Reads a verifier key of signature type 0x04 and checks its stated key hash.
    ///
    /// # Errors
    /// [`WitnessError::Key`] for malformed text or an invalid name, [`WitnessError::BadKey`]
    /// for another signature type, a key of the wrong length or not on the curve, or a key
    /// hash that is not SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[:4].
    pub fn parse(vkey: &str) -> Result<Self, WitnessError> {
        let bad = |reason: String| WitnessError::BadKey {
            vkey: excerpt(vkey),
            reason,
        };
        let (name, rest) = vkey
            .split_once('+')
            .ok_or_else(|| bad("expected <name>+<8 hex key hash>+<base64 key>".into()))?;
        check_name(name).map_err(WitnessError::Key)?;
        let (stated, key) =
            split_hash_and_key(rest, "witness verifier key").map_err(WitnessError::Key)?;
        let raw = match key.split_first() {
            Some((&ALG_COSIGNATURE_V1, raw)) => <[u8; 32]>::try_from(raw).map_err(|_| {
                bad(format!(
                    "an Ed25519 key is 32 bytes after the type byte, found {}",
                    raw.len()
                ))
            })?,
            Some((&alg, _)) => {
                return Err(bad(format!(
                    "signature type 0x{alg:02x}; a cosignature/v1 key has type 0x04"
                )))
            }
            None => return Err(bad("the key is empty".into())),
        };
        let public_key = VerifyingKey::from_bytes(&raw)
            .map_err(|_| bad("not a valid Ed25519 public key".into()))?;
        let computed = key_hash_for(name, ALG_COSIGNATURE_V1, &public_key);
        if computed != stated {
            return Err(bad(format!(
                "states key hash {stated:08x}, but the key's hash is {computed:08x}"
            )));
        }
        Ok(CosignatureVerifier {
            name: name.to_string(),
            key_hash: computed,
            public_key,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// SHA-256(name ‖ 0x0A ‖ 0x04 ‖ public key)[:4], big-endian.
    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.public_key
    }

    /// `<name>+<8 hex key hash>+base64(0x04 ‖ public key)`.
    pub fn to_vkey(&self) -> String {
        let mut key = vec![ALG_COSIGNATURE_V1];
        key.extend_from_slice(self.public_key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_hash,
            STANDARD.encode(key)
        )
    }

    /// Checks one note signature line against `checkpoint_body` (the note text, with its
    /// final newline). `Ok(None)` for a line by another key (name or key hash differ).
    ///
    /// # Errors
    /// [`WitnessError::MalformedLine`] for a line that is not a note signature line, and
    /// for a line by this key: [`WitnessError::CosignatureLength`],
    /// [`WitnessError::TimestampOutOfRange`] or [`WitnessError::InvalidCosignature`].
    pub fn verify_line(
        &self,
        line: &str,
        checkpoint_body: &str,
    ) -> Result<Option<Cosignature>, WitnessError> {
        let sig = parse_signature_line(1, line)
            .map_err(|source| WitnessError::MalformedLine { line: 1, source })?;
        if sig.name != self.name || sig.key_hash != self.key_hash {
            return Ok(None);
        }
        self.verify_parsed(line, &sig.signature, checkpoint_body)
            .map(Some)
    }

    /// `raw` is the signature after the key hash: timestamp ‖ Ed25519 signature.
    fn verify_parsed(
        &self,
        line: &str,
        raw: &[u8],
        checkpoint_body: &str,
    ) -> Result<Cosignature, WitnessError> {
        let Ok(raw) = <&[u8; COSIGNATURE_V1_LEN]>::try_from(raw) else {
            return Err(WitnessError::CosignatureLength {
                witness: self.name.clone(),
                key_hash: self.key_hash,
                len: raw.len(),
            });
        };
        let (ts, ed) = raw.split_at(8);
        let mut ts8 = [0u8; 8];
        ts8.copy_from_slice(ts);
        let timestamp = u64::from_be_bytes(ts8);
        if timestamp > MAX_TIMESTAMP {
            return Err(WitnessError::TimestampOutOfRange {
                witness: self.name.clone(),
                key_hash: self.key_hash,
                timestamp,
            });
        }
        let mut signature = [0u8; 64];
        signature.copy_from_slice(ed);
        let invalid = || WitnessError::InvalidCosignature {
            witness: self.name.clone(),
            key_hash: self.key_hash,
            timestamp,
        };
        let sig = Signature::from_slice(&signature).map_err(|_| invalid())?;
        self.public_key
            .verify_strict(&cosigned_message(checkpoint_body, timestamp), &sig)
            .map_err(|_| invalid())?;
        Ok(Cosignature {
            witness: self.name.clone(),
            key_hash: self.key_hash,
            timestamp,
            signature,
            line: line.trim_end_matches('\n').to_string(),
        })
    }
}

/// A witness's signing key: for the test witness, and for anyone running one.
pub struct CosignatureSigner {
    name: String,
    key: SigningKey,
    key_hash: u32,
}

impl std::fmt::Debug for CosignatureSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CosignatureSigner")
            .field("name", &self.name)
            .field("key_hash", &format_args!("{:08x}", self.key_hash))
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl CosignatureSigner {
    /// # Errors
    /// [`WitnessError::Key`] for an invalid name (empty, `+`, whitespace, control characters).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, WitnessError> {
        check_name(name).map_err(WitnessError::Key)?;
        let key = SigningKey::from_bytes(&seed);
        let key_hash = key_hash_for(name, ALG_COSIGNATURE_V1, &key.verifying_key());
        Ok(CosignatureSigner {
            name: name.to_string(),
            key,
            key_hash,
        })
    }

    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    /// An invalid name, or [`WitnessError::Random`].
    pub fn generate(name: &str) -> Result<Self, WitnessError> {
        let mut seed = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| WitnessError::Random(e.to_string()))?;
        let signer = Self::from_seed(name, seed);
        seed.fill(0);
        signer
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn verifier(&self) -> CosignatureVerifier {
        CosignatureVerifier {
            name: self.name.clone(),
            key_hash: self.key_hash,
            public_key: self.key.verifying_key(),
        }
    }

    /// The verifier key string, `<name>+<key hash>+base64(0x04 ‖ key)`.
    pub fn vkey(&self) -> String {
        self.verifier().to_vkey()
    }

    /// The cosignature line (without newline) over `checkpoint_body`, the checkpoint
    /// note's text with its final newline, at `timestamp` (seconds since the epoch; the
    /// spec caps it at 2^63 - 1, and verifiers reject a line above that).
    pub fn cosign(&self, checkpoint_body: &str, timestamp: u64) -> String {
        let sig = self.key.sign(&cosigned_message(checkpoint_body, timestamp));
        let mut raw = Vec::with_capacity(4 + COSIGNATURE_V1_LEN);
        raw.extend_from_slice(&self.key_hash.to_be_bytes());
        raw.extend_from_slice(&timestamp.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}", self.name, STANDARD.encode(raw))
    }
}

/// A verified cosignature.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cosignature {
    pub witness: String,
    pub key_hash: u32,
    /// Seconds since the epoch, as the witness stated it.
    pub timestamp: u64,
    /// The Ed25519 signature over the cosigned message.
    pub signature: [u8; 64],
    /// The signature line, without its newline.
    pub line: String,
}

/// The message a cosignature/v1 signs: `cosignature/v1\ntime <timestamp>\n` ‖ body.
pub fn cosigned_message(checkpoint_body: &str, timestamp: u64) -> Vec<u8> {
    format!("{COSIGNATURE_V1_HEADER}\ntime {timestamp}\n{checkpoint_body}").into_bytes()
}

/// The note body of a signed note: its text up to the blank line, with the final newline.
pub fn note_body(signed_note: &str) -> Option<&str> {
    signed_note
        .find("\n\n")
        .and_then(|at| signed_note.get(..=at))
}

/// Verifies the note signature lines of `lines` (an `add-checkpoint` answer, or the
/// signature lines of a note) over `checkpoint_body` with the trusted `verifiers`.
///
/// Lines by keys not among `verifiers` are skipped; a line by a trusted key that does not
/// verify is an error, not skipped; at least one line must verify. Duplicate lines count
/// once.
///
/// # Errors
/// [`WitnessError::MalformedLine`], [`WitnessError::AmbiguousVerifier`], the errors of
/// [`CosignatureVerifier::verify_line`] for a trusted key's line, or
/// [`WitnessError::NoCosignature`].
pub fn verify_cosignature_lines(
    lines: &str,
    checkpoint_body: &str,
    verifiers: &[CosignatureVerifier],
) -> Result<Vec<Cosignature>, WitnessError> {
    let mut found: Vec<Cosignature> = Vec::new();
    let mut others: Vec<String> = Vec::new();
    for (i, line) in lines.split_terminator('\n').enumerate() {
        let sig =
            parse_signature_line(i + 1, line).map_err(|source| WitnessError::MalformedLine {
                line: i + 1,
                source,
            })?;
        let mut matching = verifiers
            .iter()
            .filter(|v| v.name == sig.name && v.key_hash == sig.key_hash);
        let Some(v) = matching.next() else {
            others.push(format!("{}+{:08x}", sig.name, sig.key_hash));
            continue;
        };
        if matching.any(|o| o.public_key != v.public_key) {
            return Err(WitnessError::AmbiguousVerifier {
                witness: sig.name,
                key_hash: sig.key_hash,
            });
        }
        let c = v.verify_parsed(line, &sig.signature, checkpoint_body)?;
        if !found.contains(&c) {
            found.push(c);
        }
    }
    if found.is_empty() {
        let list = |v: Vec<String>| {
            if v.is_empty() {
                "none".to_string()
            } else {
                v.join(", ")
            }
        };
        return Err(WitnessError::NoCosignature {
            trusted: list(
                verifiers
                    .iter()
                    .map(|v| format!("{}+{:08x}", v.name, v.key_hash))
                    .collect(),
            ),
            signed_by: list(others),
        });
    }
    Ok(found)
}

/// The checkpoint note with `cosignature_lines` appended after its signature lines: a
/// signed note that any C2SP verifier opens with the ledger key (ignoring the witness
/// lines) or with witness keys. Lines already in the note are not repeated; a trailing
/// newline on a line is allowed.
pub fn cosigned_note(signed_note: &str, cosignature_lines: &[String]) -> String {
    let mut note = signed_note.to_string();
    if !note.is_empty() && !note.ends_with('\n') {
        note.push('\n');
    }
    let existing: Vec<String> = note
        .rsplit_once("\n\n")
        .map(|(_, sigs)| sigs.split_terminator('\n').map(str::to_string).collect())
        .unwrap_or_default();
    let mut added: Vec<&str> = Vec::new();
    for line in cosignature_lines {
        let line = line.trim_end_matches('\n');
        if line.is_empty() || existing.iter().any(|l| l == line) || added.contains(&line) {
            continue;
        }
        added.push(line);
        note.push_str(line);
        note.push('\n');
    }
    note
}

/// Opens a cosigned checkpoint note: the ledger's signature must verify with `ledger`
/// (witness lines are unknown keys to it), and at least one cosignature must verify with
/// `witnesses` over the same note text. A quorum policy counts the returned cosignatures.
///
/// # Errors
/// [`WitnessError::Checkpoint`] for the note and the ledger signature, then those of
/// [`verify_cosignature_lines`] for the cosignatures.
pub fn verify_cosigned_note(
    note: &str,
    ledger: &[NoteVerifier],
    witnesses: &[CosignatureVerifier],
) -> Result<(Checkpoint, Vec<Cosignature>), WitnessError> {
    let opened = open_note(note, ledger).map_err(CheckpointError::from)?;
    let checkpoint = Checkpoint::parse_body(&opened.text)?;
    // open_note split the text at the last blank line; the signatures follow it.
    let sigs = note.get(opened.text.len() + 1..).unwrap_or("");
    let cosignatures = verify_cosignature_lines(sigs, &opened.text, witnesses)?;
    Ok((checkpoint, cosignatures))
}

/// The request body of `add-checkpoint`: `old <size>`, the consistency proof lines, an
/// empty line, the signed checkpoint.
pub fn add_checkpoint_body(old_size: u64, proof: &[Hash], signed_note: &str) -> String {
    let mut body = format!("old {old_size}\n");
    for h in proof {
        body.push_str(&STANDARD.encode(h));
        body.push('\n');
    }
    body.push('\n');
    body.push_str(signed_note);
    body
}

/// What a witness reads from an `add-checkpoint` body: old size, proof, signed note (a
/// slice of `body`). Checks the syntax only: the note is not opened here.
///
/// # Errors
/// [`WitnessError::Body`] naming the line: no empty line, a first line that is not
/// `old <canonical decimal>`, a proof line that is not base64 of 32 bytes, more than
/// [`MAX_PROOF_LINES`] proof lines, or an empty note.
pub fn parse_add_checkpoint_body(body: &str) -> Result<(u64, Vec<Hash>, &str), WitnessError> {
    let bad = |m: String| WitnessError::Body(m);
    let (head, note) = body
        .split_once("\n\n")
        .ok_or_else(|| bad("no empty line before the checkpoint".into()))?;
    let mut lines = head.split('\n');
    let old = lines
        .next()
        .and_then(|l| l.strip_prefix("old "))
        .ok_or_else(|| bad("line 1 is not `old <size>`".into()))?;
    if old.is_empty()
        || (old.len() > 1 && old.starts_with('0'))
        || !old.bytes().all(|b| b.is_ascii_digit())
    {
        return Err(bad(format!(
            "line 1: old size {:?} is not a decimal without leading zeros",
            excerpt(old)
        )));
    }
    let old: u64 = old
        .parse()
        .map_err(|_| bad(format!("line 1: old size {old} does not fit in 64 bits")))?;
    let mut proof = Vec::new();
    for (i, l) in lines.enumerate() {
        if i >= MAX_PROOF_LINES {
            return Err(bad(format!("more than {MAX_PROOF_LINES} proof lines")));
        }
        let h = STANDARD
            .decode(l)
            .ok()
            .and_then(|b| Hash::try_from(b.as_slice()).ok())
            .ok_or_else(|| bad(format!("line {}: not base64 of a 32-byte hash", i + 2)))?;
        proof.push(h);
    }
    if note.is_empty() {
        return Err(bad("no checkpoint after the empty line".into()));
    }
    Ok((old, proof, note))
}

/// What an `add-checkpoint` answer means to the client.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AddCheckpointOutcome {
    /// 200, with cosignatures by trusted witness keys, all verified.
    Cosigned(Vec<Cosignature>),
    /// 409 with `Content-Type: text/x.tlog.size`: the witness last cosigned this size of
    /// the log; retry with it as the old size and a proof from there.
    Conflict { witness_size: u64 },
    /// Any other answer: 400 (malformed request, or old size beyond the checkpoint), 403
    /// (not signed by a key the witness trusts for the origin), 404 (unknown origin), 409
    /// without a size (same size, another root hash: a fork), 422 (the consistency proof
    /// does not verify), 5xx (try later). `body` is at most [`MAX_REFUSED_BODY`] bytes.
    Refused { status: u16, body: String },
}

/// Reads a witness's answer to `add-checkpoint` of a checkpoint whose note body is
/// `checkpoint_body`.
///
/// # Errors
/// A 200 whose cosignatures do not verify as [`verify_cosignature_lines`] requires (a
/// witness that answers 200 must cosign), or a 409 `text/x.tlog.size` answer that is not a
/// size ([`WitnessError::BadConflictBody`]).
pub fn interpret_response(
    status: u16,
    content_type: Option<&str>,
    body: &str,
    checkpoint_body: &str,
    verifiers: &[CosignatureVerifier],
) -> Result<AddCheckpointOutcome, WitnessError> {
    let is_size = content_type.is_some_and(|t| {
        t.split(';')
            .next()
            .is_some_and(|m| m.trim().eq_ignore_ascii_case(SIZE_CONTENT_TYPE))
    });
    match status {
        200 => verify_cosignature_lines(body, checkpoint_body, verifiers)
            .map(AddCheckpointOutcome::Cosigned),
        409 if is_size => {
            let size = body.strip_suffix('\n').unwrap_or(body);
            let canonical = !size.is_empty()
                && size.bytes().all(|b| b.is_ascii_digit())
                && (size.len() == 1 || !size.starts_with('0'));
            match size.parse() {
                Ok(witness_size) if canonical => {
                    Ok(AddCheckpointOutcome::Conflict { witness_size })
                }
                _ => Err(WitnessError::BadConflictBody {
                    body: excerpt(body),
                }),
            }
        }
        _ => {
            let mut end = body.len().min(MAX_REFUSED_BODY);
            while !body.is_char_boundary(end) {
                end -= 1;
            }
            Ok(AddCheckpointOutcome::Refused {
                status,
                body: body.get(..end).unwrap_or("").to_string(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::checkpoint::{open_checkpoint, sign_checkpoint, NoteSigner};

    const ORIGIN: &str = "example.com/behind-the-sofa";
    /// c2sp.org/tlog-cosignature's example checkpoint, with the log's and the witness's
    /// lines. The spec publishes no key for either, so only the framing is checkable.
    const SPEC_NOTE: &str = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n\
        \u{2014} example.com/behind-the-sofa Az3grlgtzPICa5OS8npVmf1Myq/5IZniMp+ZJurmRDeOoRDe4URYN7u5/Zhcyv2q1gGzGku9nTo+zyWE+xeMcTOAYQ8=\n\
        \u{2014} witness.example.com/w1 jWbPPwAAAABkGFDLEZMHwSRaJNiIDoe9DYn/zXcrtPHeolMI5OWXEhZCB9dlrDJsX3b2oyin1nPZqhf5nNo0xUe+mbIUBkBIfZ+qnA==\n";

    fn log() -> NoteSigner {
        NoteSigner::from_seed(ORIGIN, [3; 32]).unwrap()
    }

    fn checkpoint_with(extensions: Vec<String>) -> String {
        let cp = Checkpoint {
            origin: ORIGIN.into(),
            tree_size: 20852163,
            root_hash: [7; 32],
            extensions,
        };
        sign_checkpoint(&cp, &[&log()]).unwrap()
    }

    fn checkpoint() -> String {
        checkpoint_with(vec![])
    }

    fn witness() -> CosignatureSigner {
        CosignatureSigner::from_seed("witness.example.com/w1", [9; 32]).unwrap()
    }

    #[test]
    fn the_spec_example_frames_a_timestamped_signature() {
        let line = SPEC_NOTE.lines().nth(5).unwrap();
        let sig = parse_signature_line(1, line).unwrap();
        assert_eq!(sig.name, "witness.example.com/w1");
        assert_eq!(sig.key_hash, 0x8d66cf3f);
        assert_eq!(sig.signature.len(), COSIGNATURE_V1_LEN);
        // The spec's signed-message example uses "time 1679315147".
        assert_eq!(
            u64::from_be_bytes(sig.signature[..8].try_into().unwrap()),
            1679315147
        );
        // Our message for that checkpoint and time is the spec's example message.
        let body = note_body(SPEC_NOTE).unwrap();
        assert_eq!(
            String::from_utf8(cosigned_message(body, 1679315147)).unwrap(),
            "cosignature/v1\ntime 1679315147\nexample.com/behind-the-sofa\n20852163\n\
             CsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
        );
        // A verifier of another key with that name skips the line; the note is still
        // well-formed for the log's key (which the spec does not publish either).
        let other = CosignatureSigner::from_seed("witness.example.com/w1", [1; 32]).unwrap();
        assert_eq!(other.verifier().verify_line(line, body).unwrap(), None);
        let e = verify_cosignature_lines(
            SPEC_NOTE.split_once("\n\n").unwrap().1,
            body,
            &[other.verifier()],
        )
        .unwrap_err();
        assert!(matches!(e, WitnessError::NoCosignature { .. }), "{e}");
        assert!(
            e.to_string().contains("witness.example.com/w1+8d66cf3f"),
            "{e}"
        );
    }

    #[test]
    fn key_hash_and_vkey() {
        let w = witness();
        // SHA-256(name ‖ 0x0A ‖ 0x04 ‖ key)[:4], computed here independently.
        use sha2::{Digest, Sha256};
        let mut h = Sha256::new();
        h.update(b"witness.example.com/w1\n\x04");
        h.update(w.verifier().public_key().as_bytes());
        let d = h.finalize();
        assert_eq!(w.key_hash(), u32::from_be_bytes([d[0], d[1], d[2], d[3]]));
        // Not the 0x01 note key's hash for the same name and key.
        let note_key = NoteSigner::from_seed("witness.example.com/w1", [9; 32]).unwrap();
        assert_ne!(note_key.key_hash(), w.key_hash());

        let vkey = w.vkey();
        let (name, rest) = vkey.split_once('+').unwrap();
        let (hash, key) = rest.split_once('+').unwrap();
        assert_eq!(name, "witness.example.com/w1");
        assert_eq!(hash, format!("{:08x}", w.key_hash()));
        let raw = STANDARD.decode(key).unwrap();
        assert_eq!((raw.len(), raw[0]), (33, 0x04));
        let v = CosignatureVerifier::parse(&vkey).unwrap();
        assert_eq!(v, w.verifier());
        assert_eq!(v.to_vkey(), vkey);
        assert_eq!((v.name(), v.key_hash()), (name, w.key_hash()));

        // A 0x01 (plain note) key is not a cosignature key.
        let e = CosignatureVerifier::parse(&note_key.verifier_key()).unwrap_err();
        assert!(e.to_string().contains("type 0x01"), "{e}");
        // A wrong stated hash.
        let wrong = format!("{name}+{:08x}+{key}", w.key_hash() ^ 1);
        let e = CosignatureVerifier::parse(&wrong).unwrap_err();
        assert!(e.to_string().contains("but the key's hash is"), "{e}");
        // A short key, a bad name, no separators.
        let short = format!("{name}+{hash}+{}", STANDARD.encode([4u8; 10]));
        assert!(matches!(
            CosignatureVerifier::parse(&short),
            Err(WitnessError::BadKey { .. })
        ));
        assert!(matches!(
            CosignatureVerifier::parse(&format!("a b+{hash}+{key}")),
            Err(WitnessError::Key(_))
        ));
        assert!(CosignatureVerifier::parse("nothing").is_err());
        assert!(matches!(
            CosignatureSigner::from_seed("", [0; 32]),
            Err(WitnessError::Key(_))
        ));
        let g = CosignatureSigner::generate("w").unwrap();
        assert_ne!(g.vkey(), CosignatureSigner::generate("w").unwrap().vkey());
        assert!(!format!("{g:?}").contains(&hex::encode(g.key.to_bytes())));
    }

    #[test]
    fn cosign_and_verify_round_trip() {
        let note = checkpoint();
        let w = witness();
        let body = note_body(&note).unwrap();
        assert!(body.ends_with("=\n") && !body.contains("\n\n"));
        let line = w.cosign(body, 1679315147);
        let c = w.verifier().verify_line(&line, body).unwrap().unwrap();
        assert_eq!(
            (c.timestamp, c.witness.as_str(), c.key_hash, c.line.as_str()),
            (
                1679315147,
                "witness.example.com/w1",
                w.key_hash(),
                line.as_str()
            )
        );
        // The line is key hash ‖ timestamp ‖ signature; the signature is over the message.
        let raw = STANDARD.decode(line.rsplit(' ').next().unwrap()).unwrap();
        assert_eq!(raw.len(), 4 + 8 + 64);
        assert_eq!(
            u32::from_be_bytes(raw[..4].try_into().unwrap()),
            w.key_hash()
        );
        assert_eq!(&raw[4..12], &1679315147u64.to_be_bytes());
        assert_eq!(&raw[12..], &c.signature);
        let sig = Signature::from_bytes(&c.signature);
        w.verifier()
            .public_key()
            .verify_strict(&cosigned_message(body, 1679315147), &sig)
            .unwrap();
        // Deterministic (Ed25519).
        assert_eq!(w.cosign(body, 1679315147), line);

        // Extension lines are part of the signed body.
        let ext = checkpoint_with(vec!["ext one".into()]);
        let ext_body = note_body(&ext).unwrap();
        let ext_line = w.cosign(ext_body, 5);
        assert!(w.verifier().verify_line(&ext_line, ext_body).is_ok());
        assert!(matches!(
            w.verifier().verify_line(&ext_line, body),
            Err(WitnessError::InvalidCosignature { .. })
        ));
    }

    #[test]
    fn tampered_body_wrong_key_and_wrong_timestamp_fail_precisely() {
        let note = checkpoint();
        let body = note_body(&note).unwrap();
        let w = witness();
        let line = w.cosign(body, 100);

        // Another body (a fork's size): InvalidCosignature at the stated time.
        let forked = body.replace("20852163", "20852164");
        match w.verifier().verify_line(&line, &forked) {
            Err(WitnessError::InvalidCosignature {
                witness, timestamp, ..
            }) => assert_eq!(
                (witness.as_str(), timestamp),
                ("witness.example.com/w1", 100)
            ),
            other => panic!("{other:?}"),
        }

        // A changed timestamp: same error, naming the altered time.
        let mut raw = STANDARD.decode(line.rsplit(' ').next().unwrap()).unwrap();
        raw[11] ^= 1;
        let moved = format!(
            "{SIG_PREFIX}witness.example.com/w1 {}",
            STANDARD.encode(&raw)
        );
        match w.verifier().verify_line(&moved, body) {
            Err(WitnessError::InvalidCosignature { timestamp, .. }) => assert_eq!(timestamp, 101),
            other => panic!("{other:?}"),
        }

        // A timestamp over 2^63 - 1.
        let far = w.cosign(body, 1 << 63);
        assert!(matches!(
            w.verifier().verify_line(&far, body),
            Err(WitnessError::TimestampOutOfRange { timestamp, .. }) if timestamp == 1 << 63
        ));

        // A truncated signature.
        raw.truncate(4 + 8 + 10);
        let short = format!(
            "{SIG_PREFIX}witness.example.com/w1 {}",
            STANDARD.encode(&raw)
        );
        assert!(matches!(
            w.verifier().verify_line(&short, body),
            Err(WitnessError::CosignatureLength { len: 18, .. })
        ));

        // Another key under the same name: a different key hash, so the line is not its
        // business; and if the hash is forced to match, the signature fails.
        let impostor = CosignatureSigner::from_seed("witness.example.com/w1", [8; 32]).unwrap();
        assert_eq!(impostor.verifier().verify_line(&line, body).unwrap(), None);
        let mut forged = STANDARD
            .decode(impostor.cosign(body, 100).rsplit(' ').next().unwrap())
            .unwrap();
        forged[..4].copy_from_slice(&w.key_hash().to_be_bytes());
        let forged = format!(
            "{SIG_PREFIX}witness.example.com/w1 {}",
            STANDARD.encode(&forged)
        );
        assert!(matches!(
            w.verifier().verify_line(&forged, body),
            Err(WitnessError::InvalidCosignature { .. })
        ));
        assert!(matches!(
            verify_cosignature_lines(&format!("{forged}\n"), body, &[w.verifier()]),
            Err(WitnessError::InvalidCosignature { .. })
        ));

        // Not a signature line at all.
        assert!(matches!(
            w.verifier().verify_line("- w AAAA", body),
            Err(WitnessError::MalformedLine { line: 1, .. })
        ));
    }

    #[test]
    fn answer_lines_skip_unknown_keys_and_require_one() {
        let note = checkpoint();
        let body = note_body(&note).unwrap();
        let w1 = witness();
        let w2 = CosignatureSigner::from_seed("witness.example.com/w2", [8; 32]).unwrap();
        let unknown = CosignatureSigner::from_seed("elsewhere.example/w", [7; 32]).unwrap();
        let answer = format!(
            "{}\n{}\n{}\n{}\n",
            unknown.cosign(body, 5),
            w1.cosign(body, 6),
            w2.cosign(body, 7),
            w1.cosign(body, 6),
        );
        let got = verify_cosignature_lines(&answer, body, &[w1.verifier(), w2.verifier()]).unwrap();
        assert_eq!(
            got.iter()
                .map(|c| (c.witness.as_str(), c.timestamp))
                .collect::<Vec<_>>(),
            [("witness.example.com/w1", 6), ("witness.example.com/w2", 7)]
        );
        // Only unknown keys: NoCosignature naming both sides.
        let e = verify_cosignature_lines(
            &format!("{}\n", unknown.cosign(body, 5)),
            body,
            &[w1.verifier()],
        )
        .unwrap_err();
        assert!(matches!(e, WitnessError::NoCosignature { .. }));
        assert!(
            e.to_string().contains("elsewhere.example/w+")
                && e.to_string().contains("witness.example.com/w1+"),
            "{e}"
        );
        assert!(matches!(
            verify_cosignature_lines("", body, &[w1.verifier()]),
            Err(WitnessError::NoCosignature { .. })
        ));
        // A malformed line is an error, naming it.
        assert!(matches!(
            verify_cosignature_lines(
                &format!("{}\ngarbage\n", w1.cosign(body, 6)),
                body,
                &[w1.verifier()]
            ),
            Err(WitnessError::MalformedLine { line: 2, .. })
        ));
    }

    #[test]
    fn cosigned_notes_still_open_with_the_ledger_key() {
        let note = checkpoint_with(vec!["an extension".into()]);
        let body = note_body(&note).unwrap();
        let w1 = witness();
        let w2 = CosignatureSigner::from_seed("witness.example.com/w2", [8; 32]).unwrap();
        let lines = vec![w1.cosign(body, 10), format!("{}\n", w2.cosign(body, 11))];
        let cosigned = cosigned_note(&note, &lines);
        assert!(cosigned.starts_with(&note));
        assert_eq!(cosigned.lines().count(), note.lines().count() + 2);
        // Appending the same lines again changes nothing.
        assert_eq!(cosigned_note(&cosigned, &lines), cosigned);

        // core::checkpoint ignores the witness lines and checks the ledger's.
        let cp = open_checkpoint(&cosigned, &[log().verifier()]).unwrap();
        assert_eq!((cp.tree_size, cp.extensions.len()), (20852163, 1));
        let opened = open_note(&cosigned, &[log().verifier()]).unwrap();
        assert_eq!(opened.text, body);
        assert_eq!((opened.verified.len(), opened.unverified.len()), (1, 2));

        let (cp2, cos) = verify_cosigned_note(
            &cosigned,
            &[log().verifier()],
            &[w1.verifier(), w2.verifier()],
        )
        .unwrap();
        assert_eq!(cp2, cp);
        assert_eq!(cos.len(), 2);
        assert_eq!(cos[0].line, lines[0]);

        // The ledger signature is still checked with witness lines present: another ledger
        // key fails, and so does a tampered ledger line.
        let other_log = NoteSigner::from_seed(ORIGIN, [4; 32]).unwrap();
        assert!(matches!(
            verify_cosigned_note(&cosigned, &[other_log.verifier()], &[w1.verifier()]),
            Err(WitnessError::Checkpoint(CheckpointError::Note(
                NoteError::Unverified { .. }
            )))
        ));
        let ledger_line = cosigned
            .split_once("\n\n")
            .unwrap()
            .1
            .lines()
            .next()
            .unwrap();
        let mut raw = STANDARD
            .decode(ledger_line.rsplit(' ').next().unwrap())
            .unwrap();
        raw[20] ^= 1;
        let bad_ledger = cosigned.replace(
            ledger_line,
            &format!("{SIG_PREFIX}{ORIGIN} {}", STANDARD.encode(&raw)),
        );
        assert!(matches!(
            verify_cosigned_note(&bad_ledger, &[log().verifier()], &[w1.verifier()]),
            Err(WitnessError::Checkpoint(CheckpointError::Note(
                NoteError::InvalidSignature { .. }
            )))
        ));
        assert!(open_checkpoint(&bad_ledger, &[log().verifier()]).is_err());

        // A cosignature over another checkpoint, appended here, fails by name.
        let other = checkpoint_with(vec!["another extension".into()]);
        let foreign = cosigned_note(&note, &[w1.cosign(note_body(&other).unwrap(), 10)]);
        assert!(open_checkpoint(&foreign, &[log().verifier()]).is_ok());
        assert!(matches!(
            verify_cosigned_note(&foreign, &[log().verifier()], &[w1.verifier()]),
            Err(WitnessError::InvalidCosignature { .. })
        ));
        // A checkpoint without cosignatures: NoCosignature.
        assert!(matches!(
            verify_cosigned_note(&note, &[log().verifier()], &[w1.verifier()]),
            Err(WitnessError::NoCosignature { .. })
        ));
    }

    #[test]
    fn add_checkpoint_bodies_round_trip() {
        let note = checkpoint();
        let body = add_checkpoint_body(20852014, &[[1; 32], [2; 32]], &note);
        assert!(body.starts_with("old 20852014\nAQEB"));
        let (old, proof, n) = parse_add_checkpoint_body(&body).unwrap();
        assert_eq!(
            (old, proof, n),
            (20852014, vec![[1; 32], [2; 32]], note.as_str())
        );
        let first = add_checkpoint_body(0, &[], &note);
        assert_eq!(first, format!("old 0\n\n{note}"));
        assert_eq!(parse_add_checkpoint_body(&first).unwrap().0, 0);

        for (bad, why) in [
            ("old 01\n\nx", "leading zeros"),
            ("old \n\nx", "leading zeros"),
            ("old -1\n\nx", "leading zeros"),
            ("old 99999999999999999999\n\nx", "64 bits"),
            ("new 1\n\nx", "line 1 is not"),
            ("old 1\nnot-base64\n\nx", "line 2: not base64"),
            ("old 1\nAQE=\n\nx", "line 2: not base64"),
            ("old 1\nx", "no empty line"),
            ("old 1\n\n", "no checkpoint"),
        ] {
            let e = parse_add_checkpoint_body(bad).unwrap_err().to_string();
            assert!(e.contains(why), "{bad:?}: {e}");
        }
        let too_many = add_checkpoint_body(1, &[[0; 32]; 64], &note);
        assert!(parse_add_checkpoint_body(&too_many)
            .unwrap_err()
            .to_string()
            .contains("more than 63"));
        assert!(parse_add_checkpoint_body(&add_checkpoint_body(1, &[[0; 32]; 63], &note)).is_ok());
    }

    #[test]
    fn answers_are_interpreted() {
        let note = checkpoint();
        let cp_body = note_body(&note).unwrap();
        let w = witness();
        let other = CosignatureSigner::from_seed("w2", [8; 32]).unwrap();
        let answer = format!("{}\n{}\n", other.cosign(cp_body, 5), w.cosign(cp_body, 6));
        match interpret_response(
            200,
            Some("text/plain; charset=utf-8"),
            &answer,
            cp_body,
            &[w.verifier()],
        )
        .unwrap()
        {
            AddCheckpointOutcome::Cosigned(c) => {
                assert_eq!((c.len(), c[0].timestamp), (1, 6))
            }
            other => panic!("{other:?}"),
        }
        // A 200 without our witness's cosignature is an error, not an outcome.
        assert!(matches!(
            interpret_response(
                200,
                None,
                &format!("{}\n", other.cosign(cp_body, 5)),
                cp_body,
                &[w.verifier()]
            ),
            Err(WitnessError::NoCosignature { .. })
        ));
        // 409 with a size.
        for ct in ["text/x.tlog.size", "Text/X.Tlog.Size; charset=utf-8"] {
            assert_eq!(
                interpret_response(409, Some(ct), "20852100\n", cp_body, &[w.verifier()]).unwrap(),
                AddCheckpointOutcome::Conflict {
                    witness_size: 20852100
                }
            );
        }
        assert_eq!(
            interpret_response(409, Some("text/x.tlog.size"), "0\n", cp_body, &[]).unwrap(),
            AddCheckpointOutcome::Conflict { witness_size: 0 }
        );
        for bad in ["", "\n", "12 \n", "012\n", "-1\n", "abc"] {
            assert!(
                matches!(
                    interpret_response(409, Some("text/x.tlog.size"), bad, cp_body, &[]),
                    Err(WitnessError::BadConflictBody { .. })
                ),
                "{bad:?}"
            );
        }
        // 409 without a size (same size, another root) and the rest are refusals.
        assert_eq!(
            interpret_response(409, Some("text/plain"), "root mismatch\n", cp_body, &[]).unwrap(),
            AddCheckpointOutcome::Refused {
                status: 409,
                body: "root mismatch\n".into()
            }
        );
        for status in [400, 403, 404, 422, 503] {
            assert_eq!(
                interpret_response(status, Some("text/plain"), "no", cp_body, &[w.verifier()])
                    .unwrap(),
                AddCheckpointOutcome::Refused {
                    status,
                    body: "no".into()
                }
            );
        }
        let long = "é".repeat(MAX_REFUSED_BODY);
        match interpret_response(500, None, &long, cp_body, &[]).unwrap() {
            AddCheckpointOutcome::Refused { body, .. } => {
                assert!(body.len() <= MAX_REFUSED_BODY && body.len() >= MAX_REFUSED_BODY - 1)
            }
            other => panic!("{other:?}"),
        }
    }
}
