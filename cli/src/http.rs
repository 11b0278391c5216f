//! A small HTTP/1.1 GET client for talking to a reader: bounded in time and in body size,
//! and every failure names the URL. Plain `http://` only; reach an https reader through a
//! local TLS-terminating proxy or tunnel (docs/auditor.md).

use std::time::Duration;

use http_body_util::BodyExt as _;

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

/// A reader's base URL, checked once.
#[derive(Debug, Clone)]
pub struct Reader {
    base: String,
}

pub struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Reader {
    /// # Errors
    /// [`HttpError::BadUrl`] for anything but an `http://host[:port][/prefix]` URL.
    pub fn new(base: &str) -> Result<Self, HttpError> {
        let bad = |reason: String| HttpError::BadUrl {
            url: base.to_owned(),
            reason,
        };
        let trimmed = base.trim_end_matches('/');
        let uri: hyper::Uri = trimmed
            .parse()
            .map_err(|e| bad(format!("not a URL: {e}")))?;
        if uri.scheme_str() != Some("http") {
            return Err(bad(
                "only http:// URLs are supported (reach an https reader through a local proxy)"
                    .into(),
            ));
        }
        if uri.host().is_none() {
            return Err(bad("no host".into()));
        }
        if uri.query().is_some() {
            return Err(bad("must not carry a query".into()));
        }
        Ok(Reader {
            base: trimmed.to_owned(),
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
        tokio::time::timeout(TIMEOUT, fetch(&url))
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

async fn fetch(url: &str) -> Result<Answer, String> {
    let uri: hyper::Uri = url.parse().map_err(|e| format!("bad URL: {e}"))?;
    let host = uri.host().unwrap_or("localhost").to_owned();
    let port = uri.port_u16().unwrap_or(80);
    let stream = tokio::net::TcpStream::connect((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot connect to {host}:{port}: {e}"))?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(conn);
    let authority = uri.authority().map_or(host, |a| a.to_string());
    let req = hyper::Request::get(uri.path_and_query().map_or("/", |p| p.as_str()))
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
    fn only_plain_http_base_urls_are_taken() {
        assert!(Reader::new("http://127.0.0.1:8081").is_ok());
        assert_eq!(
            Reader::new("http://h:1/prefix/").unwrap().url("/v1/keys"),
            "http://h:1/prefix/v1/keys"
        );
        for bad in [
            "https://h",
            "h:8081",
            "http://",
            "http://h/?x=1",
            "not a url",
        ] {
            let e = Reader::new(bad).unwrap_err().to_string();
            assert!(e.contains("--reader"), "{bad}: {e}");
        }
    }
}
