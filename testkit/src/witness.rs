//! A C2SP tlog-witness for tests: `POST /add-checkpoint` over plain HTTP/1.1 on a loopback
//! listener, following the spec's checks in its order, with a cosignature/v1 key.
//!
//! It trusts the ledger's note key for the origin named like the key (the ledger's
//! convention; [`TestWitness::trust`] adds other logs), keeps per origin the latest size
//! and root hash it cosigned, and checks the old size and the consistency proof and
//! records the new checkpoint under one lock, as the spec requires. [`TestWitness::set_down`]
//! makes it answer 503 for outage tests; [`TestWitness::requests`] counts requests.
//!
//! The server reads one request per connection (`Connection: close`) with a
//! `Content-Length` body; that is all the anchor's client and [`post`] need.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use ace_core::checkpoint::{open_note, Checkpoint, NoteError, NoteVerifier};
use ace_core::merkle::{verify_consistency_proof, Hash};
use ace_core::witness::{
    note_body, parse_add_checkpoint_body, CosignatureSigner, SIZE_CONTENT_TYPE,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Largest request head and body the test witness reads.
const MAX_HEAD: usize = 16 * 1024;
const MAX_BODY: usize = 1 << 20;

/// The witness's seed for [`TestWitness::new`]: tests get the same key every run.
const DEFAULT_SEED: [u8; 32] = [0x57; 32];

pub struct TestWitness {
    signer: CosignatureSigner,
    logs: Mutex<HashMap<String, Vec<NoteVerifier>>>,
    /// Per origin: the latest (size, root hash) cosigned.
    latest: Mutex<HashMap<String, (u64, Hash)>>,
    down: AtomicBool,
    requests: AtomicU64,
}

/// An HTTP answer as status, `Content-Type` and body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: u16,
    pub content_type: Option<String>,
    pub body: String,
}

impl Answer {
    fn new(status: u16, content_type: &str, body: impl Into<String>) -> Self {
        Answer {
            status,
            content_type: Some(content_type.to_string()),
            body: body.into(),
        }
    }

    fn text(status: u16, body: impl Into<String>) -> Self {
        Self::new(status, "text/plain; charset=utf-8", body)
    }
}

impl TestWitness {
    /// A witness named `name` (a fixed test key) trusting `ledger` for the origin
    /// `ledger.name()`.
    ///
    /// # Panics
    /// If `name` is not a valid key name: a test's mistake.
    pub fn new(name: &str, ledger: NoteVerifier) -> TestWitness {
        let signer = CosignatureSigner::from_seed(name, DEFAULT_SEED)
            .unwrap_or_else(|e| panic!("test witness name {name:?}: {e}"));
        Self::with_signer(signer, ledger)
    }

    /// As [`TestWitness::new`] with a given key.
    pub fn with_signer(signer: CosignatureSigner, ledger: NoteVerifier) -> TestWitness {
        let mut logs = HashMap::new();
        logs.insert(ledger.name().to_string(), vec![ledger]);
        TestWitness {
            signer,
            logs: Mutex::new(logs),
            latest: Mutex::new(HashMap::new()),
            down: AtomicBool::new(false),
            requests: AtomicU64::new(0),
        }
    }

    /// Trusts `key` for checkpoints of `origin` too.
    pub fn trust(&self, origin: &str, key: NoteVerifier) {
        lock(&self.logs)
            .entry(origin.to_string())
            .or_default()
            .push(key);
    }

    /// The witness's cosignature/v1 verifier key.
    pub fn vkey(&self) -> String {
        self.signer.vkey()
    }

    pub fn signer(&self) -> &CosignatureSigner {
        &self.signer
    }

    /// While down, every request is answered 503 (and still counted).
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// Requests received so far, whatever their answer.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::SeqCst)
    }

    /// The latest size and root hash cosigned for `origin`.
    pub fn latest(&self, origin: &str) -> Option<(u64, Hash)> {
        lock(&self.latest).get(origin).copied()
    }

    /// Forgets (`None`) or sets what the witness last cosigned for `origin`, e.g. to make
    /// it ahead of or behind the client.
    pub fn set_latest(&self, origin: &str, latest: Option<(u64, Hash)>) {
        let mut l = lock(&self.latest);
        match latest {
            Some(v) => l.insert(origin.to_string(), v),
            None => l.remove(origin),
        };
    }

    /// Serves `listener` until the task is dropped or aborted: one task per connection.
    pub async fn serve(self: Arc<Self>, listener: TcpListener) {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let w = Arc::clone(&self);
            tokio::spawn(async move {
                let _ = w.connection(stream).await;
            });
        }
    }

    /// Binds a loopback port and serves it in a task; returns its address.
    ///
    /// # Errors
    /// Binding fails.
    pub async fn spawn(self: Arc<Self>) -> std::io::Result<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(self.serve(listener));
        Ok(addr)
    }

    async fn connection(&self, mut stream: TcpStream) -> std::io::Result<()> {
        let answer = match read_request(&mut stream).await? {
            Ok((method, path, body)) => {
                self.requests.fetch_add(1, Ordering::SeqCst);
                if self.down.load(Ordering::SeqCst) {
                    Answer::text(503, "down for the test\n")
                } else if path != "/add-checkpoint" {
                    Answer::text(404, "no such endpoint\n")
                } else if method != "POST" {
                    Answer::text(405, "add-checkpoint takes POST\n")
                } else {
                    match String::from_utf8(body) {
                        Ok(body) => self.add_checkpoint(&body),
                        Err(_) => Answer::text(400, "the body is not UTF-8\n"),
                    }
                }
            }
            Err(answer) => {
                self.requests.fetch_add(1, Ordering::SeqCst);
                answer
            }
        };
        write_answer(&mut stream, &answer).await
    }

    /// tlog-witness `add-checkpoint`, the checks in the spec's order. Public so that tests
    /// can drive the logic without HTTP.
    pub fn add_checkpoint(&self, body: &str) -> Answer {
        let (old, proof, note) = match parse_add_checkpoint_body(body) {
            Ok(v) => v,
            Err(e) => return Answer::text(400, format!("{e}\n")),
        };
        // The origin, to pick the keys: from the unverified body.
        let Some(text) = note_body(note) else {
            return Answer::text(400, "the checkpoint is not a signed note\n");
        };
        let origin = match Checkpoint::parse_body(text) {
            Ok(cp) => cp.origin,
            Err(e) => return Answer::text(400, format!("{e}\n")),
        };
        let Some(keys) = lock(&self.logs).get(&origin).cloned() else {
            return Answer::text(404, format!("unknown origin {origin}\n"));
        };
        // Signatures by other keys are ignored; one by a trusted key must verify.
        let opened = match open_note(note, &keys) {
            Ok(opened) => opened,
            Err(
                e @ (NoteError::Unverified { .. }
                | NoteError::InvalidSignature { .. }
                | NoteError::AmbiguousVerifier { .. }),
            ) => return Answer::text(403, format!("{e}\n")),
            Err(e) => return Answer::text(400, format!("{e}\n")),
        };
        let cp = match Checkpoint::parse_body(&opened.text) {
            Ok(cp) if cp.origin == origin => cp,
            Ok(_) => return Answer::text(400, "the note has two blank lines\n"),
            Err(e) => return Answer::text(400, format!("{e}\n")),
        };
        if old > cp.tree_size {
            return Answer::text(
                400,
                format!(
                    "old size {old} is beyond the checkpoint's {}\n",
                    cp.tree_size
                ),
            );
        }
        // Check and record atomically.
        let mut latest = lock(&self.latest);
        let (size, root) = latest.get(&origin).copied().unwrap_or((0, [0; 32]));
        if old != size {
            return Answer::new(409, SIZE_CONTENT_TYPE, format!("{size}\n"));
        }
        if old == 0 {
            if !proof.is_empty() {
                return Answer::text(400, "the proof must be empty from size 0\n");
            }
        } else if old == cp.tree_size {
            if !proof.is_empty() {
                return Answer::text(422, "the proof must be empty between equal sizes\n");
            }
            if root != cp.root_hash {
                return Answer::text(
                    409,
                    format!("size {old} was cosigned with another root hash\n"),
                );
            }
        } else if let Err(e) =
            verify_consistency_proof(old, cp.tree_size, &proof, &root, &cp.root_hash)
        {
            return Answer::text(422, format!("{e}\n"));
        }
        latest.insert(origin, (cp.tree_size, cp.root_hash));
        drop(latest);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        Answer::text(200, format!("{}\n", self.signer.cosign(&opened.text, now)))
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads one request: `Ok(Ok((method, path, body)))`, `Ok(Err(answer))` for a request to
/// refuse (malformed, too large), `Err` for I/O.
async fn read_request(
    stream: &mut TcpStream,
) -> std::io::Result<Result<(String, String, Vec<u8>), Answer>> {
    let mut buf = Vec::with_capacity(4096);
    let head_end = loop {
        if let Some(at) = find(&buf, b"\r\n\r\n") {
            break at;
        }
        if buf.len() > MAX_HEAD {
            return Ok(Err(Answer::text(431, "request head too large\n")));
        }
        let mut chunk = [0u8; 4096];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let Ok(head) = std::str::from_utf8(&buf[..head_end]) else {
        return Ok(Err(Answer::text(400, "request head is not UTF-8\n")));
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or("").split(' ');
    let (Some(method), Some(target), Some(_version)) = (
        request_line.next(),
        request_line.next(),
        request_line.next(),
    ) else {
        return Ok(Err(Answer::text(400, "malformed request line\n")));
    };
    let mut length: Option<usize> = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            return Ok(Err(Answer::text(400, "malformed header line\n")));
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            match value.parse() {
                Ok(n) if n <= MAX_BODY => length = Some(n),
                Ok(_) => return Ok(Err(Answer::text(413, "body too large\n"))),
                Err(_) => return Ok(Err(Answer::text(400, "bad Content-Length\n"))),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return Ok(Err(Answer::text(411, "send a Content-Length\n")));
        }
    }
    let (method, target) = (method.to_string(), target.to_string());
    let length = length.unwrap_or(0);
    let mut body = buf.split_off(head_end + 4);
    while body.len() < length {
        let mut chunk = vec![0u8; (length - body.len()).min(64 * 1024)];
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        body.extend_from_slice(&chunk[..n]);
    }
    body.truncate(length);
    let path = target.split('?').next().unwrap_or("").to_string();
    Ok(Ok((method, path, body)))
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        409 => "Conflict",
        411 => "Length Required",
        413 => "Content Too Large",
        422 => "Unprocessable Entity",
        431 => "Request Header Fields Too Large",
        503 => "Service Unavailable",
        _ => "Status",
    }
}

async fn write_answer(stream: &mut TcpStream, a: &Answer) -> std::io::Result<()> {
    let mut out = format!("HTTP/1.1 {} {}\r\n", a.status, reason(a.status));
    if let Some(ct) = &a.content_type {
        out.push_str(&format!("Content-Type: {ct}\r\n"));
    }
    out.push_str(&format!(
        "Content-Length: {}\r\nConnection: close\r\n\r\n{}",
        a.body.len(),
        a.body
    ));
    stream.write_all(out.as_bytes()).await?;
    stream.shutdown().await
}

/// A minimal HTTP/1.1 client for tests: `POST http://{addr}{path}` with `body`, reading
/// the answer to the end of the connection (the test witness closes it).
///
/// # Errors
/// I/O, or an answer that is not HTTP/1.x with a status.
pub async fn post(addr: SocketAddr, path: &str, body: &str) -> std::io::Result<Answer> {
    let bad = |m: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, m.to_string());
    let mut s = TcpStream::connect(addr).await?;
    let req = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).await?;
    let at = find(&raw, b"\r\n\r\n").ok_or_else(|| bad("no end of the answer's head"))?;
    let head = std::str::from_utf8(&raw[..at]).map_err(|_| bad("head not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.strip_prefix("HTTP/1."))
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("no status line"))?;
    let content_type = lines
        .filter_map(|l| l.split_once(':'))
        .find(|(n, _)| n.eq_ignore_ascii_case("content-type"))
        .map(|(_, v)| v.trim().to_string());
    let body = String::from_utf8(raw.split_off(at + 4)).map_err(|_| bad("body not UTF-8"))?;
    Ok(Answer {
        status,
        content_type,
        body,
    })
}
