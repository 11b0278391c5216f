//! A headless Chromium for tests, driven over WebDriver ([`fantoccini`]): each [`Browser`]
//! runs its own `/usr/bin/chromedriver` on a free loopback port with a fresh profile
//! directory, so tests run in parallel without sharing anything. Dropping it kills
//! chromedriver and every Chromium process under it, by PID, and removes the profile.
//!
//! Screenshots ([`Browser::screenshot`]) go to `<workspace>/target/test-artifacts/<test
//! name>/<name>.png`: always the workspace's own `target/`, also when `CARGO_TARGET_DIR`
//! points elsewhere, so that they are found (and kept by CI) in one known place.
//!
//! Needs the Debian packages chromium and chromium-driver (`scripts/services.sh` installs
//! them).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::error::{CmdError, NewSessionError};
use fantoccini::{Client, ClientBuilder};
use hyper_util::client::legacy::connect::HttpConnector;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::db::unique;
use crate::pgserver::free_port;

/// The WebDriver server.
pub const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The browser chromedriver starts.
pub const CHROMIUM: &str = "/usr/bin/chromium";

/// How long chromedriver may take to answer `/status`.
const READY_TIMEOUT: Duration = Duration::from_secs(20);
/// Ports tried when chromedriver cannot bind the one it was given (another test took it
/// between [`free_port`] and chromedriver's bind).
const PORT_ATTEMPTS: usize = 3;

/// Chromium's command line. Without the background-networking flags a headless Chromium
/// keeps trying to reach Google's services (updates, sync, field trials), which on a
/// machine with no network only costs time and log noise; `--disable-dev-shm-usage`
/// because containers have a tiny /dev/shm; `--no-sandbox` because tests run as root.
const CHROMIUM_ARGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    // A fixed size, so that screenshots of the same page compare.
    "--window-size=1280,800",
];

/// What failed, naming chromedriver's address once it has one.
#[derive(Debug, thiserror::Error)]
pub enum BrowserError {
    #[error(
        "cannot start {CHROMEDRIVER} for {addr} (install Debian package chromium-driver): {source}"
    )]
    Spawn {
        addr: String,
        source: std::io::Error,
    },
    #[error("chromedriver at {addr} {what}; its log {log}:\n{tail}")]
    NotReady {
        addr: String,
        what: String,
        log: String,
        tail: String,
    },
    #[error(
        "chromedriver at {addr}: cannot open a headless Chromium ({CHROMIUM}) session: {source}"
    )]
    Session {
        addr: String,
        source: Box<NewSessionError>,
    },
    #[error("chromedriver at {addr}: {what}: {source}")]
    Command {
        addr: String,
        what: String,
        // Boxed, as is the session error: fantoccini's errors are large and a Result
        // carrying them inline is too.
        source: Box<CmdError>,
    },
    #[error("chromedriver at {addr}: {what} {path}: {source}")]
    File {
        addr: String,
        what: &'static str,
        path: String,
        source: std::io::Error,
    },
}

/// A headless Chromium under its own chromedriver.
pub struct Browser {
    client: Client,
    driver: Child,
    addr: String,
    /// Holds the Chromium profile and chromedriver's log; removed on drop.
    dir: PathBuf,
    artifacts: PathBuf,
}

impl Browser {
    /// Starts chromedriver and opens a session; `test` names the folder its screenshots
    /// go to (usually the test function's name).
    ///
    /// # Errors
    /// [`BrowserError`] naming chromedriver's address and the step that failed.
    pub async fn start(test: &str) -> Result<Browser, BrowserError> {
        let dir = std::env::temp_dir().join(unique("ace-browser-"));
        let profile = dir.join("profile");
        let log = dir.join("chromedriver.log");
        std::fs::create_dir_all(&profile).map_err(|source| BrowserError::File {
            addr: "(not started)".into(),
            what: "creating the profile directory",
            path: profile.display().to_string(),
            source,
        })?;
        let mut attempt = 0;
        let (driver, addr) = loop {
            attempt += 1;
            let port = free_port();
            let addr = format!("http://127.0.0.1:{port}");
            let mut driver = match spawn_driver(port, &addr, &log) {
                Ok(d) => d,
                Err(e) => {
                    let _ = std::fs::remove_dir_all(&dir);
                    return Err(e);
                }
            };
            match wait_ready(&mut driver, port, &addr, &log).await {
                Ok(()) => break (driver, addr),
                Err((exited, e)) => {
                    kill_tree(&mut driver);
                    if !exited || attempt >= PORT_ATTEMPTS {
                        let _ = std::fs::remove_dir_all(&dir);
                        return Err(e);
                    }
                }
            }
        };
        // From here on, dropping `browser` cleans up whatever fails.
        let mut caps = serde_json::Map::new();
        caps.insert("browserName".into(), "chrome".into());
        let mut args: Vec<String> = CHROMIUM_ARGS.iter().map(|a| a.to_string()).collect();
        args.push(format!("--user-data-dir={}", profile.display()));
        caps.insert(
            "goog:chromeOptions".into(),
            serde_json::json!({ "binary": CHROMIUM, "args": args }),
        );
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(caps)
            .connect(&addr)
            .await;
        let client = match client {
            Ok(c) => c,
            Err(source) => {
                let mut driver = driver;
                kill_tree(&mut driver);
                let _ = std::fs::remove_dir_all(&dir);
                return Err(BrowserError::Session {
                    addr,
                    source: Box::new(source),
                });
            }
        };
        Ok(Browser {
            client,
            driver,
            addr,
            dir,
            artifacts: artifacts_dir(test),
        })
    }

    /// The WebDriver client: navigate, find, click, type.
    pub fn client(&self) -> &Client {
        &self.client
    }

    /// chromedriver's base URL (`http://127.0.0.1:PORT`).
    pub fn driver_url(&self) -> &str {
        &self.addr
    }

    /// chromedriver's process id.
    pub fn driver_pid(&self) -> u32 {
        self.driver.id()
    }

    /// The Chromium profile directory (`--user-data-dir`), removed on drop.
    pub fn profile_dir(&self) -> PathBuf {
        self.dir.join("profile")
    }

    /// Navigates to `url`.
    ///
    /// # Errors
    /// [`BrowserError::Command`] naming the URL.
    pub async fn goto(&self, url: &str) -> Result<(), BrowserError> {
        self.client
            .goto(url)
            .await
            .map_err(|source| self.command(format!("opening {url}"), source))
    }

    /// Saves a PNG of the viewport as `<workspace>/target/test-artifacts/<test>/<name>.png`
    /// (folders created) and returns its path.
    ///
    /// # Errors
    /// [`BrowserError`] naming the screenshot or the file.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf, BrowserError> {
        let png = self
            .client
            .screenshot()
            .await
            .map_err(|source| self.command(format!("taking screenshot {name}"), source))?;
        let path = self.artifacts.join(format!("{}.png", file_name(name)));
        let file_err = |what, source| BrowserError::File {
            addr: self.addr.clone(),
            what,
            path: path.display().to_string(),
            source,
        };
        std::fs::create_dir_all(&self.artifacts)
            .map_err(|e| file_err("creating the folder of screenshot", e))?;
        std::fs::write(&path, png).map_err(|e| file_err("writing screenshot", e))?;
        Ok(path)
    }

    /// Ends the session (chromedriver quits Chromium), then stops chromedriver. Dropping
    /// the browser without it kills both instead.
    ///
    /// # Errors
    /// [`BrowserError::Command`] when the session could not be ended; the processes are
    /// killed anyway.
    pub async fn close(self) -> Result<(), BrowserError> {
        self.client
            .clone()
            .close()
            .await
            .map_err(|source| self.command("ending the session".into(), source))
    }

    fn command(&self, what: String, source: CmdError) -> BrowserError {
        BrowserError::Command {
            addr: self.addr.clone(),
            what,
            source: Box::new(source),
        }
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        kill_tree(&mut self.driver);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn spawn_driver(port: u16, addr: &str, log: &Path) -> Result<Child, BrowserError> {
    Command::new(CHROMEDRIVER)
        .arg(format!("--port={port}"))
        .arg(format!("--log-path={}", log.display()))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|source| BrowserError::Spawn {
            addr: addr.to_owned(),
            source,
        })
}

/// Polls `GET /status` until chromedriver says it is ready. The error says whether
/// chromedriver exited (worth another port: the likely cause is a lost race for it).
async fn wait_ready(
    driver: &mut Child,
    port: u16,
    addr: &str,
    log: &Path,
) -> Result<(), (bool, BrowserError)> {
    let started = Instant::now();
    let fail = |exited: bool, what: String| {
        let tail = std::fs::read_to_string(log)
            .map(|t| {
                let lines: Vec<&str> = t.lines().collect();
                lines[lines.len().saturating_sub(20)..].join("\n")
            })
            .unwrap_or_else(|e| format!("(unreadable: {e})"));
        (
            exited,
            BrowserError::NotReady {
                addr: addr.to_owned(),
                what,
                log: log.display().to_string(),
                tail,
            },
        )
    };
    loop {
        match driver.try_wait() {
            Ok(Some(status)) => {
                return Err(fail(
                    true,
                    format!("exited ({status}) before answering /status"),
                ))
            }
            Ok(None) => {}
            Err(e) => return Err(fail(false, format!("cannot be waited for: {e}"))),
        }
        if status_ready(port).await {
            return Ok(());
        }
        if started.elapsed() > READY_TIMEOUT {
            return Err(fail(
                false,
                format!("did not answer /status with ready:true within {READY_TIMEOUT:?}"),
            ));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// One `GET /status`: true when chromedriver answers `"ready": true`.
async fn status_ready(port: u16) -> bool {
    let exchange = async {
        let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port)).await?;
        // HTTP/1.1: chromedriver refuses 1.0. It keeps the connection open whatever the
        // request says, so the answer is read only until it says ready.
        s.write_all(b"GET /status HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            .await?;
        let mut response = Vec::new();
        let mut buf = [0u8; 4096];
        loop {
            let n = s.read(&mut buf).await?;
            if n == 0 {
                return Ok(false);
            }
            response.extend_from_slice(&buf[..n]);
            // A substring, not a JSON parse: the one field that matters is unambiguous.
            let text: String = String::from_utf8_lossy(&response)
                .chars()
                .filter(|c| !c.is_whitespace())
                .collect();
            if text.contains("\"ready\":true") {
                return Ok(text.starts_with("HTTP/1.1200"));
            }
            if text.contains("\"ready\":false") {
                return Ok(false);
            }
        }
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), exchange).await,
        Ok(Ok::<bool, std::io::Error>(true))
    )
}

/// Kills `driver` and every process under it (Chromium's browser, zygote, renderers):
/// the tree is frozen first (SIGSTOP) so that nothing forks between listing and killing,
/// listed again, then killed (SIGKILL); chromedriver, our child, is reaped.
fn kill_tree(driver: &mut Child) {
    let root = driver.id();
    let mut pids = descendants(root);
    pids.push(root);
    signal("STOP", &pids);
    let mut again = descendants(root);
    again.push(root);
    let all: HashSet<u32> = pids.into_iter().chain(again).collect();
    signal("KILL", &all.iter().copied().collect::<Vec<_>>());
    let _ = driver.wait();
    // SIGKILL lands asynchronously: wait (briefly) until none runs, so that the profile
    // directory removed next is no longer being written.
    let deadline = Instant::now() + Duration::from_secs(3);
    while all.iter().any(|p| alive(*p)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether `pid` exists and is not a zombie (dead, waiting for its parent to reap it).
fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| {
            let rest = &stat[stat.rfind(')')? + 1..];
            rest.split_whitespace().next().map(|state| state != "Z")
        })
        .unwrap_or(false)
}

/// kill(1), as the other test harnesses do: no unsafe code for a signal. A PID that is
/// already gone makes kill exit non-zero after signalling the others, which is fine.
fn signal(name: &str, pids: &[u32]) {
    if pids.is_empty() {
        return;
    }
    let _ = Command::new("kill")
        .arg(format!("-{name}"))
        .arg("--")
        .args(pids.iter().map(u32::to_string))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Every process below `root`, from /proc.
pub fn descendants(root: u32) -> Vec<u32> {
    let mut children: HashMap<u32, Vec<u32>> = HashMap::new();
    if let Ok(dir) = std::fs::read_dir("/proc") {
        for e in dir.flatten() {
            let Some(pid) = e.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else {
                continue;
            };
            if let Some(ppid) = parent_of(pid) {
                children.entry(ppid).or_default().push(pid);
            }
        }
    }
    let mut out = Vec::new();
    let mut todo = vec![root];
    while let Some(p) = todo.pop() {
        if let Some(c) = children.get(&p) {
            out.extend(c);
            todo.extend(c);
        }
    }
    out
}

/// The parent PID in `/proc/PID/stat` (the field after the parenthesised command name,
/// which may itself hold spaces and parentheses, hence the last `)`).
fn parent_of(pid: u32) -> Option<u32> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 1..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

/// `<workspace>/target/test-artifacts/<test>`: testkit sits one level below the
/// workspace root, whichever crate's test uses it.
fn artifacts_dir(test: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap_or(Path::new(env!("CARGO_MANIFEST_DIR")))
        .join("target")
        .join("test-artifacts")
        .join(file_name(test))
}

/// `name` as one path component: anything but letters, digits, `-`, `_` and `.` becomes
/// `_` (a test path like `mod::test` included), and never `.` or `..`.
fn file_name(name: &str) -> String {
    let s: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect();
    match s.as_str() {
        "" | "." | ".." => "_".into(),
        _ => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_become_single_path_components() {
        assert_eq!(file_name("tests::a form"), "tests__a_form");
        assert_eq!(file_name("../x"), ".._x");
        assert_eq!(file_name(".."), "_");
        assert_eq!(file_name("echoed-1.v2"), "echoed-1.v2");
    }

    #[test]
    fn artifacts_go_under_the_workspace_target() {
        let d = artifacts_dir("t");
        assert!(d.ends_with("target/test-artifacts/t"), "{}", d.display());
        assert!(d
            .parent()
            .and_then(Path::parent)
            .and_then(Path::parent)
            .is_some_and(|ws| ws.join("Cargo.toml").exists() && ws.join("testkit").is_dir()));
    }

    #[test]
    fn the_parent_of_this_process_is_read_from_proc() {
        assert_eq!(
            parent_of(std::process::id()),
            Some(std::os::unix::process::parent_id())
        );
    }
}
