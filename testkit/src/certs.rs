//! A throwaway PKI for TLS tests, made at test time with OpenSSL's command line (as the
//! test TSA in [`crate::tsa`] is): a CA, a server certificate for `127.0.0.1` and
//! `localhost`, and a client certificate for mutual TLS, all signed by that CA. Nothing
//! is downloaded and nothing outlives the directory given.

use std::path::{Path, PathBuf};

use crate::tsa::{genkey, issue, openssl, KeyKind};

/// The files of a test PKI (all PEM; keys unencrypted).
#[derive(Debug, Clone)]
pub struct TestCerts {
    dir: PathBuf,
}

impl TestCerts {
    /// Makes `ca.pem`/`ca.key`, `server.pem`/`server.key` (SAN IP:127.0.0.1,
    /// DNS:localhost; EKU serverAuth) and `client.pem`/`client.key` (EKU clientAuth) in
    /// `dir`, valid for a day. EC P-256 keys: quick to make on a loaded machine.
    ///
    /// # Errors
    /// The failing openssl command and its stderr.
    pub fn create(dir: &Path) -> Result<TestCerts, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let key = KeyKind::EcP256;
        genkey(dir, key, "ca.key")?;
        openssl(
            dir,
            &[
                "req",
                "-x509",
                "-new",
                "-key",
                "ca.key",
                "-subj",
                "/CN=ACE Test NATS CA",
                "-days",
                "2",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign,cRLSign",
            ],
        )?;
        issue(
            dir,
            key,
            "server",
            "localhost",
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = serverAuth\n\
             subjectAltName = IP:127.0.0.1, DNS:localhost\n",
            "1",
        )?;
        issue(
            dir,
            key,
            "client",
            "ace-test-client",
            "basicConstraints = critical, CA:FALSE\n\
             keyUsage = critical, digitalSignature\n\
             extendedKeyUsage = clientAuth\n",
            "1",
        )?;
        Ok(TestCerts {
            dir: dir.to_path_buf(),
        })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
    pub fn ca(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }
    pub fn server_cert(&self) -> PathBuf {
        self.dir.join("server.pem")
    }
    pub fn server_key(&self) -> PathBuf {
        self.dir.join("server.key")
    }
    pub fn client_cert(&self) -> PathBuf {
        self.dir.join("client.pem")
    }
    pub fn client_key(&self) -> PathBuf {
        self.dir.join("client.key")
    }
}
