//! Operator accounts, sessions, CSRF tokens and login rate limiting.
//!
//! Accounts come from a TOML file of argon2 PHC hashes (no password is ever stored or
//! logged in the clear). Sessions live in memory: a restart logs everyone out, which is
//! the safe failure. The cookie holds a random token; the server keeps only its SHA-256,
//! so a leaked memory dump or log line cannot be replayed as a cookie.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::password_hash::phc::PasswordHash;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::Argon2;
use rand::RngCore;
use serde::Deserialize;
use sha2::{Digest, Sha256};

pub const SESSION_COOKIE: &str = "ace_session";
pub const LOGIN_CSRF_COOKIE: &str = "ace_login_csrf";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Sees everything, acts on nothing.
    Viewer,
    /// May also retry and discard DLQ items.
    Operator,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Viewer => "viewer",
            Role::Operator => "operator",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum UsersError {
    #[error("users file {path}: cannot read it: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("users file {path}: {why}")]
    Parse { path: String, why: String },
    #[error("users file {path}: user {name:?}: {why}")]
    User {
        path: String,
        name: String,
        why: String,
    },
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UsersFile {
    #[serde(default)]
    user: Vec<UserSpec>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserSpec {
    name: String,
    role: Role,
    password_hash: String,
}

#[derive(Clone)]
struct Account {
    role: Role,
    hash: String,
}

/// The operator accounts.
pub struct Users {
    accounts: HashMap<String, Account>,
    /// Verified against when the name is unknown, so that a wrong name costs as much time
    /// as a wrong password and names cannot be probed by timing.
    decoy: String,
}

impl std::fmt::Debug for Users {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Users")
            .field("accounts", &self.accounts.len())
            .finish_non_exhaustive()
    }
}

/// A PHC argon2 hash of `password` with a fresh random salt.
pub fn hash_password(password: &str) -> Result<String, String> {
    Argon2::default()
        .hash_password(password.as_bytes())
        .map(|h| h.to_string())
        .map_err(|e| format!("hashing the password: {e}"))
}

fn valid_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'@'))
}

impl Users {
    pub fn load(path: &Path) -> Result<Users, UsersError> {
        let p = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| UsersError::Read {
            path: p.clone(),
            source,
        })?;
        Users::parse(&text, &p)
    }

    pub fn parse(text: &str, path: &str) -> Result<Users, UsersError> {
        let file: UsersFile = toml::from_str(text).map_err(|e| UsersError::Parse {
            path: path.into(),
            why: e.to_string(),
        })?;
        if file.user.is_empty() {
            return Err(UsersError::Parse {
                path: path.into(),
                why: "no [[user]] entries: nobody could log in".into(),
            });
        }
        let mut accounts = HashMap::new();
        for u in file.user {
            let bad = |why: &str| UsersError::User {
                path: path.into(),
                name: u.name.clone(),
                why: why.into(),
            };
            if !valid_name(&u.name) {
                return Err(bad("names are 1-64 characters of letters, digits, - _ . @"));
            }
            match PasswordHash::new(&u.password_hash) {
                Ok(h) if h.algorithm.as_str().starts_with("argon2") => {}
                Ok(h) => {
                    return Err(bad(&format!(
                        "password_hash uses {}, not argon2",
                        h.algorithm.as_str()
                    )))
                }
                Err(e) => {
                    return Err(bad(&format!(
                        "password_hash is not a PHC string ({e}); make one with `ace-dashboard hash-password`"
                    )))
                }
            }
            if accounts.contains_key(&u.name) {
                return Err(bad("listed twice"));
            }
            accounts.insert(
                u.name,
                Account {
                    role: u.role,
                    hash: u.password_hash,
                },
            );
        }
        let decoy =
            hash_password("decoy password, never valid").map_err(|why| UsersError::Parse {
                path: path.into(),
                why,
            })?;
        Ok(Users { accounts, decoy })
    }

    /// The account's role when the password is right. Slow on purpose (argon2); call it
    /// off the async runtime.
    pub fn check(&self, name: &str, password: &str) -> Option<Role> {
        let (hash, role) = match self.accounts.get(name) {
            Some(a) => (a.hash.as_str(), Some(a.role)),
            None => (self.decoy.as_str(), None),
        };
        let parsed = PasswordHash::new(hash).ok()?;
        let ok = Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok();
        if ok {
            role
        } else {
            None
        }
    }
}

/// A random token, 32 bytes as hex.
pub fn random_token() -> String {
    let mut b = [0u8; 32];
    rand::thread_rng().fill_bytes(&mut b);
    hex::encode(b)
}

/// Equal without an early exit, so comparing CSRF tokens leaks no prefix by timing.
pub fn same_token(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

fn token_key(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// A logged-in operator, as handlers see it.
#[derive(Debug, Clone)]
pub struct Session {
    pub user: String,
    pub role: Role,
    /// Must come back with every POST.
    pub csrf: String,
    created: Instant,
    last_used: Instant,
}

/// Sessions by the hash of their cookie token.
pub struct Sessions {
    map: Mutex<HashMap<[u8; 32], Session>>,
    idle: Duration,
    max: Duration,
}

/// More sessions than this and the oldest are dropped: memory stays bounded even if
/// someone logs in in a loop.
const MAX_SESSIONS: usize = 10_000;

impl Sessions {
    pub fn new(idle: Duration, max: Duration) -> Sessions {
        Sessions {
            map: Mutex::new(HashMap::new()),
            idle,
            max,
        }
    }

    /// A new session; returns the cookie token and the session.
    pub fn create(&self, user: &str, role: Role) -> (String, Session) {
        let token = random_token();
        let now = Instant::now();
        let s = Session {
            user: user.into(),
            role,
            csrf: random_token(),
            created: now,
            last_used: now,
        };
        if let Ok(mut m) = self.map.lock() {
            m.retain(|_, v| {
                now.duration_since(v.last_used) < self.idle
                    && now.duration_since(v.created) < self.max
            });
            if m.len() >= MAX_SESSIONS {
                if let Some(oldest) = m.iter().min_by_key(|(_, v)| v.created).map(|(k, _)| *k) {
                    m.remove(&oldest);
                }
            }
            m.insert(token_key(&token), s.clone());
        }
        (token, s)
    }

    /// The live session for a cookie token, touched; expired ones are removed.
    pub fn get(&self, token: &str) -> Option<Session> {
        let key = token_key(token);
        let now = Instant::now();
        let mut m = self.map.lock().ok()?;
        let s = m.get_mut(&key)?;
        if now.duration_since(s.last_used) >= self.idle || now.duration_since(s.created) >= self.max
        {
            m.remove(&key);
            return None;
        }
        s.last_used = now;
        Some(s.clone())
    }

    pub fn remove(&self, token: &str) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&token_key(token));
        }
    }

    pub fn count(&self) -> usize {
        self.map.lock().map(|m| m.len()).unwrap_or(0)
    }
}

/// Failed logins per key (client address, account name) in a sliding window.
pub struct LoginLimiter {
    failures: Mutex<HashMap<String, VecDeque<Instant>>>,
    max: usize,
    window: Duration,
}

const MAX_TRACKED: usize = 100_000;

impl LoginLimiter {
    pub fn new(max: usize, window: Duration) -> LoginLimiter {
        LoginLimiter {
            failures: Mutex::new(HashMap::new()),
            max,
            window,
        }
    }

    /// How long until `keys` may try again, if any of them is over the limit.
    pub fn blocked(&self, keys: &[&str]) -> Option<Duration> {
        let now = Instant::now();
        let m = self.failures.lock().ok()?;
        keys.iter()
            .filter_map(|k| {
                let q = m.get(*k)?;
                let recent: Vec<&Instant> = q
                    .iter()
                    .filter(|t| now.duration_since(**t) < self.window)
                    .collect();
                if recent.len() >= self.max {
                    recent
                        .first()
                        .map(|first| self.window.saturating_sub(now.duration_since(**first)))
                } else {
                    None
                }
            })
            .max()
    }

    pub fn fail(&self, keys: &[&str]) {
        let now = Instant::now();
        if let Ok(mut m) = self.failures.lock() {
            if m.len() >= MAX_TRACKED {
                m.retain(|_, q| {
                    q.back()
                        .is_some_and(|t| now.duration_since(*t) < self.window)
                });
            }
            for k in keys {
                let q = m.entry((*k).to_string()).or_default();
                while q
                    .front()
                    .is_some_and(|t| now.duration_since(*t) >= self.window)
                {
                    q.pop_front();
                }
                q.push_back(now);
                // Only the last `max` matter for the decision.
                while q.len() > self.max {
                    q.pop_front();
                }
            }
        }
    }

    pub fn succeed(&self, keys: &[&str]) {
        if let Ok(mut m) = self.failures.lock() {
            for k in keys {
                m.remove(*k);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn users() -> Users {
        let op = hash_password("correct horse").expect("hash");
        let vi = hash_password("battery staple").expect("hash");
        Users::parse(
            &format!(
                "[[user]]\nname = \"alice\"\nrole = \"operator\"\npassword_hash = \"{op}\"\n\
                 [[user]]\nname = \"victor\"\nrole = \"viewer\"\npassword_hash = \"{vi}\"\n"
            ),
            "users.toml",
        )
        .expect("users")
    }

    #[test]
    fn passwords_are_checked_against_argon2_hashes() {
        let u = users();
        assert_eq!(u.check("alice", "correct horse"), Some(Role::Operator));
        assert_eq!(u.check("victor", "battery staple"), Some(Role::Viewer));
        assert_eq!(u.check("alice", "battery staple"), None);
        assert_eq!(u.check("mallory", "correct horse"), None);
    }

    #[test]
    fn a_bad_users_file_is_refused_naming_the_user() {
        let e = Users::parse(
            "[[user]]\nname = \"bob\"\nrole = \"operator\"\npassword_hash = \"hunter2\"\n",
            "u.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("\"bob\"") && e.contains("PHC"), "{e}");
        let e = Users::parse("", "u.toml").unwrap_err().to_string();
        assert!(e.contains("no [[user]]"), "{e}");
        let e = Users::parse(
            "[[user]]\nname = \"bob\"\nrole = \"admin\"\npassword_hash = \"x\"\n",
            "u.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("admin"), "{e}");
    }

    #[test]
    fn sessions_expire_when_idle() {
        let s = Sessions::new(Duration::from_millis(50), Duration::from_secs(60));
        let (token, sess) = s.create("alice", Role::Operator);
        assert_eq!(s.get(&token).map(|x| x.csrf), Some(sess.csrf));
        assert!(s.get("not-a-token").is_none());
        std::thread::sleep(Duration::from_millis(80));
        assert!(s.get(&token).is_none());
    }

    #[test]
    fn logins_are_limited_per_key() {
        let l = LoginLimiter::new(3, Duration::from_secs(60));
        for _ in 0..2 {
            l.fail(&["ip:1", "user:alice"]);
        }
        assert!(l.blocked(&["ip:1"]).is_none());
        l.fail(&["ip:1", "user:alice"]);
        assert!(l.blocked(&["ip:2", "user:alice"]).is_some());
        assert!(l.blocked(&["ip:2", "user:bob"]).is_none());
        l.succeed(&["user:alice"]);
        assert!(l.blocked(&["user:alice"]).is_none());
        assert!(l.blocked(&["ip:1"]).is_some());
    }

    #[test]
    fn tokens_compare_in_full() {
        assert!(same_token("abc", "abc"));
        assert!(!same_token("abc", "abd"));
        assert!(!same_token("abc", "ab"));
    }
}
