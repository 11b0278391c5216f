//! Producer signing-key files: the 32-byte ed25519 seed as 64 hex characters on one line,
//! mode 0600.

use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::{bail, Context, Result};
use ed25519_dalek::{SigningKey, VerifyingKey};

/// Write a secret file readable by its owner only; refuses to overwrite.
pub fn write_secret(path: &Path, contents: &str) -> Result<()> {
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?;
    f.write_all(contents.as_bytes())
        .with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

pub fn read_signing_key(path: &Path) -> Result<SigningKey> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading key file {}", path.display()))?;
    let bytes = hex::decode(text.trim())
        .with_context(|| format!("key file {}: not hex", path.display()))?;
    let Ok(seed) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!(
            "key file {}: expected a 32-byte seed (64 hex characters), found {} bytes",
            path.display(),
            bytes.len()
        );
    };
    Ok(SigningKey::from_bytes(&seed))
}

pub fn parse_public_key(hexkey: &str) -> Result<VerifyingKey> {
    let bytes = hex::decode(hexkey.trim()).context("--public-key: not hex")?;
    let Ok(raw) = <[u8; 32]>::try_from(bytes.as_slice()) else {
        bail!(
            "--public-key: expected 32 bytes (64 hex characters), found {}",
            bytes.len()
        );
    };
    VerifyingKey::from_bytes(&raw).context("--public-key: not a valid ed25519 point")
}
