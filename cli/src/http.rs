//! A small HTTP/1.1 GET client for talking to a reader: bounded in time and in body size,
//! and every failure names the URL. `http://` or `https://` (rustls; the server's
//! certificate checked against the Mozilla roots compiled in, or against a CA file given
//! for a private PKI).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt as _;
use tokio_rustls::rustls;

/// Time allowed for one request, connection included.
pub const TIMEOUT: Duration = Duration::from_secs(30);
/// Largest body accepted: a whole entry with a large envelope fits.
pub const MAX_BODY: usize = 16 << 20;

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("--reader {url:?}: {reason}")]
    BadUrl { url: String, reason: String },
    #[error("GET {url}: {reason}")]
    Failed { url: String, reason: String },
    #[error("GET {url}: HTTP {status}: {detail}")]
    Status {
        url: String,
        status: u16,
        detail: String,
    },
}

/// A reader's base URL, checked once, with its TLS settings for `https://`.
#[derive(Clone, Debug)]
pub struct Reader {
    base: String,
    tls: Option<Arc<rustls::ClientConfig>>,
}

pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The `--reader-ca-file` option: PEM certificates to trust instead of the public roots.
fn tls_config(ca_file: Option<&Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
        Some(path) => {
            use rustls::pki_types::pem::PemObject as _;
            let certs = rustls::pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("--reader-ca-file {}: {e}", path.display()))?;
            for cert in certs {
                let cert = cert.map_err(|e| format!("--reader-ca-file {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("--reader-ca-file {}: {e}", path.display()))?;
            }
            if roots.is_empty() {
                return Err(format!(
                    "--reader-ca-file {}: no PEM certificate in it",
                    path.display()
                ));
            }
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

impl Reader {
    /// A reader at `base`; for `https://`, its certificate is checked against the public
    /// roots, or against the PEM certificates of `ca_file`.
    ///
    /// # Errors
    /// [`HttpError::BadUrl`] for anything but an `http(s)://host[:port][/prefix]` URL, or a
    /// CA file that cannot be read.
    pub fn with_ca(base: &str, ca_file: Option<&Path>) -> Result<Self, HttpError> {
        let bad = |reason: String| HttpError::BadUrl {
            url: base.to_owned(),
            reason,
        };
        let trimmed = base.trim_end_matches('/');
        let uri: hyper::Uri = trimmed
            .parse()
            .map_err(|e| bad(format!("not a URL: {e}")))?;
        let tls = match uri.scheme_str() {
            Some("http") => None,
            Some("https") => Some(Arc::new(tls_config(ca_file).map_err(bad)?)),
            _ => return Err(bad("must start with http:// or https://".into())),
        };
        if uri.host().is_none() {
            return Err(bad("no host".into()));
        }
        if uri.query().is_some() {
            return Err(bad("must not carry a query".into()));
        }
        Ok(Reader {
            base: trimmed.to_owned(),
            tls,
        })
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    /// GET `path` (with its query); any status is returned.
    ///
    /// # Errors
    /// [`HttpError::Failed`] naming the URL when the reader cannot be reached or answers
    /// with something that is not HTTP, or too much, or too late.
    pub async fn get(&self, path: &str) -> Result<Answer, HttpError> {
        let url = self.url(path);
        let failed = |reason: String| HttpError::Failed {
            url: url.clone(),
            reason,
        };
        tokio::time::timeout(TIMEOUT, fetch(&url, self.tls.clone()))
            .await
            .map_err(|_| failed(format!("no answer within {} s", TIMEOUT.as_secs())))?
            .map_err(failed)
    }

    /// GET `path` and require 200; a problem+json answer's detail is quoted in the error.
    ///
    /// # Errors
    /// As [`Reader::get`], and [`HttpError::Status`] for any other status.
    pub async fn get_ok(&self, path: &str) -> Result<Vec<u8>, HttpError> {
        let a = self.get(path).await?;
        if a.status == 200 {
            return Ok(a.body);
        }
        let detail = serde_json::from_slice::<serde_json::Value>(&a.body)
            .ok()
            .and_then(|v| v.get("detail").and_then(|d| d.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(&a.body).chars().take(300).collect());
        Err(HttpError::Status {
            url: self.url(path),
            status: a.status,
            detail,
        })
    }

    /// GET `path`, require 200 and JSON.
    ///
    /// # Errors
    /// As [`Reader::get_ok`], and [`HttpError::Failed`] for a body that is not JSON.
    pub async fn get_json(&self, path: &str) -> Result<serde_json::Value, HttpError> {
        let body = self.get_ok(path).await?;
        serde_json::from_slice(&body).map_err(|e| HttpError::Failed {
            url: self.url(path),
            reason: format!("the answer is not JSON: {e}"),
        })
    }
}

async fn fetch(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<Answer, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().unwrap_or("localhost").to_owned();
    let port = uri
        .port_u16()
        .unwrap_or(if tls.is_some() { 443 } else { 80 });
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let authority = uri.authority().map_or(host.clone(), |a| a.to_string());
    let path = uri.path_and_query().map_or("/", |p| p.as_str());
    match tls {
        None => get_over(stream, &authority, path).await,
        Some(config) => {
            // An IPv6 literal comes bracketed in the URI; the certificate names it bare.
            let name = host
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned();
            let server_name = rustls::pki_types::ServerName::try_from(name)
                .map_err(|e| format!("{host} is not a valid TLS server name: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(server_name, stream)
                .await
                .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
            get_over(tls, &authority, path).await
        }
    }
}

async fn get_over<S>(stream: S, authority: &str, path: &str) -> Result<Answer, String>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, authority)
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .map_err(|e| format!("building the request: {e}"))?;
    let resp = sender
        .send_request(req)
        .await
        .map_err(|e| format!("sending the request: {e}"))?;
    let status = resp.status().as_u16();
    let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| format!("reading the answer (at most {MAX_BODY} bytes): {e}"))?
        .to_bytes();
    Ok(Answer {
        status,
        body: body.to_vec(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn http_and_https_base_urls_are_taken() {
        assert!(Reader::with_ca("http://127.0.0.1:8081", None).is_ok());
        assert!(Reader::with_ca("https://reader.example", None).is_ok());
        let e = Reader::with_ca("https://h", Some(Path::new("/nonexistent/ca.pem")))
            .unwrap_err()
            .to_string();
        assert!(e.contains("--reader-ca-file /nonexistent/ca.pem"), "{e}");
        assert_eq!(
            Reader::with_ca("http://h:1/prefix/", None)
                .unwrap()
                .url("/v1/keys"),
            "http://h:1/prefix/v1/keys"
        );
        for bad in ["ftp://h", "h:8081", "http://", "http://h/?x=1", "not a url"] {
            let e = Reader::with_ca(bad, None).unwrap_err().to_string();
            assert!(e.contains("--reader"), "{bad}: {e}");
        }
    }
}
