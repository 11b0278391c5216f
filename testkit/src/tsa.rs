//! A real RFC 3161 time-stamp authority for tests: `openssl ts -reply` with a test CA and
//! a TSA certificate made at test time (OpenSSL's command line must be installed), served
//! over loopback HTTP if a test needs a URL.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

/// Key type of the TSA's certificate (the test CA's is the same).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Rsa2048,
    EcP256,
}

/// How [`TestTsa::resign`] signs a token's TSTInfo again, with `openssl cms -sign`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resign {
    /// With a certificate from the same CA that lacks extended key usage timeStamping
    /// (OpenSSL's `ts -reply` refuses such a signer, so it cannot make this token).
    NoTimeStampingEku,
    /// With the TSA's own certificate, naming it by subjectKeyIdentifier instead of
    /// issuerAndSerialNumber; still a valid token.
    TsaByKeyId,
    /// With the TSA's own certificate but no signingCertificate(V2) attribute, which RFC
    /// 3161 requires.
    TsaWithoutEssCertId,
}

pub struct TestTsa {
    dir: PathBuf,
    key: KeyKind,
    files: AtomicU64,
    down: Arc<AtomicBool>,
}

pub(crate) fn openssl(dir: &Path, args: &[&str]) -> Result<Vec<u8>, String> {
    let out = Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .map_err(|e| format!("running openssl {}: {e}", args.join(" ")))?;
    if !out.status.success() {
        return Err(format!(
            "openssl {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        ));
    }
    Ok(out.stdout)
}

fn write(path: &Path, bytes: impl AsRef<[u8]>) -> Result<(), String> {
    std::fs::write(path, bytes).map_err(|e| format!("{}: {e}", path.display()))
}

pub(crate) fn genkey(dir: &Path, key: KeyKind, out: &str) -> Result<(), String> {
    let opts: &[&str] = match key {
        KeyKind::Rsa2048 => &["-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"],
        KeyKind::EcP256 => &["-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"],
    };
    let mut args = vec!["genpkey"];
    args.extend_from_slice(opts);
    args.extend_from_slice(&["-out", out]);
    openssl(dir, &args).map(drop)
}

/// A certificate for `name` (key `name.key`, certificate `name.pem`) signed by the CA,
/// valid for `days` from now.
pub(crate) fn issue(
    dir: &Path,
    key: KeyKind,
    name: &str,
    cn: &str,
    ext: &str,
    days: &str,
) -> Result<(), String> {
    let (k, csr, e, pem) = (
        format!("{name}.key"),
        format!("{name}.csr"),
        format!("{name}.ext"),
        format!("{name}.pem"),
    );
    genkey(dir, key, &k)?;
    openssl(
        dir,
        &[
            "req",
            "-new",
            "-key",
            &k,
            "-subj",
            &format!("/CN={cn}"),
            "-out",
            &csr,
        ],
    )?;
    write(&dir.join(&e), ext)?;
    openssl(
        dir,
        &[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.pem",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-days",
            days,
            "-extfile",
            &e,
            "-out",
            &pem,
        ],
    )
    .map(drop)
}

impl TestTsa {
    /// A CA (self-signed) and a TSA certificate it signed (critical EKU timeStamping), in
    /// `dir`, with an `openssl ts` configuration: policy 1.2.3.4.1, SHA-256/384/512
    /// imprints accepted, genTime with milliseconds, ESSCertIDv2 over SHA-256.
    ///
    /// # Errors
    /// The failing openssl command and its stderr.
    pub fn create(dir: &Path, key: KeyKind) -> Result<TestTsa, String> {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
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
                "/CN=ACE Test TSA CA",
                "-days",
                "2",
                "-out",
                "ca.pem",
                "-addext",
                "basicConstraints=critical,CA:TRUE",
                "-addext",
                "keyUsage=critical,keyCertSign",
            ],
        )?;
        issue(
            dir,
            key,
            "tsa",
            "ACE Test TSA",
            "extendedKeyUsage = critical, timeStamping\nkeyUsage = critical, digitalSignature\n\
             subjectKeyIdentifier = hash\n",
            "1",
        )?;
        write(&dir.join("serial"), "01\n")?;
        write(
            &dir.join("ts.cnf"),
            format!(
                "[ tsa ]\ndefault_tsa = tsa1\n[ tsa1 ]\ndir = {}\nserial = $dir/serial\n\
                 crypto_device = builtin\nsigner_digest = sha256\ndefault_policy = 1.2.3.4.1\n\
                 other_policies = 1.2.3.4.2\ndigests = sha256, sha384, sha512\n\
                 accuracy = secs:1\nclock_precision_digits = 3\nordering = yes\n\
                 tsa_name = no\ness_cert_id_chain = no\ness_cert_id_alg = sha256\n",
                dir.display()
            ),
        )?;
        Ok(TestTsa {
            dir: dir.to_path_buf(),
            key,
            files: AtomicU64::new(0),
            down: Arc::new(AtomicBool::new(false)),
        })
    }

    /// The CA certificate (what the anchor and the audit trust).
    pub fn ca_pem(&self) -> String {
        std::fs::read_to_string(self.ca_path()).unwrap_or_default()
    }

    /// The TSA's own certificate (trusting it alone pins this TSA).
    pub fn tsa_cert_pem(&self) -> String {
        std::fs::read_to_string(self.tsa_cert_path()).unwrap_or_default()
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn ca_path(&self) -> PathBuf {
        self.dir.join("ca.pem")
    }

    pub fn tsa_cert_path(&self) -> PathBuf {
        self.dir.join("tsa.pem")
    }

    pub fn tsa_key_path(&self) -> PathBuf {
        self.dir.join("tsa.key")
    }

    pub fn config_path(&self) -> PathBuf {
        self.dir.join("ts.cnf")
    }

    /// Set to make [`TestTsa::serve`] answer 503, as a TSA in an outage would.
    pub fn down(&self) -> Arc<AtomicBool> {
        self.down.clone()
    }

    /// A fresh file name in the TSA's directory: concurrent replies must not share one.
    fn file(&self, ext: &str) -> String {
        format!("f{}.{ext}", self.files.fetch_add(1, Ordering::SeqCst))
    }

    /// `openssl ts -reply` to a DER TimeStampReq: the DER TimeStampResp (a refusal, such
    /// as an unaccepted digest or policy, is a response with status rejection).
    ///
    /// # Errors
    /// If openssl cannot answer at all (e.g. the query is not DER).
    pub fn reply(&self, query_der: &[u8]) -> Result<Vec<u8>, String> {
        let (q, r) = (self.file("tsq"), self.file("tsr"));
        write(&self.dir.join(&q), query_der)?;
        // The signer certificate goes into the token when the query has certReq; -chain
        // would add the CA too, which a verifier must not need from the token.
        openssl(
            &self.dir,
            &[
                "ts",
                "-reply",
                "-config",
                "ts.cnf",
                "-queryfile",
                &q,
                "-signer",
                "tsa.pem",
                "-inkey",
                "tsa.key",
                "-out",
                &r,
            ],
        )?;
        std::fs::read(self.dir.join(&r)).map_err(|e| e.to_string())
    }

    /// As [`TestTsa::reply`], but signed by a TSA certificate of the same CA whose validity
    /// ended in the second it began, before the token's genTime.
    ///
    /// # Errors
    /// The failing openssl command and its stderr.
    pub fn reply_after_certificate_expiry(&self, query_der: &[u8]) -> Result<Vec<u8>, String> {
        issue(
            &self.dir,
            self.key,
            "lapsed",
            "ACE Test TSA lapsed",
            "extendedKeyUsage = critical, timeStamping\nkeyUsage = critical, digitalSignature\n",
            "0",
        )?;
        // notAfter has whole seconds: past the next one, genTime is after it.
        std::thread::sleep(std::time::Duration::from_millis(1100));
        let (q, r) = (self.file("tsq"), self.file("tsr"));
        write(&self.dir.join(&q), query_der)?;
        openssl(
            &self.dir,
            &[
                "ts",
                "-reply",
                "-config",
                "ts.cnf",
                "-queryfile",
                &q,
                "-signer",
                "lapsed.pem",
                "-inkey",
                "lapsed.key",
                "-out",
                &r,
            ],
        )?;
        std::fs::read(self.dir.join(&r)).map_err(|e| e.to_string())
    }

    /// `openssl ts -verify` of a token over `data`, with the CA as the only root.
    ///
    /// # Errors
    /// What openssl said when it did not print "Verification: OK".
    pub fn verify_with_openssl(&self, data: &[u8], token_der: &[u8]) -> Result<(), String> {
        let (d, t) = (self.file("bin"), self.file("der"));
        write(&self.dir.join(&d), data)?;
        write(&self.dir.join(&t), token_der)?;
        let out = openssl(
            &self.dir,
            &[
                "ts",
                "-verify",
                "-data",
                &d,
                "-in",
                &t,
                "-token_in",
                "-CAfile",
                "ca.pem",
                "-untrusted",
                "tsa.pem",
            ],
        )?;
        let text = String::from_utf8_lossy(&out);
        if text.contains("Verification: OK") {
            Ok(())
        } else {
            Err(format!("openssl ts -verify said: {text}"))
        }
    }

    /// The TSTInfo of `token_der` signed again as `how` says (SHA-256, signer certificate
    /// included, OpenSSL's default signed attributes).
    ///
    /// # Errors
    /// The failing openssl command and its stderr.
    pub fn resign(&self, token_der: &[u8], how: Resign) -> Result<Vec<u8>, String> {
        let (t, tst, out) = (self.file("der"), self.file("tst"), self.file("der"));
        write(&self.dir.join(&t), token_der)?;
        openssl(
            &self.dir,
            &[
                "cms",
                "-verify",
                "-noverify",
                "-inform",
                "DER",
                "-in",
                &t,
                "-out",
                &tst,
            ],
        )?;
        let (cert, key) = match how {
            Resign::TsaByKeyId | Resign::TsaWithoutEssCertId => ("tsa.pem", "tsa.key"),
            Resign::NoTimeStampingEku => {
                if !self.dir.join("plain.pem").exists() {
                    issue(
                        &self.dir,
                        self.key,
                        "plain",
                        "ACE Test not a TSA",
                        "keyUsage = critical, digitalSignature\n",
                        "1",
                    )?;
                }
                ("plain.pem", "plain.key")
            }
        };
        let mut args = vec![
            "cms",
            "-sign",
            "-binary",
            "-nodetach",
            "-econtent_type",
            "1.2.840.113549.1.9.16.1.4",
            "-in",
            &tst,
            "-signer",
            cert,
            "-inkey",
            key,
            "-md",
            "sha256",
            "-outform",
            "DER",
            "-out",
            &out,
        ];
        if how == Resign::TsaByKeyId {
            args.push("-keyid");
        }
        // -cades adds signingCertificateV2 (ESSCertIDv2 over SHA-256).
        if how != Resign::TsaWithoutEssCertId {
            args.push("-cades");
        }
        openssl(&self.dir, &args)?;
        std::fs::read(self.dir.join(&out)).map_err(|e| e.to_string())
    }

    /// A loopback HTTP/1.1 TSA until the task is dropped: `POST` with `Content-Type:
    /// application/timestamp-query` gets `200 application/timestamp-reply`; anything else
    /// 405/415; every request 503 while [`TestTsa::down`] is set.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        while let Ok((stream, _)) = listener.accept().await {
            let tsa = self.clone();
            tokio::spawn(async move {
                // A client that hangs up or sends junk only ends its own connection.
                let _ = tsa.connection(stream).await;
            });
        }
    }

    async fn connection(self: Arc<Self>, stream: TcpStream) -> std::io::Result<()> {
        let (read, mut write) = stream.into_split();
        let mut read = BufReader::new(read);
        loop {
            let mut line = String::new();
            if read.read_line(&mut line).await? == 0 {
                return Ok(());
            }
            let method = line
                .split_whitespace()
                .next()
                .unwrap_or_default()
                .to_string();
            let (mut length, mut content_type, mut close) = (0usize, String::new(), false);
            loop {
                let mut h = String::new();
                if read.read_line(&mut h).await? == 0 {
                    return Ok(());
                }
                let h = h.trim_end();
                if h.is_empty() {
                    break;
                }
                let Some((name, value)) = h.split_once(':') else {
                    continue;
                };
                let value = value.trim();
                match name.trim().to_ascii_lowercase().as_str() {
                    "content-length" => length = value.parse().unwrap_or(0),
                    "content-type" => content_type = value.to_ascii_lowercase(),
                    "connection" => close = value.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
            if length > 1 << 20 {
                let head = "HTTP/1.1 413 Content Too Large\r\nContent-Length: 0\r\n\
                            Connection: close\r\n\r\n";
                return write.write_all(head.as_bytes()).await;
            }
            let mut body = vec![0u8; length];
            read.read_exact(&mut body).await?;
            let (status, ctype, out) = if self.down.load(Ordering::SeqCst) {
                (
                    "503 Service Unavailable",
                    "text/plain",
                    b"TSA down".to_vec(),
                )
            } else if method != "POST" {
                (
                    "405 Method Not Allowed",
                    "text/plain",
                    b"POST only".to_vec(),
                )
            } else if content_type != "application/timestamp-query" {
                (
                    "415 Unsupported Media Type",
                    "text/plain",
                    b"application/timestamp-query only".to_vec(),
                )
            } else {
                let tsa = self.clone();
                match tokio::task::spawn_blocking(move || tsa.reply(&body)).await {
                    Ok(Ok(r)) => ("200 OK", "application/timestamp-reply", r),
                    Ok(Err(e)) => ("400 Bad Request", "text/plain", e.into_bytes()),
                    Err(e) => (
                        "500 Internal Server Error",
                        "text/plain",
                        e.to_string().into_bytes(),
                    ),
                }
            };
            let head = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {}\r\n{}\r\n",
                out.len(),
                if close { "Connection: close\r\n" } else { "" }
            );
            write.write_all(head.as_bytes()).await?;
            write.write_all(&out).await?;
            if close {
                return Ok(());
            }
        }
    }
}
