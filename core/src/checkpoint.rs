//! Checkpoints (C2SP tlog-checkpoint) in signed notes (C2SP signed-note), ed25519 only.
//!
//! Key formats are those of golang.org/x/mod/sumdb/note, so Go tooling (and witnesses)
//! can read the ledger's verifier key and notes:
//! - signer key file: `PRIVATE+KEY+<name>+<8 hex key hash>+<base64(0x01 ‖ 32-byte seed)>`
//! - verifier key:    `<name>+<8 hex key hash>+<base64(0x01 ‖ 32-byte public key)>`
//! - key hash: the first 4 bytes, big endian, of SHA-256(name ‖ 0x0A ‖ 0x01 ‖ public key).

use std::fmt;

use base64::engine::general_purpose::STANDARD;
use base64::Engine as _;
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use rand_core::{OsRng, RngCore as _};
use sha2::{Digest, Sha256};

use crate::ids::excerpt;
use crate::merkle::Hash;

/// Signature type byte of ed25519 in signed notes.
const ALG_ED25519: u8 = 0x01;
/// Largest note accepted or produced. C2SP asks verifiers to take at least 16 signatures
/// (post-quantum ones approach 5 kB each); a checkpoint body itself is ~100 bytes.
pub const MAX_NOTE_BYTES: usize = 1 << 20;
/// Most signature lines accepted in one note (Go's sumdb/note uses the same bound).
pub const MAX_NOTE_SIGNATURES: usize = 100;
pub(crate) const SIG_PREFIX: &str = "\u{2014} ";

/// Problems with note keys, note syntax and note signatures.
#[derive(Debug, thiserror::Error)]
pub enum NoteError {
    #[error("key name {name:?} is invalid: {reason}")]
    InvalidName { name: String, reason: &'static str },
    /// A signer key file or verifier key string that cannot be read.
    #[error("{what} is malformed: {reason}")]
    MalformedKey { what: &'static str, reason: String },
    #[error(
        "{what} for {name:?} states key hash {stated:08x}, but the key's hash is {computed:08x}"
    )]
    KeyHashMismatch {
        what: &'static str,
        name: String,
        stated: u32,
        computed: u32,
    },
    #[error("{what} uses signature type 0x{alg:02x}; only 0x01 (ed25519) is supported")]
    UnsupportedAlgorithm { what: &'static str, alg: u8 },
    #[error("cannot generate a key: the operating system's random source failed: {0}")]
    Random(String),
    /// The text handed to the signer would not make a valid note or checkpoint.
    #[error("cannot sign: {0}")]
    InvalidText(String),
    #[error("cannot sign: no signers given")]
    NoSigners,
    #[error("note is not UTF-8 (invalid byte at offset {0})")]
    NotUtf8(usize),
    #[error("note is {len} bytes; the limit is {max}")]
    TooLarge { len: usize, max: usize },
    #[error("malformed note: {0}")]
    Malformed(String),
    #[error("note has more than {max} signature lines")]
    TooManySignatures { max: usize },
    #[error("the trusted verifier keys hold two different keys named {name}+{key_hash:08x}")]
    AmbiguousVerifier { name: String, key_hash: u32 },
    /// A signature line names a trusted key but does not verify: the note is forged or
    /// corrupted.
    #[error("signature by trusted key {name}+{key_hash:08x} does not verify over the note text")]
    InvalidSignature { name: String, key_hash: u32 },
    #[error("note has no signature by a trusted key (trusted: {trusted}; signed by: {signed_by})")]
    Unverified { trusted: String, signed_by: String },
}

/// Problems with a checkpoint: its note, or its body.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error(transparent)]
    Note(#[from] NoteError),
    /// The (verified) note text is not a C2SP checkpoint body; `line` counts from 1.
    #[error("checkpoint body line {line}: {reason}")]
    Body { line: usize, reason: String },
}

/// Key names: non-empty, no Unicode whitespace, no `+` (the key-string separator), and no
/// control characters (notes may not contain them).
pub(crate) fn check_name(name: &str) -> Result<(), NoteError> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.contains('+') {
        "it contains '+'"
    } else if name.chars().any(char::is_whitespace) {
        "it contains whitespace"
    } else if name.chars().any(char::is_control) {
        "it contains control characters"
    } else {
        return Ok(());
    };
    Err(NoteError::InvalidName {
        name: excerpt(name),
        reason,
    })
}

fn key_hash(name: &str, public_key: &VerifyingKey) -> u32 {
    key_hash_for(name, ALG_ED25519, public_key)
}

/// SHA-256(name ‖ "\n" ‖ signature type ‖ public key)[:4], big-endian: the key hash of
/// every note signature type built on Ed25519 keys.
pub(crate) fn key_hash_for(name: &str, alg: u8, public_key: &VerifyingKey) -> u32 {
    let mut h = Sha256::new();
    h.update(name.as_bytes());
    h.update([b'\n', alg]);
    h.update(public_key.as_bytes());
    let d: [u8; 32] = h.finalize().into();
    u32::from_be_bytes([d[0], d[1], d[2], d[3]])
}

/// Splits `<8 hex>+<base64>` and decodes both halves.
pub(crate) fn split_hash_and_key(
    rest: &str,
    what: &'static str,
) -> Result<(u32, Vec<u8>), NoteError> {
    let malformed = |reason: &str| NoteError::MalformedKey {
        what,
        reason: reason.to_owned(),
    };
    let (hash16, key64) = rest
        .split_once('+')
        .ok_or_else(|| malformed("expected <name>+<8 hex key hash>+<base64 key>"))?;
    if hash16.len() != 8 || !hash16.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(malformed("the key hash is not 8 hex digits"));
    }
    let hash = u32::from_str_radix(hash16, 16)
        .map_err(|_| malformed("the key hash is not 8 hex digits"))?;
    let key = STANDARD
        .decode(key64)
        .map_err(|e| malformed(&format!("the key is not standard padded base64: {e}")))?;
    Ok((hash, key))
}

/// Splits the `0x01 ‖ 32 bytes` key encoding.
fn ed25519_key_bytes(key: &[u8], what: &'static str) -> Result<[u8; 32], NoteError> {
    match key.split_first() {
        None => Err(NoteError::MalformedKey {
            what,
            reason: "the key is empty".to_owned(),
        }),
        Some((&ALG_ED25519, rest)) => {
            <[u8; 32]>::try_from(rest).map_err(|_| NoteError::MalformedKey {
                what,
                reason: format!(
                    "an ed25519 key is 32 bytes after the type byte, found {}",
                    rest.len()
                ),
            })
        }
        Some((&alg, _)) => Err(NoteError::UnsupportedAlgorithm { what, alg }),
    }
}

/// The ledger's checkpoint signing key.
pub struct NoteSigner {
    name: String,
    key: SigningKey,
    key_hash: u32,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("key_hash", &format_args!("{:08x}", self.key_hash))
            .field("seed", &"<redacted>")
            .finish()
    }
}

impl NoteSigner {
    /// A fresh key from the operating system's random source.
    ///
    /// # Errors
    /// An invalid name, or a failing random source.
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = [0u8; 32];
        OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| NoteError::Random(e.to_string()))?;
        let signer = Self::from_seed(name, seed);
        seed.fill(0);
        signer
    }

    /// # Errors
    /// An invalid name.
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_name(name)?;
        let key = SigningKey::from_bytes(&seed);
        Ok(NoteSigner {
            key_hash: key_hash(name, &key.verifying_key()),
            name: name.to_owned(),
            key,
        })
    }

    /// Reads a Go note signer key (`PRIVATE+KEY+<name>+<hash>+<base64>`), surrounding
    /// whitespace ignored since key files usually end in a newline.
    ///
    /// # Errors
    /// Malformed text, a non-ed25519 key, or a key hash that does not match the key.
    pub fn parse_key_file(text: &str) -> Result<Self, NoteError> {
        const WHAT: &str = "signer key file";
        let rest =
            text.trim()
                .strip_prefix("PRIVATE+KEY+")
                .ok_or_else(|| NoteError::MalformedKey {
                    what: WHAT,
                    reason: "it does not start with PRIVATE+KEY+".to_owned(),
                })?;
        let (name, rest) = rest
            .split_once('+')
            .ok_or_else(|| NoteError::MalformedKey {
                what: WHAT,
                reason: "expected PRIVATE+KEY+<name>+<8 hex key hash>+<base64 key>".to_owned(),
            })?;
        check_name(name)?;
        let (stated, mut key) = split_hash_and_key(rest, WHAT)?;
        let seed = ed25519_key_bytes(&key, WHAT);
        key.fill(0);
        let signer = Self::from_seed(name, seed?)?;
        if signer.key_hash != stated {
            return Err(NoteError::KeyHashMismatch {
                what: WHAT,
                name: name.to_owned(),
                stated,
                computed: signer.key_hash,
            });
        }
        Ok(signer)
    }

    /// The key file text (no trailing newline). It holds the secret seed.
    pub fn to_key_file(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        let text = format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.key_hash,
            STANDARD.encode(raw)
        );
        raw.fill(0);
        text
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// The verifier key string to publish (`<name>+<hash>+<base64>`).
    pub fn verifier_key(&self) -> String {
        self.verifier().to_vkey()
    }

    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            key: self.key.verifying_key(),
            key_hash: self.key_hash,
        }
    }

    /// Adds this key's DSSE signature to `env` (the ledger signs the entries it appends
    /// itself, its key events, with the same keys as its checkpoints).
    pub fn sign_envelope(&self, env: &mut crate::envelope::Envelope) {
        env.add_signature(&self.key);
    }

    /// The signature line for `text`: `— <name> base64(key hash ‖ signature)\n`.
    fn signature_line(&self, text: &str) -> String {
        let sig = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(4 + 64);
        raw.extend_from_slice(&self.key_hash.to_be_bytes());
        raw.extend_from_slice(&sig.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// A trusted note verifier key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    key: VerifyingKey,
    key_hash: u32,
}

impl NoteVerifier {
    /// Reads `<name>+<8 hex key hash>+<base64(0x01 ‖ public key)>`.
    ///
    /// # Errors
    /// Malformed text, a non-ed25519 or invalid key, or a key hash that does not match.
    pub fn parse(vkey: &str) -> Result<Self, NoteError> {
        const WHAT: &str = "verifier key";
        let (name, rest) = vkey
            .split_once('+')
            .ok_or_else(|| NoteError::MalformedKey {
                what: WHAT,
                reason: "expected <name>+<8 hex key hash>+<base64 key>".to_owned(),
            })?;
        check_name(name)?;
        let (stated, key) = split_hash_and_key(rest, WHAT)?;
        let bytes = ed25519_key_bytes(&key, WHAT)?;
        let key = VerifyingKey::from_bytes(&bytes).map_err(|_| NoteError::MalformedKey {
            what: WHAT,
            reason: "the key is not a valid ed25519 public key".to_owned(),
        })?;
        let computed = key_hash(name, &key);
        if computed != stated {
            return Err(NoteError::KeyHashMismatch {
                what: WHAT,
                name: name.to_owned(),
                stated,
                computed,
            });
        }
        Ok(NoteVerifier {
            name: name.to_owned(),
            key,
            key_hash: computed,
        })
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn key_hash(&self) -> u32 {
        self.key_hash
    }

    pub fn public_key(&self) -> &VerifyingKey {
        &self.key
    }

    pub fn to_vkey(&self) -> String {
        let mut raw = [0u8; 33];
        raw[0] = ALG_ED25519;
        raw[1..].copy_from_slice(self.key.as_bytes());
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.key_hash,
            STANDARD.encode(raw)
        )
    }
}

/// A signature line of a note.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteSignature {
    pub name: String,
    pub key_hash: u32,
    /// The signature bytes after the 4-byte key hash.
    pub signature: Vec<u8>,
}

/// A note whose text is signed by at least one trusted key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedNote {
    /// The signed text, including its final newline.
    pub text: String,
    /// Signatures by trusted keys, all verified.
    pub verified: Vec<NoteSignature>,
    /// Signatures by keys not in the trusted set (ignored, as the spec requires).
    pub unverified: Vec<NoteSignature>,
}

/// Control characters other than newline are forbidden anywhere in a note.
fn find_control(text: &str) -> Option<usize> {
    text.bytes().position(|b| b < 0x20 && b != b'\n')
}

/// Signs `text` (which must end in a newline) as a C2SP signed note.
///
/// # Errors
/// No signers, or text that would not make a valid note (empty, no final newline, control
/// characters, too large).
pub fn sign_note(text: &str, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    if signers.is_empty() {
        return Err(NoteError::NoSigners);
    }
    if text.is_empty() || !text.ends_with('\n') {
        return Err(NoteError::InvalidText(
            "note text must be non-empty and end with a newline".to_owned(),
        ));
    }
    if let Some(at) = find_control(text) {
        return Err(NoteError::InvalidText(format!(
            "note text has a control character at byte {at}"
        )));
    }
    let mut note = String::with_capacity(text.len() + 1 + signers.len() * 128);
    note.push_str(text);
    note.push('\n');
    for s in signers {
        note.push_str(&s.signature_line(text));
    }
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge {
            len: note.len(),
            max: MAX_NOTE_BYTES,
        });
    }
    Ok(note)
}

/// [`open_note`] for raw bytes (e.g. an HTTP body): they must be UTF-8.
///
/// # Errors
/// As [`open_note`], plus [`NoteError::NotUtf8`].
pub fn open_note_bytes(note: &[u8], verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    let text = std::str::from_utf8(note).map_err(|e| NoteError::NotUtf8(e.valid_up_to()))?;
    open_note(text, verifiers)
}

/// Parses a signed note and verifies it against the trusted `verifiers`.
///
/// Every signature line whose name and key hash match a trusted key must verify; lines by
/// other keys are ignored; at least one trusted signature is required.
///
/// # Errors
/// The first problem found: size, syntax, an ambiguous trusted key set, a trusted
/// signature that fails, or no trusted signature at all.
pub fn open_note(note: &str, verifiers: &[NoteVerifier]) -> Result<OpenedNote, NoteError> {
    if note.len() > MAX_NOTE_BYTES {
        return Err(NoteError::TooLarge {
            len: note.len(),
            max: MAX_NOTE_BYTES,
        });
    }
    if let Some(at) = find_control(note) {
        return Err(NoteError::Malformed(format!(
            "control character at byte {at}"
        )));
    }
    // The text ends at the last blank line; it keeps its final newline.
    let split = note.rfind("\n\n").ok_or_else(|| {
        NoteError::Malformed("no blank line separates the text from the signatures".to_owned())
    })?;
    // `split` is the byte offset of an ASCII "\n\n", so both ranges are in bounds.
    let (Some(text), Some(sigs)) = (note.get(..=split), note.get(split + 2..)) else {
        return Err(NoteError::Malformed(
            "cannot split text from signatures".to_owned(),
        ));
    };
    if sigs.is_empty() {
        return Err(NoteError::Malformed(
            "there are no signature lines".to_owned(),
        ));
    }
    if !sigs.ends_with('\n') {
        return Err(NoteError::Malformed(
            "the last signature line does not end with a newline".to_owned(),
        ));
    }

    let mut verified: Vec<NoteSignature> = Vec::new();
    let mut unverified: Vec<NoteSignature> = Vec::new();
    for (n, line) in sigs.split_terminator('\n').enumerate() {
        if n >= MAX_NOTE_SIGNATURES {
            return Err(NoteError::TooManySignatures {
                max: MAX_NOTE_SIGNATURES,
            });
        }
        let sig = parse_signature_line(n + 1, line)?;
        let mut matching = verifiers
            .iter()
            .filter(|v| v.name == sig.name && v.key_hash == sig.key_hash);
        let Some(v) = matching.next() else {
            if !unverified.contains(&sig) {
                unverified.push(sig);
            }
            continue;
        };
        if matching.any(|other| other.key != v.key) {
            return Err(NoteError::AmbiguousVerifier {
                name: sig.name,
                key_hash: sig.key_hash,
            });
        }
        let ok = Signature::from_slice(&sig.signature)
            .is_ok_and(|s| v.key.verify_strict(text.as_bytes(), &s).is_ok());
        if !ok {
            return Err(NoteError::InvalidSignature {
                name: sig.name,
                key_hash: sig.key_hash,
            });
        }
        if !verified.contains(&sig) {
            verified.push(sig);
        }
    }

    if verified.is_empty() {
        let list = |names: Vec<String>| {
            if names.is_empty() {
                "none".to_owned()
            } else {
                names.join(", ")
            }
        };
        return Err(NoteError::Unverified {
            trusted: list(
                verifiers
                    .iter()
                    .map(|v| format!("{}+{:08x}", v.name, v.key_hash))
                    .collect(),
            ),
            signed_by: list(
                unverified
                    .iter()
                    .map(|s| format!("{}+{:08x}", s.name, s.key_hash))
                    .collect(),
            ),
        });
    }
    Ok(OpenedNote {
        text: text.to_owned(),
        verified,
        unverified,
    })
}

pub(crate) fn parse_signature_line(n: usize, line: &str) -> Result<NoteSignature, NoteError> {
    let malformed = |reason: &str| NoteError::Malformed(format!("signature line {n}: {reason}"));
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or_else(|| malformed("does not start with an em dash (U+2014) and a space"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or_else(|| malformed("expected \"— <key name> <base64 signature>\""))?;
    check_name(name).map_err(|e| malformed(&e.to_string()))?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|e| malformed(&format!("the signature is not standard padded base64: {e}")))?;
    let Some((hash, signature)) = raw.split_first_chunk::<4>() else {
        return Err(malformed(
            "the signature is shorter than its 4-byte key hash",
        ));
    };
    if signature.is_empty() {
        return Err(malformed("the signature is empty"));
    }
    Ok(NoteSignature {
        name: name.to_owned(),
        key_hash: u32::from_be_bytes(*hash),
        signature: signature.to_vec(),
    })
}

/// A C2SP tlog-checkpoint body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    pub origin: String,
    pub tree_size: u64,
    pub root_hash: Hash,
    /// Optional extension lines, without their newlines.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// `origin\nsize\nbase64(root)\n`, then each extension line and a newline.
    pub fn body(&self) -> String {
        let mut out = format!(
            "{}\n{}\n{}\n",
            self.origin,
            self.tree_size,
            STANDARD.encode(self.root_hash)
        );
        for ext in &self.extensions {
            out.push_str(ext);
            out.push('\n');
        }
        out
    }

    /// Parses a checkpoint body: at least three non-empty lines (origin, tree size in
    /// canonical decimal, standard base64 of a 32-byte root), optional non-empty extension
    /// lines, and a final newline.
    ///
    /// # Errors
    /// [`CheckpointError::Body`] naming the line.
    pub fn parse_body(text: &str) -> Result<Self, CheckpointError> {
        let body_err = |line: usize, reason: &str| CheckpointError::Body {
            line,
            reason: reason.to_owned(),
        };
        let Some(content) = text.strip_suffix('\n') else {
            return Err(body_err(
                text.split('\n').count(),
                "the body does not end with a newline",
            ));
        };
        let lines: Vec<&str> = content.split('\n').collect();
        for (i, line) in lines.iter().enumerate() {
            if line.is_empty() {
                return Err(body_err(
                    i + 1,
                    "empty line (checkpoint lines must be non-empty)",
                ));
            }
            if find_control(line).is_some() {
                return Err(body_err(i + 1, "control character"));
            }
        }
        let [origin, size, root, extensions @ ..] = lines.as_slice() else {
            return Err(body_err(
                lines.len() + 1,
                "a checkpoint has at least three lines: origin, tree size, root hash",
            ));
        };

        if !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(body_err(
                2,
                "the tree size must be decimal digits without leading zeros",
            ));
        }
        let tree_size: u64 = size
            .parse()
            .map_err(|_| body_err(2, "the tree size does not fit in 64 bits"))?;

        let root_bytes = STANDARD.decode(root).map_err(|e| {
            body_err(
                3,
                &format!("the root hash is not standard padded base64: {e}"),
            )
        })?;
        let root_hash = Hash::try_from(root_bytes.as_slice()).map_err(|_| {
            body_err(
                3,
                &format!("the root hash is {} bytes; expected 32", root_bytes.len()),
            )
        })?;

        Ok(Checkpoint {
            origin: (*origin).to_owned(),
            tree_size,
            root_hash,
            extensions: extensions.iter().map(|s| (*s).to_owned()).collect(),
        })
    }
}

/// Signs a checkpoint: its body, a blank line, then one line per signer,
/// `— <name> base64(4-byte key hash ‖ 64-byte signature)`.
///
/// # Errors
/// A checkpoint whose body would not parse back to itself (empty origin, newlines in a
/// field, empty extension lines), no signers, or a note over the size limit.
pub fn sign_checkpoint(cp: &Checkpoint, signers: &[&NoteSigner]) -> Result<String, NoteError> {
    let body = cp.body();
    match Checkpoint::parse_body(&body) {
        Ok(parsed) if parsed == *cp => sign_note(&body, signers),
        Ok(_) => Err(NoteError::InvalidText(
            "a checkpoint field contains a newline, so the body would not read back the same"
                .to_owned(),
        )),
        Err(e) => Err(NoteError::InvalidText(format!("invalid checkpoint: {e}"))),
    }
}

/// Opens a checkpoint note: verifies it with [`open_note`] and parses the body.
///
/// # Errors
/// [`CheckpointError::Note`] for signature or syntax problems, [`CheckpointError::Body`]
/// for a body that is not a checkpoint.
pub fn open_checkpoint(
    note: &str,
    verifiers: &[NoteVerifier],
) -> Result<Checkpoint, CheckpointError> {
    let opened = open_note(note, verifiers)?;
    Checkpoint::parse_body(&opened.text)
}

/// [`open_checkpoint`] for raw bytes, which must be UTF-8.
///
/// # Errors
/// As [`open_checkpoint`].
pub fn open_checkpoint_bytes(
    note: &[u8],
    verifiers: &[NoteVerifier],
) -> Result<Checkpoint, CheckpointError> {
    let opened = open_note_bytes(note, verifiers)?;
    Checkpoint::parse_body(&opened.text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    // golang.org/x/mod sumdb/note/note_test.go (TestNewVerifier, TestNewSigner, TestSign,
    // TestOpen): the published PeterNeumann and EnochRoot keys and signatures.
    const PETER_SKEY: &str =
        "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    const PETER_VKEY: &str = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    const ENOCH_VKEY: &str = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop";
    const GO_TEXT: &str = "If you think cryptography is the answer to your problem,\n\
                           then you don't know what your problem is.\n";
    const PETER_SIG: &str = "\u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";
    const ENOCH_SIG: &str = "\u{2014} EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox33WWd1RvMc+QQ=\n";

    fn signer() -> NoteSigner {
        NoteSigner::from_seed("example.com/log", [5; 32]).unwrap()
    }

    fn checkpoint() -> Checkpoint {
        Checkpoint {
            origin: "example.com/log".into(),
            tree_size: 12,
            root_hash: [0x42; 32],
            extensions: vec![],
        }
    }

    #[test]
    fn go_signer_and_verifier_keys() {
        let s = NoteSigner::parse_key_file(PETER_SKEY).unwrap();
        assert_eq!(s.name(), "PeterNeumann");
        assert_eq!(s.key_hash(), 0xc74f20a3);
        assert_eq!(s.verifier_key(), PETER_VKEY);
        assert_eq!(s.to_key_file(), PETER_SKEY);
        let v = NoteVerifier::parse(PETER_VKEY).unwrap();
        assert_eq!(v, s.verifier());
        assert_eq!(v.to_vkey(), PETER_VKEY);
        assert_eq!(
            NoteSigner::parse_key_file(&format!("{PETER_SKEY}\n"))
                .unwrap()
                .key_hash(),
            0xc74f20a3
        );
    }

    #[test]
    fn go_sign_reproduces_the_published_note() {
        let s = NoteSigner::parse_key_file(PETER_SKEY).unwrap();
        let note = sign_note(GO_TEXT, &[&s]).unwrap();
        assert_eq!(note, format!("{GO_TEXT}\n{PETER_SIG}"));
    }

    #[test]
    fn go_open_rules() {
        let peter = NoteVerifier::parse(PETER_VKEY).unwrap();
        let enoch = NoteVerifier::parse(ENOCH_VKEY).unwrap();
        let both = format!("{GO_TEXT}\n{PETER_SIG}{ENOCH_SIG}");

        let n = open_note(&both, std::slice::from_ref(&peter)).unwrap();
        assert_eq!(n.text, GO_TEXT);
        assert_eq!(n.verified.len(), 1);
        assert_eq!(n.verified[0].key_hash, 0xc74f20a3);
        assert_eq!(n.unverified.len(), 1);
        assert_eq!(n.unverified[0].name, "EnochRoot");

        let n = open_note(&both, &[peter.clone(), enoch.clone()]).unwrap();
        assert_eq!(n.verified.len(), 2);
        assert!(n.unverified.is_empty());

        assert!(matches!(
            open_note(&both, &[]),
            Err(NoteError::Unverified { .. })
        ));

        let too_many = format!("{GO_TEXT}\n{}", PETER_SIG.repeat(101));
        assert!(matches!(
            open_note(&too_many, std::slice::from_ref(&peter)),
            Err(NoteError::TooManySignatures { .. })
        ));

        let corrupted = format!("{GO_TEXT}\n{}ABCD{}", &PETER_SIG[..60], &PETER_SIG[60..]);
        assert!(matches!(
            open_note(&corrupted, std::slice::from_ref(&peter)),
            Err(NoteError::InvalidSignature {
                key_hash: 0xc74f20a3,
                ..
            })
        ));

        let bad_msgs = [
            GO_TEXT.to_owned(),
            format!("{GO_TEXT}\n"),
            format!("{GO_TEXT}\n{}", &PETER_SIG[..PETER_SIG.len() - 1]),
            format!("\u{1}{GO_TEXT}\n{PETER_SIG}"),
            format!("{GO_TEXT}\n\u{2014} Bad Name x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"),
            format!("{GO_TEXT}\n{PETER_SIG}Unexpected line.\n"),
        ];
        for msg in bad_msgs {
            assert!(
                matches!(
                    open_note(&msg, std::slice::from_ref(&peter)),
                    Err(NoteError::Malformed(_))
                ),
                "{msg:?}"
            );
        }
        let mut not_utf8 = format!("{GO_TEXT}\n{PETER_SIG}").into_bytes();
        not_utf8.insert(0, 0xff);
        assert!(matches!(
            open_note_bytes(&not_utf8, &[peter]),
            Err(NoteError::NotUtf8(0))
        ));
    }

    #[test]
    fn go_key_manglings_are_rejected() {
        // As TestNewVerifier / TestNewSigner: every proper substring and every single-byte
        // increment must fail.
        for key in [PETER_VKEY, PETER_SKEY] {
            let parse = |k: &str| {
                if key == PETER_VKEY {
                    NoteVerifier::parse(k).is_ok()
                } else {
                    NoteSigner::parse_key_file(k).is_ok()
                }
            };
            let b = key.as_bytes();
            for i in 0..=b.len() {
                for j in i + 1..=b.len() {
                    if (i, j) != (0, b.len()) {
                        let sub = std::str::from_utf8(&b[i..j]).unwrap();
                        assert!(!parse(sub), "{sub}");
                    }
                }
            }
            for i in 0..b.len() {
                let mut m = b.to_vec();
                m[i] += 1;
                let m = String::from_utf8(m).unwrap();
                assert!(!parse(&m), "{m}");
            }
        }
        // Go's hand-made cases: wrong key length and unknown algorithm, hashes adjusted.
        assert!(matches!(
            NoteVerifier::parse(
                "PeterNeumann+cc469956+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWBADKEY=="
            ),
            Err(NoteError::MalformedKey { .. })
        ));
        assert!(matches!(
            NoteVerifier::parse(
                "PeterNeumann+173116ae+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
            ),
            Err(NoteError::UnsupportedAlgorithm { alg: 0x65, .. })
        ));
    }

    #[test]
    fn key_file_round_trip_and_redacted_debug() {
        let s = NoteSigner::generate("example.com/log").unwrap();
        let back = NoteSigner::parse_key_file(&s.to_key_file()).unwrap();
        assert_eq!(back.verifier_key(), s.verifier_key());
        let dbg = format!("{s:?}");
        assert!(
            dbg.contains("redacted") && dbg.contains("example.com/log"),
            "{dbg}"
        );
        let seed_b64 = s.to_key_file().rsplit('+').next().unwrap().to_owned();
        assert!(!dbg.contains(&seed_b64));
        assert!(!dbg.contains(&hex::encode(s.key.as_bytes())));
    }

    #[test]
    fn invalid_names() {
        for bad in ["", "a+b", "a b", "a\u{a0}b", "a\u{1}b"] {
            assert!(
                matches!(
                    NoteSigner::from_seed(bad, [0; 32]),
                    Err(NoteError::InvalidName { .. })
                ),
                "{bad:?}"
            );
        }
    }

    #[test]
    fn body_format_and_round_trip() {
        let mut cp = checkpoint();
        assert_eq!(
            cp.body(),
            "example.com/log\n12\nQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkJCQkI=\n"
        );
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        cp.extensions = vec!["ext one".into(), "two".into()];
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
        cp.tree_size = 0;
        assert!(cp.body().contains("\n0\n"));
        assert_eq!(Checkpoint::parse_body(&cp.body()).unwrap(), cp);
    }

    #[test]
    fn body_errors_name_the_line() {
        let root = STANDARD.encode([0x42; 32]);
        let cases = [
            (format!("o\n1\n{root}"), 3),
            (format!("\n1\n{root}\n"), 1),
            (format!("o\n1\n{root}\n\nx\n"), 4),
            ("o\n1\n".to_owned(), 3),
            (format!("o\n01\n{root}\n"), 2),
            (format!("o\n-1\n{root}\n"), 2),
            (format!("o\n+1\n{root}\n"), 2),
            (format!("o\n18446744073709551616\n{root}\n"), 2),
            (format!("o\n1\n{}\n", root.trim_end_matches('=')), 3),
            (format!("o\n1\n{}\n", STANDARD.encode([1; 31])), 3),
            ("o\n1\n!!!!\n".to_owned(), 3),
            (format!("o\u{1}\n1\n{root}\n"), 1),
        ];
        for (text, want) in cases {
            match Checkpoint::parse_body(&text) {
                Err(CheckpointError::Body { line, .. }) => assert_eq!(line, want, "{text:?}"),
                other => panic!("{text:?}: {other:?}"),
            }
        }
        let max = format!("o\n18446744073709551615\n{root}\n");
        assert_eq!(Checkpoint::parse_body(&max).unwrap().tree_size, u64::MAX);
    }

    #[test]
    fn sign_and_open_checkpoint() {
        let s = signer();
        let other = NoteSigner::from_seed("witness.example", [6; 32]).unwrap();
        let note = sign_checkpoint(&checkpoint(), &[&s, &other]).unwrap();
        assert_eq!(
            open_checkpoint(&note, &[s.verifier()]).unwrap(),
            checkpoint()
        );
        assert_eq!(
            open_checkpoint(&note, &[other.verifier()]).unwrap(),
            checkpoint()
        );
        match open_checkpoint(&note, &[]) {
            Err(CheckpointError::Note(NoteError::Unverified { signed_by, .. })) => {
                assert!(signed_by.contains("example.com/log+"), "{signed_by}");
            }
            other => panic!("{other:?}"),
        }
        // Same name, different key: a different key hash, so an unknown signer.
        let impostor = NoteSigner::from_seed("example.com/log", [7; 32]).unwrap();
        assert!(matches!(
            open_checkpoint(&note, &[impostor.verifier()]),
            Err(CheckpointError::Note(NoteError::Unverified { .. }))
        ));
    }

    #[test]
    fn sign_checkpoint_refuses_bad_checkpoints() {
        let s = signer();
        for cp in [
            Checkpoint {
                origin: String::new(),
                ..checkpoint()
            },
            Checkpoint {
                origin: "a\nb".into(),
                ..checkpoint()
            },
            Checkpoint {
                extensions: vec![String::new()],
                ..checkpoint()
            },
            Checkpoint {
                extensions: vec!["a\n\nb".into()],
                ..checkpoint()
            },
            Checkpoint {
                origin: "a\tb".into(),
                ..checkpoint()
            },
        ] {
            assert!(
                matches!(sign_checkpoint(&cp, &[&s]), Err(NoteError::InvalidText(_))),
                "{cp:?}"
            );
        }
        assert!(matches!(
            sign_checkpoint(&checkpoint(), &[]),
            Err(NoteError::NoSigners)
        ));
    }

    #[test]
    fn ambiguous_verifiers_are_an_error_only_when_used() {
        let s = signer();
        let note = sign_checkpoint(&checkpoint(), &[&s]).unwrap();
        let mut twin = s.verifier();
        twin.key = SigningKey::from_bytes(&[8; 32]).verifying_key();
        assert!(matches!(
            open_checkpoint(&note, &[s.verifier(), twin.clone()]),
            Err(CheckpointError::Note(NoteError::AmbiguousVerifier { .. }))
        ));
        // An exact duplicate is harmless.
        assert!(open_checkpoint(&note, &[s.verifier(), s.verifier()]).is_ok());
    }

    #[test]
    fn verified_note_with_non_checkpoint_body_is_a_body_error() {
        let s = signer();
        let note = sign_note("just text\n", &[&s]).unwrap();
        assert!(matches!(
            open_checkpoint(&note, &[s.verifier()]),
            Err(CheckpointError::Body { .. })
        ));
    }

    #[test]
    fn size_bound() {
        let s = signer();
        let big = format!("{}\n", "x".repeat(MAX_NOTE_BYTES));
        assert!(matches!(
            sign_note(&big, &[&s]),
            Err(NoteError::TooLarge { .. })
        ));
        let note = format!("{big}\n{PETER_SIG}");
        assert!(matches!(
            open_note(&note, &[]),
            Err(NoteError::TooLarge { .. })
        ));
    }

    #[test]
    fn every_flipped_bit_is_rejected() {
        let s = signer();
        let note = sign_checkpoint(&checkpoint(), &[&s]).unwrap().into_bytes();
        for i in 0..note.len() {
            for bit in 0..8 {
                let mut m = note.clone();
                m[i] ^= 1 << bit;
                assert!(
                    open_checkpoint_bytes(&m, &[s.verifier()]).is_err(),
                    "byte {i} bit {bit}"
                );
            }
        }
    }

    proptest! {
        #[test]
        fn open_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
            let _ = open_checkpoint_bytes(&bytes, &[signer().verifier()]);
        }

        #[test]
        fn open_never_panics_on_mutated_notes(
            at in any::<prop::sample::Index>(),
            byte in any::<u8>(),
        ) {
            let s = signer();
            let mut note = sign_checkpoint(&checkpoint(), &[&s]).unwrap().into_bytes();
            let i = at.index(note.len());
            note[i] = byte;
            let _ = open_checkpoint_bytes(&note, &[s.verifier()]);
        }

        #[test]
        fn sign_open_round_trip(
            origin in "[a-z./]{1,40}",
            tree_size in any::<u64>(),
            root in any::<[u8; 32]>(),
            ext in proptest::collection::vec("[ -~]{1,20}", 0..3),
        ) {
            let cp = Checkpoint { origin, tree_size, root_hash: root, extensions: ext };
            let s = signer();
            let note = sign_checkpoint(&cp, &[&s]).unwrap();
            prop_assert_eq!(open_checkpoint(&note, &[s.verifier()]).unwrap(), cp);
        }
    }
}
