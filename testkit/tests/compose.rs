//! The static check of `docker-compose.yml` (this machine has no Docker engine):
//!
//! - a real compose parser accepts it (`docker compose config -q`, or Debian's
//!   `docker-compose` 1.29, which scripts/services.sh installs), and reads it as we do;
//! - everything it names exists, checked against the code: the services, the ports
//!   (DESIGN.md's, published on 127.0.0.1 only, matching each service's listen address),
//!   every `ACE_*` setting (read by the very service it is given to), the secrets (made by
//!   docker/make-secrets.sh, each given only to the service that needs it, none inline),
//!   the files it mounts from the repository, the files services read from volumes
//!   (written by docker/init.sh), the binaries (built and installed by the Dockerfile),
//!   and every acectl subcommand and flag the scripts run (in cli/src).
//!
//! Each problem names the service and the key. `the_check_finds_*` feed it mutated copies
//! to show that it fails, and says exactly what.

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use ace_testkit::{read_text as read, workspace_root as root};
use std::process::Command;
use std::sync::atomic::{AtomicUsize, Ordering};

use serde_yaml_ng::Value;

/// A service run from the ledger's image, serving HTTP.
struct App {
    service: &'static str,
    binary: &'static str,
    /// The crate (directory) whose sources hold the settings it reads.
    krate: &'static str,
    /// DESIGN.md, "Operator surface": the default listen port, published unchanged.
    port: u16,
    listen_var: &'static str,
    /// Its Postgres role (DESIGN.md, "Postgres roles").
    role: &'static str,
}

const APPS: [App; 4] = [
    App {
        service: "writer",
        binary: "ace-writer",
        krate: "writer",
        port: 9101,
        listen_var: "ACE_WRITER_LISTEN",
        role: "ace_writer",
    },
    App {
        service: "reader",
        binary: "ace-reader",
        krate: "reader",
        port: 8081,
        listen_var: "ACE_READER_LISTEN",
        role: "ace_reader",
    },
    App {
        service: "anchor",
        binary: "ace-anchor",
        krate: "anchor",
        port: 9102,
        listen_var: "ACE_ANCHOR_LISTEN",
        role: "ace_anchor",
    },
    App {
        service: "dashboard",
        binary: "ace-dashboard",
        krate: "dashboard",
        port: 8080,
        listen_var: "ACE_DASHBOARD_LISTEN",
        role: "ace_dashboard",
    },
];

const SERVICES: [&str; 7] = [
    "nats",
    "postgres",
    "init",
    "writer",
    "reader",
    "anchor",
    "dashboard",
];

/// Ports the servers may publish, on loopback only (producers on the host reach NATS).
const SERVER_PORTS: [(&str, u16); 2] = [("nats", 4222), ("postgres", 5432)];

/// The crates whose sources define the settings (`ACE_*`) and subcommands.
const CRATES: [&str; 6] = ["core", "writer", "reader", "anchor", "dashboard", "cli"];

/// Where docker/entrypoint.sh puts the copies of a container's secrets.
const SECRET_COPIES: &str = "/run/ace/secrets/";

/// A fresh, empty directory for one test.
fn temp_dir(what: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "ace-compose-{what}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("making a temp dir");
    dir
}

/// Runs docker/make-secrets.sh into `dir`; its output on failure.
fn make_secrets(dir: &Path) -> Result<String, String> {
    let out = Command::new("sh")
        .arg(root().join("docker/make-secrets.sh"))
        .arg(dir)
        .output()
        .map_err(|e| format!("running docker/make-secrets.sh: {e}"))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.success() {
        Ok(text)
    } else {
        Err(format!("docker/make-secrets.sh failed: {text}"))
    }
}

/// Every regular file in `dir`: name → (contents, mode).
fn files_in(dir: &Path) -> BTreeMap<String, (String, u32)> {
    std::fs::read_dir(dir)
        .expect("listing the secrets")
        .map(|e| {
            let e = e.expect("a directory entry");
            let mode = e.metadata().expect("metadata").permissions().mode() & 0o777;
            (
                e.file_name().to_string_lossy().into_owned(),
                (read(&e.path()), mode),
            )
        })
        .collect()
}

/// What the compose file is checked against.
struct Repo {
    root: PathBuf,
    /// `src/**/*.rs` of each crate in [`CRATES`], concatenated.
    sources: BTreeMap<&'static str, String>,
    /// The files docker/make-secrets.sh makes: name → contents.
    made_secrets: BTreeMap<String, String>,
    dockerfile: String,
    /// acectl's subcommands, each with its own subcommands (empty: it has none).
    acectl: BTreeMap<String, BTreeSet<String>>,
    /// Every workspace binary: name → the crate directory whose `src/main.rs` it is.
    workspace_bins: BTreeMap<String, String>,
}

impl Repo {
    fn load() -> Repo {
        let root = root();
        let mut sources = BTreeMap::new();
        for krate in CRATES {
            let mut text = String::new();
            collect_rs(&root.join(krate).join("src"), &mut text);
            assert!(!text.is_empty(), "no Rust sources under {krate}/src");
            sources.insert(krate, text);
        }
        let dir = temp_dir("secrets");
        let secrets_dir = dir.join("secrets");
        make_secrets(&secrets_dir).unwrap_or_else(|e| panic!("{e}"));
        let made_secrets = files_in(&secrets_dir)
            .into_iter()
            .map(|(k, (v, _))| (k, v))
            .collect();
        std::fs::remove_dir_all(&dir).ok();
        Repo {
            dockerfile: read(&root.join("Dockerfile")),
            acectl: acectl_commands(&root.join("cli/src")),
            workspace_bins: workspace_bins(&root),
            root,
            sources,
            made_secrets,
        }
    }

    /// Whether one of `crates` reads the setting `var`: its name as a string literal, or,
    /// for `X_FILE`, `X` read through `ace_core::config::Env` (whose every setting has a
    /// file form) in a `config.rs`.
    fn reads(&self, crates: &[&str], var: &str) -> bool {
        let quoted = |name: &str| format!("\"{name}\"");
        if crates
            .iter()
            .any(|k| self.sources[k].contains(&quoted(var)))
        {
            return true;
        }
        let Some(stem) = var.strip_suffix("_FILE") else {
            return false;
        };
        crates.iter().any(|k| {
            let config = self.root.join(k).join("src/config.rs");
            config.exists() && read(&config).contains(&quoted(stem))
        })
    }

    /// The binaries the Dockerfile builds (`cargo build … -p PKG`) and installs
    /// (`target/release/BIN`).
    fn image_binaries(&self) -> BTreeSet<String> {
        let text = self.dockerfile.replace("\\\n", " ");
        let mut packages = BTreeSet::new();
        for line in text.lines().filter(|l| l.contains("cargo build")) {
            let words: Vec<&str> = line.split_whitespace().collect();
            for w in words.windows(2) {
                if w[0] == "-p" || w[0] == "--package" {
                    packages.insert(w[1].to_string());
                }
            }
        }
        self.workspace_bins
            .iter()
            .filter(|(bin, krate)| {
                let package = package_name(&self.root.join(krate));
                packages.contains(&package)
                    && self.dockerfile.contains(&format!("target/release/{bin}"))
            })
            .map(|(bin, _)| bin.clone())
            .collect()
    }

    /// The Dockerfile's `COPY docker/X /usr/local/bin/Y` lines: Y's path → X.
    fn image_scripts(&self) -> BTreeMap<String, String> {
        self.dockerfile
            .lines()
            .filter_map(|l| {
                let w: Vec<&str> = l.split_whitespace().collect();
                (w.len() == 3 && w[0] == "COPY" && w[1].starts_with("docker/"))
                    .then(|| (w[2].to_string(), w[1].to_string()))
            })
            .collect()
    }

    /// The uid of the image's service user (`useradd … --uid N`).
    fn image_uid(&self) -> Option<String> {
        let words: Vec<&str> = self.dockerfile.split_whitespace().collect();
        words
            .windows(2)
            .find(|w| w[0] == "--uid")
            .map(|w| w[1].to_string())
    }
}

fn collect_rs(dir: &Path, out: &mut String) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    let mut paths: Vec<PathBuf> = entries.map(|e| e.expect("an entry").path()).collect();
    paths.sort();
    for p in paths {
        if p.is_dir() {
            collect_rs(&p, out);
        } else if p.extension().is_some_and(|e| e == "rs") {
            out.push_str(&read(&p));
            out.push('\n');
        }
    }
}

/// `name = "…"` of a crate's `[package]`.
fn package_name(krate: &Path) -> String {
    let text = read(&krate.join("Cargo.toml"));
    let mut in_package = false;
    for line in text.lines() {
        let line = line.trim();
        if line.starts_with('[') {
            in_package = line == "[package]";
        } else if in_package {
            if let Some(v) = line.strip_prefix("name = ") {
                return v.trim_matches('"').to_string();
            }
        }
    }
    panic!("{}: no [package] name", krate.display())
}

/// The workspace's binaries: each member's `[[bin]]` names, or its package name when it
/// has a `src/main.rs` and no `[[bin]]`.
fn workspace_bins(root: &Path) -> BTreeMap<String, String> {
    let manifest = read(&root.join("Cargo.toml"));
    let members = manifest
        .lines()
        .find_map(|l| l.trim().strip_prefix("members = "))
        .expect("workspace members");
    let mut bins = BTreeMap::new();
    for member in members
        .trim_matches(['[', ']'])
        .split(',')
        .map(|m| m.trim().trim_matches('"'))
        .filter(|m| !m.is_empty())
    {
        let dir = root.join(member);
        let text = read(&dir.join("Cargo.toml"));
        let mut in_bin = false;
        let mut named = false;
        for line in text.lines().map(str::trim) {
            if line.starts_with('[') {
                in_bin = line == "[[bin]]";
            } else if in_bin {
                if let Some(v) = line.strip_prefix("name = ") {
                    bins.insert(v.trim_matches('"').to_string(), member.to_string());
                    named = true;
                }
            }
        }
        if !named && dir.join("src/main.rs").exists() {
            bins.insert(package_name(&dir), member.to_string());
        }
    }
    bins
}

/// `LedgerKey` → `ledger-key`, as clap names subcommands.
fn kebab(ident: &str) -> String {
    let mut out = String::new();
    for (i, c) in ident.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 {
                out.push('-');
            }
            out.push(c.to_ascii_lowercase());
        } else {
            out.push(c);
        }
    }
    out
}

/// The variants of `enum NAME { … }` in `src` (4-space indented, as rustfmt writes
/// them), each with the type of its `cmd:` field when it nests subcommands.
fn enum_variants(src: &str, name: &str) -> Option<Vec<(String, Option<String>)>> {
    let start = src.find(&format!("enum {name} {{"))?;
    let body = &src[start..];
    let body = &body[..body.find("\n}")?];
    let mut out: Vec<(String, Option<String>)> = Vec::new();
    for line in body.lines().skip(1) {
        if let Some(rest) = line.strip_prefix("    ") {
            if rest.starts_with(|c: char| c.is_ascii_uppercase()) {
                let ident: String = rest
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric())
                    .collect();
                out.push((ident, None));
                continue;
            }
        }
        if let (Some(pos), Some(last)) = (line.find(" cmd: "), out.last_mut()) {
            last.1 = Some(line[pos + 6..].trim().trim_end_matches(',').to_string());
        }
    }
    Some(out)
}

/// acectl's command tree, from `enum Cmd` in cli/src/main.rs and the subcommand enums it
/// nests (in main.rs, or `module::Enum` in cli/src/module.rs).
fn acectl_commands(src: &Path) -> BTreeMap<String, BTreeSet<String>> {
    let main = read(&src.join("main.rs"));
    let top = enum_variants(&main, "Cmd").expect("enum Cmd in cli/src/main.rs");
    let mut tree = BTreeMap::new();
    for (variant, nested) in top {
        let mut subs = BTreeSet::new();
        if let Some(ty) = nested {
            let (text, name) = match ty.split_once("::") {
                Some((module, name)) => (read(&src.join(format!("{module}.rs"))), name),
                None => (main.clone(), ty.as_str()),
            };
            let variants = enum_variants(&text, name)
                .unwrap_or_else(|| panic!("enum {name} (acectl {})", kebab(&variant)));
            subs.extend(variants.into_iter().map(|(v, _)| kebab(&v)));
        }
        tree.insert(kebab(&variant), subs);
    }
    tree
}

// ---- reading compose values, in either syntax ------------------------------------------

fn as_text(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// A `command` or `entrypoint`: a list, or a string split on whitespace.
fn words(v: Option<&Value>) -> Vec<String> {
    match v {
        Some(Value::Sequence(s)) => s.iter().filter_map(as_text).collect(),
        Some(Value::String(s)) => s.split_whitespace().map(String::from).collect(),
        _ => Vec::new(),
    }
}

/// `environment`: a mapping, or a list of `K=V`.
fn environment(svc: &Value) -> BTreeMap<String, String> {
    match svc.get("environment") {
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| Some((as_text(k)?, as_text(v).unwrap_or_default())))
            .collect(),
        Some(Value::Sequence(s)) => s
            .iter()
            .filter_map(as_text)
            .map(|kv| match kv.split_once('=') {
                Some((k, v)) => (k.to_string(), v.to_string()),
                None => (kv, String::new()),
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

/// A service's secrets: (source, target file name).
fn secret_refs(svc: &Value) -> Vec<(String, String)> {
    let Some(Value::Sequence(s)) = svc.get("secrets") else {
        return Vec::new();
    };
    s.iter()
        .filter_map(|r| match r {
            Value::String(name) => Some((name.clone(), name.clone())),
            Value::Mapping(_) => {
                let source = r.get("source").and_then(as_text)?;
                let target = r
                    .get("target")
                    .and_then(as_text)
                    .unwrap_or_else(|| source.clone());
                let target = target
                    .strip_prefix("/run/secrets/")
                    .map(String::from)
                    .unwrap_or(target);
                Some((source, target))
            }
            _ => None,
        })
        .collect()
}

#[derive(Debug)]
enum Source {
    Volume(String),
    Bind(String),
    Tmpfs,
}

#[derive(Debug)]
struct Mount {
    source: Source,
    target: String,
    read_only: bool,
}

fn is_bind(source: &str) -> bool {
    source.starts_with('.') || source.starts_with('/') || source.starts_with('~')
}

fn mounts(svc: &Value) -> Vec<Mount> {
    let Some(Value::Sequence(s)) = svc.get("volumes") else {
        return Vec::new();
    };
    s.iter()
        .filter_map(|m| match m {
            Value::String(spec) => {
                let parts: Vec<&str> = spec.split(':').collect();
                let (source, target, mode) = match parts.as_slice() {
                    [t] => (None, t.to_string(), ""),
                    [s, t] => (Some(s.to_string()), t.to_string(), ""),
                    [s, t, m, ..] => (Some(s.to_string()), t.to_string(), *m),
                    [] => return None,
                };
                let source = match source {
                    Some(s) if is_bind(&s) => Source::Bind(s),
                    Some(s) => Source::Volume(s),
                    None => Source::Tmpfs,
                };
                Some(Mount {
                    source,
                    target,
                    read_only: mode.split(',').any(|o| o == "ro"),
                })
            }
            Value::Mapping(_) => {
                let kind = m.get("type").and_then(as_text).unwrap_or_default();
                let source = m.get("source").and_then(as_text).unwrap_or_default();
                Some(Mount {
                    source: match kind.as_str() {
                        "bind" => Source::Bind(source),
                        "volume" => Source::Volume(source),
                        _ => Source::Tmpfs,
                    },
                    target: m.get("target").and_then(as_text)?,
                    read_only: m.get("read_only").and_then(Value::as_bool) == Some(true),
                })
            }
            _ => None,
        })
        .collect()
}

#[derive(Debug, PartialEq)]
struct Port {
    host_ip: String,
    host: Option<u16>,
    container: u16,
    /// As written, for messages.
    spec: String,
}

fn ports(svc: &Value) -> Result<Vec<Port>, String> {
    let Some(Value::Sequence(s)) = svc.get("ports") else {
        return Ok(Vec::new());
    };
    let num = |s: &str, spec: &str| {
        s.parse::<u16>()
            .map_err(|_| format!("{spec:?} is not HOST_IP:HOST_PORT:CONTAINER_PORT"))
    };
    s.iter()
        .map(|p| match p {
            Value::Mapping(_) => {
                let spec = serde_yaml_ng::to_string(p)
                    .unwrap_or_default()
                    .replace('\n', " ");
                Ok(Port {
                    host_ip: p.get("host_ip").and_then(as_text).unwrap_or_default(),
                    host: match p.get("published").and_then(as_text) {
                        Some(h) => Some(num(&h, &spec)?),
                        None => None,
                    },
                    container: num(
                        &p.get("target").and_then(as_text).unwrap_or_default(),
                        &spec,
                    )?,
                    spec,
                })
            }
            other => {
                let spec = as_text(other).unwrap_or_default();
                let bare = spec.split('/').next().unwrap_or_default();
                let parts: Vec<&str> = bare.split(':').collect();
                let (ip, host, container) = match parts.as_slice() {
                    [c] => ("", None, *c),
                    [h, c] => ("", Some(*h), *c),
                    [ip, h, c] => (*ip, Some(*h), *c),
                    _ => return Err(format!("{spec:?} is not HOST_IP:HOST_PORT:CONTAINER_PORT")),
                };
                Ok(Port {
                    host_ip: ip.to_string(),
                    host: match host {
                        Some(h) => Some(num(h, &spec)?),
                        None => None,
                    },
                    container: num(container, &spec)?,
                    spec,
                })
            }
        })
        .collect()
}

/// `depends_on`: service → condition (`service_started` for the list form).
fn depends_on(svc: &Value) -> BTreeMap<String, String> {
    match svc.get("depends_on") {
        Some(Value::Sequence(s)) => s
            .iter()
            .filter_map(as_text)
            .map(|n| (n, "service_started".to_string()))
            .collect(),
        Some(Value::Mapping(m)) => m
            .iter()
            .filter_map(|(k, v)| {
                let cond = v
                    .get("condition")
                    .and_then(as_text)
                    .unwrap_or_else(|| "service_started".into());
                Some((as_text(k)?, cond))
            })
            .collect(),
        _ => BTreeMap::new(),
    }
}

fn parse_compose(text: &str) -> Result<Value, String> {
    let mut v: Value = serde_yaml_ng::from_str(text).map_err(|e| format!("YAML: {e}"))?;
    v.apply_merge()
        .map_err(|e| format!("YAML merge keys: {e}"))?;
    Ok(v)
}

/// The services that run the ledger's image: init and the four apps.
fn is_ace(service: &str) -> bool {
    service == "init" || APPS.iter().any(|a| a.service == service)
}

/// Which services may hold the secret made as `file` (docker/make-secrets.sh's names).
fn secret_holders(file: &str) -> Vec<&'static str> {
    if file == "postgres_password" {
        return vec!["postgres"];
    }
    for app in &APPS {
        if file == format!("{}.url", app.role) {
            return vec![app.service];
        }
    }
    // The role passwords, the superuser's and ace_owner's DSNs, the dashboard's admin.
    vec!["init"]
}

/// The last component of a path.
fn base(path: &str) -> &str {
    path.trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or(path)
}

/// The password in `scheme://user:password@host…`, if any.
fn url_password(v: &str) -> Option<&str> {
    let (_, rest) = v.split_once("://")?;
    let authority = rest.split(['/', '?']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    (!password.is_empty()).then_some(password)
}

/// `postgres://user:password@host/db` → its parts.
fn parse_dsn(dsn: &str) -> Option<(String, String, String, String)> {
    let rest = dsn.trim().strip_prefix("postgres://")?;
    let (userinfo, rest) = rest.split_once('@')?;
    let (user, password) = userinfo.split_once(':')?;
    let (host, db) = rest.split_once('/')?;
    Some((user.into(), password.into(), host.into(), db.into()))
}

struct Problems(Vec<String>);

impl Problems {
    fn at(&mut self, service: &str, key: &str, what: impl std::fmt::Display) {
        self.0.push(format!("service `{service}`: {key}: {what}"));
    }
}

/// Every problem of `compose` (parsed, merge keys applied), one line each.
fn check(compose: &Value, repo: &Repo) -> Vec<String> {
    let mut p = Problems(Vec::new());
    let Some(services) = compose.get("services").and_then(Value::as_mapping) else {
        return vec!["docker-compose.yml: no `services` mapping".into()];
    };
    let svc_of = |name: &str| services.get(name);
    let names: BTreeSet<String> = services.keys().filter_map(as_text).collect();
    let wanted: BTreeSet<String> = SERVICES.iter().map(|s| s.to_string()).collect();
    for missing in wanted.difference(&names) {
        p.0.push(format!("services: `{missing}` is missing"));
    }
    for extra in names.difference(&wanted) {
        p.at(
            extra,
            "services",
            format!("not one of the stack's services ({})", SERVICES.join(", ")),
        );
    }

    // Top-level secrets and volumes.
    let mut top_secrets: BTreeMap<String, String> = BTreeMap::new();
    if let Some(m) = compose.get("secrets").and_then(Value::as_mapping) {
        for (k, v) in m {
            let name = as_text(k).unwrap_or_default();
            match v.get("file").and_then(as_text) {
                None => p.0.push(format!(
                    "secrets: `{name}`: no `file` (secrets are files made by docker/make-secrets.sh)"
                )),
                Some(file) => {
                    let made = base(&file);
                    let parent = Path::new(&file).parent().map(|d| base(&d.to_string_lossy()).to_string());
                    if !repo.made_secrets.contains_key(made) || parent.as_deref() != Some("secrets") {
                        p.0.push(format!(
                            "secrets: `{name}`: file {file} is not one docker/make-secrets.sh makes in ./secrets ({})",
                            repo.made_secrets.keys().cloned().collect::<Vec<_>>().join(", ")
                        ));
                    }
                    top_secrets.insert(name, made.to_string());
                }
            }
        }
    }
    let top_volumes: BTreeSet<String> = compose
        .get("volumes")
        .and_then(Value::as_mapping)
        .map(|m| m.keys().filter_map(as_text).collect())
        .unwrap_or_default();
    let mut used_secrets = BTreeSet::new();
    let mut used_volumes = BTreeSet::new();

    // What the image holds.
    let bins = repo.image_binaries();
    let scripts = repo.image_scripts();
    let ace_image = svc_of("init")
        .and_then(|s| s.get("image"))
        .and_then(as_text);
    // Where init mounts each volume: the files services read from volumes are written there.
    let init_volumes: BTreeMap<String, String> = svc_of("init")
        .map(mounts)
        .unwrap_or_default()
        .into_iter()
        .filter_map(|m| match m.source {
            Source::Volume(v) => Some((v, m.target)),
            _ => None,
        })
        .collect();
    let init_script = svc_of("init")
        .map(|s| words(s.get("entrypoint")))
        .and_then(|w| w.first().cloned())
        .and_then(|path| scripts.get(&path).cloned());
    let init_text = init_script
        .as_ref()
        .map(|s| std::fs::read_to_string(repo.root.join(s)).unwrap_or_default())
        .unwrap_or_default();
    // `path` (inside `service`, in volume `volume` mounted at `at`) must be written by init.
    let written_by_init = |p: &mut Problems,
                           service: &str,
                           key: &str,
                           volume: &str,
                           at: &str,
                           path: &str| {
        let rel = path[at.len()..].trim_start_matches('/');
        match init_volumes.get(volume) {
            None => p.at(
                service,
                key,
                format!(
                    "{path} is in volume {volume}, which init does not mount, so nothing writes it"
                ),
            ),
            Some(init_at) => {
                let want = format!("{}/{rel}", base(init_at));
                if !init_text.contains(&want) {
                    p.at(service, key, format!(
                        "{path} is in volume {volume}, but {} (which mounts it at {init_at}) never writes {want}",
                        init_script.as_deref().unwrap_or("init's script")
                    ));
                }
            }
        }
    };

    for (name, svc) in services.iter().filter_map(|(k, v)| Some((as_text(k)?, v))) {
        let name = name.as_str();
        let app = APPS.iter().find(|a| a.service == name);
        let env = environment(svc);
        let secrets = secret_refs(svc);
        let mounts = mounts(svc);
        let deps = depends_on(svc);

        if svc.get("image").is_none() && svc.get("build").is_none() {
            p.at(name, "image", "neither `image` nor `build`");
        }
        let restart = svc.get("restart").and_then(as_text);
        match (name, restart.as_deref()) {
            (_, None) => p.at(name, "restart", "no restart policy"),
            ("init", Some("no")) => {}
            ("init", Some(r)) => p.at(
                name,
                "restart",
                format!("{r:?}: a one-shot must be \"no\" (dependents wait for it to complete)"),
            ),
            (_, Some("unless-stopped" | "always")) => {}
            (_, Some(r)) => p.at(
                name,
                "restart",
                format!("{r:?}: a server must be \"unless-stopped\" or \"always\""),
            ),
        }
        if name != "init" {
            let hc = svc.get("healthcheck");
            let disabled = hc.and_then(|h| h.get("disable")).and_then(Value::as_bool) == Some(true);
            if hc.is_none() || disabled || words(hc.and_then(|h| h.get("test"))).is_empty() {
                p.at(name, "healthcheck", "missing (every server has one)");
            }
        }

        // The ledger's image, its binaries and scripts.
        if is_ace(name) {
            if svc.get("image").and_then(as_text) != ace_image {
                p.at(
                    name,
                    "image",
                    format!(
                        "not the ledger's image ({})",
                        ace_image.as_deref().unwrap_or("init's")
                    ),
                );
            }
            let context = match svc.get("build") {
                Some(Value::String(c)) => Some(c.clone()),
                Some(b) => b.get("context").and_then(as_text),
                None => None,
            };
            match context {
                Some(c)
                    if Path::new(&c).join("Dockerfile").exists()
                        || repo.root.join(&c).join("Dockerfile").exists() => {}
                Some(c) => p.at(name, "build", format!("context {c} holds no Dockerfile")),
                None => p.at(
                    name,
                    "build",
                    "no build context (the image is built from the repository's Dockerfile)",
                ),
            }
            let entrypoint = words(svc.get("entrypoint"));
            let command = words(svc.get("command"));
            match (app, entrypoint.first()) {
                (Some(_), Some(e)) => p.at(name, "entrypoint", format!(
                    "{e} replaces the image's entrypoint (docker/entrypoint.sh), which hands the service its secrets"
                )),
                (Some(app), None) => match command.first() {
                    Some(c) if c == app.binary => {}
                    Some(c) => p.at(name, "command", format!("runs {c}, not {}", app.binary)),
                    None => p.at(name, "command", format!("missing: it must run {}", app.binary)),
                },
                (None, Some(e)) => {
                    if !scripts.contains_key(e) && !bins.contains(base(e)) {
                        p.at(name, "entrypoint", format!("{e} is neither a binary nor a script the Dockerfile installs"));
                    }
                }
                (None, None) => p.at(name, "entrypoint", "missing: init runs docker/init.sh"),
            }
            for bin in entrypoint.first().into_iter().chain(command.first()) {
                if repo.workspace_bins.contains_key(base(bin)) && !bins.contains(base(bin)) {
                    p.at(
                        name,
                        "command",
                        format!("{bin} is not built and installed by the Dockerfile"),
                    );
                }
            }
        }

        // Settings: read by this very service, and no secret inline.
        let crates: Vec<&str> = match (app, name) {
            (Some(a), _) => vec![a.krate, "core"],
            (None, "init") => vec!["cli", "core"],
            _ => Vec::new(),
        };
        for (k, v) in &env {
            if k.starts_with("ACE_") && !repo.reads(&crates, k) {
                let who = app.map(|a| a.binary).unwrap_or("acectl");
                p.at(
                    name,
                    &format!("environment.{k}"),
                    format!(
                        "not a setting {who} reads (no \"{k}\" in {})",
                        crates
                            .iter()
                            .map(|c| format!("{c}/src"))
                            .collect::<Vec<_>>()
                            .join(" or ")
                    ),
                );
            }
            if k.contains("PASSWORD") && !k.ends_with("_FILE") {
                p.at(
                    name,
                    &format!("environment.{k}"),
                    "a password inline: give it as a secret file (…_FILE)",
                );
            }
            if url_password(v).is_some() {
                p.at(
                    name,
                    &format!("environment.{k}"),
                    "a URL with a password inline: give it as a secret file (…_FILE)",
                );
            }
        }

        // Files named by *_FILE settings: a secret, a volume or a mounted file.
        let targets: BTreeSet<&str> = secrets.iter().map(|(_, t)| t.as_str()).collect();
        let own_entrypoint = svc.get("entrypoint").is_none();
        for (k, v) in env.iter().filter(|(k, _)| k.ends_with("_FILE")) {
            let key = format!("environment.{k}");
            if let Some(t) = v.strip_prefix("/run/secrets/") {
                if !targets.contains(t) {
                    p.at(name, &key, format!("{v}: the service has no secret {t}"));
                }
            } else if let Some(t) = v.strip_prefix(SECRET_COPIES) {
                if !is_ace(name) || !own_entrypoint {
                    p.at(name, &key, format!("{v}: only docker/entrypoint.sh makes {SECRET_COPIES}, and it does not run here"));
                } else if !targets.contains(t) {
                    p.at(name, &key, format!("{v}: the service has no secret {t}"));
                }
            } else if let Some(m) = mounts
                .iter()
                .filter(|m| v == &m.target || v.starts_with(&format!("{}/", m.target)))
                .max_by_key(|m| m.target.len())
            {
                if let Source::Volume(vol) = &m.source {
                    if name != "init" {
                        written_by_init(&mut p, name, &key, vol, &m.target, v);
                    }
                }
            } else {
                p.at(name, &key, format!("{v} is neither a secret nor in a volume or file mounted into the container"));
            }
        }

        // Secrets: declared, and only where they are needed.
        let mut seen_targets = BTreeSet::new();
        for (source, target) in &secrets {
            used_secrets.insert(source.clone());
            if !seen_targets.insert(target.clone()) {
                p.at(
                    name,
                    "secrets",
                    format!("two secrets at /run/secrets/{target}"),
                );
            }
            match top_secrets.get(source) {
                None => p.at(
                    name,
                    "secrets",
                    format!("`{source}` is not declared under the top-level `secrets`"),
                ),
                Some(file) => {
                    let holders = secret_holders(file);
                    if !holders.contains(&name) {
                        p.at(
                            name,
                            "secrets",
                            format!("`{source}` ({file}) is for {} only", holders.join(", ")),
                        );
                    }
                }
            }
        }

        // Mounts: declared volumes, existing files.
        for m in &mounts {
            match &m.source {
                Source::Volume(v) => {
                    used_volumes.insert(v.clone());
                    if !top_volumes.contains(v) {
                        p.at(
                            name,
                            "volumes",
                            format!("volume `{v}` is not declared under the top-level `volumes`"),
                        );
                    }
                    if app.is_some() && !m.read_only {
                        p.at(
                            name,
                            "volumes",
                            format!(
                                "{v}:{} is writable: the services only read their volumes (:ro)",
                                m.target
                            ),
                        );
                    }
                }
                Source::Bind(s) => {
                    let path = if Path::new(s).is_absolute() {
                        PathBuf::from(s)
                    } else {
                        repo.root.join(s)
                    };
                    if !path.exists() {
                        p.at(
                            name,
                            "volumes",
                            format!("{s} does not exist in the repository"),
                        );
                    }
                }
                Source::Tmpfs => {}
            }
        }

        // Ports: loopback only, DESIGN.md's numbers.
        match ports(svc) {
            Err(e) => p.at(name, "ports", e),
            Ok(ports) => {
                for port in &ports {
                    if port.host_ip != "127.0.0.1" {
                        p.at(
                            name,
                            "ports",
                            format!(
                                "{:?} is not bound to 127.0.0.1 (nothing listens beyond loopback)",
                                port.spec
                            ),
                        );
                    }
                }
                let allowed = match app {
                    Some(a) => Some(a.port),
                    None => SERVER_PORTS
                        .iter()
                        .find(|(s, _)| *s == name)
                        .map(|(_, n)| *n),
                };
                for port in &ports {
                    match allowed {
                        None => p.at(name, "ports", format!("{:?}: {name} publishes nothing", port.spec)),
                        Some(want) if port.container != want || port.host != Some(want) => p.at(
                            name,
                            "ports",
                            format!(
                                "{:?} publishes container port {} on host port {}; DESIGN.md's port is {want} for both",
                                port.spec,
                                port.container,
                                port.host.map_or("(random)".into(), |h| h.to_string())
                            ),
                        ),
                        Some(_) => {}
                    }
                }
                if let Some(a) = app {
                    if ports.is_empty() {
                        p.at(
                            name,
                            "ports",
                            format!("not published: DESIGN.md's 127.0.0.1:{}", a.port),
                        );
                    }
                }
            }
        }

        // Dependencies.
        for (dep, cond) in &deps {
            if !names.contains(dep) {
                p.at(name, &format!("depends_on.{dep}"), "no such service");
            }
            if ![
                "service_started",
                "service_healthy",
                "service_completed_successfully",
            ]
            .contains(&cond.as_str())
            {
                p.at(
                    name,
                    &format!("depends_on.{dep}"),
                    format!("unknown condition {cond}"),
                );
            }
        }

        // The apps: listen address, health check, their own role, init first.
        if let Some(a) = app {
            let want = format!("0.0.0.0:{}", a.port);
            match env.get(a.listen_var) {
                Some(v) if *v == want => {}
                Some(v) => p.at(name, &format!("environment.{}", a.listen_var), format!("{v}, not {want} (the published port, on every interface of the container)")),
                None => p.at(name, &format!("environment.{}", a.listen_var), format!("missing: {} listens on 127.0.0.1 by default, which the published port cannot reach; set {want}", a.binary)),
            }
            let url = format!("http://127.0.0.1:{}/readyz", a.port);
            if !words(svc.get("healthcheck").and_then(|h| h.get("test"))).contains(&url) {
                p.at(name, "healthcheck", format!("does not ask {url}"));
            }
            if deps.get("init").map(String::as_str) != Some("service_completed_successfully") {
                p.at(name, "depends_on.init", "must be `condition: service_completed_successfully` (roles, schema and keys first)");
            }
            let dsn_file = format!("{}.url", a.role);
            let own: Vec<&(String, String)> = secrets
                .iter()
                .filter(|(s, _)| top_secrets.get(s) == Some(&dsn_file))
                .collect();
            match own.first() {
                None => p.at(
                    name,
                    "secrets",
                    format!("no {dsn_file}: {name} connects as its own role, {}", a.role),
                ),
                Some((_, target)) => {
                    let want = format!("{SECRET_COPIES}{target}");
                    if env.get("ACE_DATABASE_URL_FILE") != Some(&want) {
                        p.at(
                            name,
                            "environment.ACE_DATABASE_URL_FILE",
                            format!("must be {want} (its own role's DSN)"),
                        );
                    }
                }
            }
            if env.contains_key("ACE_DATABASE_URL") {
                p.at(
                    name,
                    "environment.ACE_DATABASE_URL",
                    "a DSN inline: use ACE_DATABASE_URL_FILE",
                );
            }
            let config = read(&repo.root.join(a.krate).join("src/config.rs"));
            let default = config
                .split("SocketAddr::from(([127, 0, 0, 1], ")
                .nth(1)
                .and_then(|rest| rest.split(')').next())
                .and_then(|n| n.trim().parse::<u16>().ok());
            if default != Some(a.port) {
                p.0.push(format!(
                    "{}/src/config.rs: the default listen port is {default:?}, DESIGN.md's is {}",
                    a.krate, a.port
                ));
            }
        }
    }

    // NATS: the config mounted, and the authorization it includes written by init.
    if let Some(nats) = svc_of("nats") {
        let command = words(nats.get("command")).join(" ");
        let mounts = mounts(nats);
        let config = command
            .split_whitespace()
            .collect::<Vec<_>>()
            .windows(2)
            .rfind(|w| w[0] == "-c" || w[0] == "--config")
            .map(|w| w[1].trim_end_matches(';').to_string());
        match config
            .as_ref()
            .and_then(|c| mounts.iter().find(|m| &m.target == c))
        {
            None => p.at(
                "nats",
                "command",
                format!(
                    "its config ({}) is not a file mounted from the repository",
                    config.as_deref().unwrap_or("no -c")
                ),
            ),
            Some(Mount {
                source: Source::Bind(src),
                target,
                ..
            }) => {
                let text = std::fs::read_to_string(repo.root.join(src)).unwrap_or_default();
                let dir = Path::new(target)
                    .parent()
                    .map(|d| d.to_string_lossy().into_owned())
                    .unwrap_or_default();
                for include in text
                    .lines()
                    .filter_map(|l| l.trim().strip_prefix("include "))
                    .map(|i| i.trim().trim_matches('"'))
                {
                    let path = format!("{dir}/{include}");
                    match mounts
                        .iter()
                        .find(|m| path.starts_with(&format!("{}/", m.target)))
                    {
                        Some(Mount {
                            source: Source::Volume(v),
                            target,
                            ..
                        }) => {
                            written_by_init(
                                &mut p,
                                "nats",
                                &format!("command ({src} includes {include})"),
                                v,
                                target,
                                &path,
                            );
                            if !command.contains(&path) {
                                p.at("nats", "command", format!("does not wait for {path}, which init writes after nats may have started"));
                            }
                        }
                        _ => p.at(
                            "nats",
                            "volumes",
                            format!("{src} includes {path}, which no volume provides"),
                        ),
                    }
                }
            }
            Some(_) => p.at(
                "nats",
                "command",
                "its config is not a file mounted from the repository",
            ),
        }
    }

    for s in top_secrets.keys().filter(|s| !used_secrets.contains(*s)) {
        p.0.push(format!("secrets: `{s}` is given to no service"));
    }
    for v in top_volumes.iter().filter(|v| !used_volumes.contains(*v)) {
        p.0.push(format!("volumes: `{v}` is mounted by no service"));
    }

    // The DSNs make-secrets.sh writes: each role's own password, the postgres service's
    // host, port and database.
    let pg_env = svc_of("postgres").map(environment).unwrap_or_default();
    let db = pg_env
        .get("POSTGRES_DB")
        .cloned()
        .unwrap_or_else(|| "postgres".into());
    let superuser = pg_env
        .get("POSTGRES_USER")
        .cloned()
        .unwrap_or_else(|| "postgres".into());
    let dsns = APPS
        .iter()
        .map(|a| {
            (
                format!("{}.url", a.role),
                a.role.to_string(),
                format!("{}.password", a.role),
            )
        })
        .chain([
            (
                "ace_owner.url".to_string(),
                "ace_owner".to_string(),
                "ace_owner.password".to_string(),
            ),
            (
                "admin_database_url".to_string(),
                superuser,
                "postgres_password".to_string(),
            ),
        ]);
    for (file, user, password_file) in dsns {
        let made = repo
            .made_secrets
            .get(&file)
            .map(String::as_str)
            .unwrap_or_default();
        let password = repo
            .made_secrets
            .get(&password_file)
            .map(|s| s.trim())
            .unwrap_or_default();
        match parse_dsn(made) {
            None => p.0.push(format!(
                "docker/make-secrets.sh: {file} is not postgres://USER:PASSWORD@HOST/DB"
            )),
            Some((u, pw, host, d)) => {
                if u != user || pw != password || host != "postgres:5432" || d != db {
                    p.0.push(format!(
                        "docker/make-secrets.sh: {file} is for {u}@{host}/{d}{}; the stack wants {user}@postgres:5432/{db} with {password_file}",
                        if pw == password { "" } else { " with another password" }
                    ));
                }
            }
        }
    }
    p.0
}

/// The problems of a script the image runs: every workspace binary it calls is in the
/// image, every acectl subcommand and flag exists, every `ACE_*` name is a setting, and
/// its service uid is the image's.
fn check_script(path: &str, text: &str, repo: &Repo) -> Vec<String> {
    let mut out = Vec::new();
    let bins = repo.image_binaries();
    let cli = &repo.sources["cli"];
    let joined = text.replace("\\\n", " ");
    for (n, line) in joined.lines().enumerate() {
        let line = line.trim();
        if line.starts_with('#') {
            continue;
        }
        let tokens: Vec<&str> = line
            .split_whitespace()
            .map(|t| {
                t.rsplit("$(")
                    .next()
                    .unwrap_or(t)
                    .trim_start_matches(['"', '(', '\''])
            })
            .collect();
        for (i, t) in tokens.iter().enumerate() {
            let Some(krate) = repo.workspace_bins.get(*t) else {
                continue;
            };
            let at = format!("{path}:{}", n + 1);
            if !bins.contains(*t) {
                out.push(format!(
                    "{at}: {t} is not built and installed by the Dockerfile"
                ));
            }
            let args: Vec<&str> = tokens[i + 1..]
                .iter()
                .copied()
                .take_while(|a| {
                    !a.starts_with('-')
                        && a.chars()
                            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                        && !a.is_empty()
                })
                .collect();
            if *t == "acectl" {
                match args.first() {
                    None => {}
                    Some(cmd) => match repo.acectl.get(*cmd) {
                        None => out.push(format!(
                            "{at}: `acectl {cmd}`: no such subcommand in cli/src/main.rs"
                        )),
                        Some(subs) if !subs.is_empty() => match args.get(1) {
                            Some(sub) if subs.contains(*sub) => {}
                            other => out.push(format!(
                                "{at}: `acectl {cmd} {}`: no such subcommand (cli/src has {})",
                                other.copied().unwrap_or(""),
                                subs.iter().cloned().collect::<Vec<_>>().join(", ")
                            )),
                        },
                        Some(_) => {}
                    },
                }
                let segment = tokens[i + 1..].iter().take_while(|t| {
                    !["|", ";", "&&", "||", ")"].contains(t) && !t.ends_with([';', ')'])
                });
                for flag in segment.filter_map(|t| t.strip_prefix("--")) {
                    let flag = flag.split('=').next().unwrap_or(flag);
                    let field = format!("{}:", flag.replace('-', "_"));
                    let long = format!("long = \"{flag}\"");
                    if !cli.contains(&field) && !cli.contains(&long) {
                        out.push(format!(
                            "{at}: `acectl … --{flag}`: no such flag in cli/src"
                        ));
                    }
                }
            } else if let Some(word) = args.first() {
                let main = read(&repo.root.join(krate).join("src/main.rs"));
                if !main.contains(&format!("\"{word}\"")) {
                    out.push(format!(
                        "{at}: `{t} {word}`: {krate}/src/main.rs knows no {word:?}"
                    ));
                }
            }
        }
    }
    out.extend(unknown_settings(path, text, repo));
    if let Some(uid) = text.lines().find_map(|l| l.trim().strip_prefix("ace_uid=")) {
        if Some(uid.to_string()) != repo.image_uid() {
            out.push(format!(
                "{path}: ace_uid={uid}, but the Dockerfile's user has uid {:?}",
                repo.image_uid()
            ));
        }
    }
    out
}

/// Every `ACE_*` name in `text` that no crate reads.
fn unknown_settings(path: &str, text: &str, repo: &Repo) -> Vec<String> {
    let mut names = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while let Some(pos) = text[i..].find("ACE_") {
        let start = i + pos;
        let before = start.checked_sub(1).map(|b| bytes[b]);
        let end = start
            + text[start..]
                .find(|c: char| !(c.is_ascii_uppercase() || c.is_ascii_digit() || c == '_'))
                .unwrap_or(text.len() - start);
        if !before.is_some_and(|b| b.is_ascii_alphanumeric() || b == b'_') {
            names.insert(text[start..end].trim_end_matches('_').to_string());
        }
        i = end.max(start + 4);
    }
    names
        .into_iter()
        .filter(|n| !repo.reads(&CRATES, n))
        .map(|n| {
            format!(
                "{path}: {n} is no setting of the ledger (not in the sources of {})",
                CRATES.join(", ")
            )
        })
        .collect()
}

fn load_compose() -> (String, Value) {
    let text = read(&root().join("docker-compose.yml"));
    let v = parse_compose(&text).unwrap_or_else(|e| panic!("docker-compose.yml: {e}"));
    (text, v)
}

fn assert_none(problems: Vec<String>) {
    assert!(
        problems.is_empty(),
        "{} problem(s):\n  {}",
        problems.len(),
        problems.join("\n  ")
    );
}

#[test]
fn the_compose_file_names_only_what_exists() {
    let repo = Repo::load();
    let (text, compose) = load_compose();
    let mut problems = check(&compose, &repo);
    problems.extend(unknown_settings("docker-compose.yml", &text, &repo));
    assert_none(problems);
}

#[test]
fn the_scripts_the_image_runs_call_what_exists() {
    let repo = Repo::load();
    let scripts = repo.image_scripts();
    for want in ["docker/init.sh", "docker/entrypoint.sh"] {
        assert!(
            scripts.values().any(|s| s == want),
            "the Dockerfile does not install {want}: {scripts:?}"
        );
    }
    let entrypoint = repo
        .dockerfile
        .lines()
        .find_map(|l| l.strip_prefix("ENTRYPOINT "))
        .expect("the Dockerfile's ENTRYPOINT");
    let installed = scripts
        .iter()
        .find(|(at, _)| entrypoint.contains(at.as_str()))
        .map(|(_, s)| s.as_str());
    assert_eq!(
        installed,
        Some("docker/entrypoint.sh"),
        "ENTRYPOINT {entrypoint}"
    );
    let mut problems = Vec::new();
    for script in scripts.values() {
        let path = repo.root.join(script);
        let text = read(&path);
        problems.extend(check_script(script, &text, &repo));
        let out = Command::new("sh")
            .arg("-n")
            .arg(&path)
            .output()
            .expect("sh -n");
        if !out.status.success() {
            problems.push(format!(
                "{script}: sh -n: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
    }
    let make = read(&repo.root.join("docker/make-secrets.sh"));
    problems.extend(unknown_settings("docker/make-secrets.sh", &make, &repo));
    assert_none(problems);
}

#[test]
fn make_secrets_makes_private_files_once() {
    let dir = temp_dir("make");
    let secrets = dir.join("secrets");
    make_secrets(&secrets).unwrap_or_else(|e| panic!("{e}"));
    let first = files_in(&secrets);
    let mode = std::fs::metadata(&secrets).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "{} is {mode:o}", secrets.display());
    for (name, (text, mode)) in &first {
        assert_eq!(*mode, 0o600, "{name} is {mode:o}");
        assert!(
            text.trim().len() >= 32 || name.ends_with("url"),
            "{name}: {text:?}"
        );
    }
    // A second run keeps every file; a lost DSN is made again from its password.
    let out = make_secrets(&secrets).unwrap_or_else(|e| panic!("{e}"));
    assert!(!out.contains("created"), "{out}");
    std::fs::remove_file(secrets.join("ace_reader.url")).unwrap();
    make_secrets(&secrets).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(files_in(&secrets), first, "a rerun changed the secrets");
    std::fs::remove_dir_all(&dir).ok();
}

/// A temp project: the compose file, with the repository's files it mounts and secrets
/// from docker/make-secrets.sh, so that a parser that looks for them finds them.
fn compose_project() -> PathBuf {
    let dir = temp_dir("project");
    std::fs::copy(
        root().join("docker-compose.yml"),
        dir.join("docker-compose.yml"),
    )
    .unwrap();
    for f in ["nats", "docker", "Dockerfile"] {
        std::os::unix::fs::symlink(root().join(f), dir.join(f)).unwrap();
    }
    make_secrets(&dir.join("secrets")).unwrap_or_else(|e| panic!("{e}"));
    dir
}

#[test]
fn a_real_compose_parser_accepts_it_and_reads_it_as_we_do() {
    let ok = |prog: &str, args: &[&str]| {
        Command::new(prog)
            .args(args)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    let (prog, pre): (&str, &[&str]) = if ok("docker", &["compose", "version"]) {
        ("docker", &["compose"])
    } else if ok("docker-compose", &["version"]) {
        ("docker-compose", &[])
    } else {
        panic!(
            "no compose parser: neither `docker compose` (the plugin) nor `docker-compose` \
             (Debian's package, which scripts/services.sh's ensure_packages installs) runs here"
        );
    };
    let dir = compose_project();
    let file = dir.join("docker-compose.yml");
    let run = |extra: &[&str]| {
        let out = Command::new(prog)
            .args(pre)
            .arg("-f")
            .arg(&file)
            .arg("--project-directory")
            .arg(&dir)
            .args(extra)
            .env_remove("ACE_LOG_ORIGIN")
            .output()
            .expect("running the compose parser");
        assert!(
            out.status.success(),
            "{prog} {} {} rejects docker-compose.yml:\n{}{}",
            pre.join(" "),
            extra.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).expect("UTF-8")
    };
    run(&["config", "-q"]);
    // Its resolved form (merge keys applied, defaults filled in) has the services,
    // settings and ports we check.
    let resolved = parse_compose(&run(&["config"])).expect("the parser's output is YAML");
    let (_, ours) = load_compose();
    for name in SERVICES {
        let theirs = &resolved["services"][name];
        let mine = &ours["services"][name];
        assert!(!theirs.is_null(), "{prog} does not see service {name}");
        let mut env = environment(mine);
        if let Some(origin) = env.get_mut("ACE_LOG_ORIGIN") {
            // `${ACE_LOG_ORIGIN:-default}`, as interpolated.
            *origin = origin
                .split(":-")
                .nth(1)
                .map(|d| d.trim_end_matches('}').to_string())
                .unwrap_or_default();
        }
        assert_eq!(environment(theirs), env, "service {name}: environment");
        let ports_of = |v: &Value| {
            ports(v)
                .expect("ports")
                .into_iter()
                .map(|p| (p.host_ip, p.host, p.container))
                .collect::<Vec<_>>()
        };
        assert_eq!(ports_of(theirs), ports_of(mine), "service {name}: ports");
        assert_eq!(
            words(theirs.get("command")),
            words(mine.get("command")),
            "service {name}: command"
        );
        let targets = |v: &Value| {
            secret_refs(v)
                .into_iter()
                .map(|(_, t)| t)
                .collect::<Vec<_>>()
        };
        assert_eq!(targets(theirs), targets(mine), "service {name}: secrets");
    }
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn nats_server_accepts_the_compose_config_with_rendered_users() {
    use ace_core::nats::Names;
    use ace_core::nats_acl::{render, Kind, User};
    let bin = ["nats-server", "/usr/sbin/nats-server"]
        .into_iter()
        .find(|b| {
            Command::new(b)
                .arg("--version")
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .expect("nats-server (scripts/services.sh installs it)");
    let dir = temp_dir("nats");
    std::fs::copy(root().join("nats/compose.conf"), dir.join("compose.conf")).unwrap();
    std::fs::create_dir_all(dir.join("auth")).unwrap();
    let users: Vec<User> = [
        ("admin", Kind::Admin),
        ("writer", Kind::Writer),
        ("anchor", Kind::Anchor),
        ("dashboard", Kind::Dashboard),
        ("acme", Kind::Producer),
    ]
    .into_iter()
    .enumerate()
    .map(|(i, (name, kind))| User {
        name: name.into(),
        kind,
        public_key: user_nkey(&[i as u8 + 1; 32]),
    })
    .collect();
    let names = Names::new("ace").unwrap();
    std::fs::write(dir.join("auth/ace-auth.conf"), render(&names, &users)).unwrap();
    let out = Command::new(bin)
        .arg("-c")
        .arg(dir.join("compose.conf"))
        .arg("-t")
        .output()
        .expect("nats-server -t");
    assert!(
        out.status.success(),
        "nats-server -t rejects nats/compose.conf:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// A public user NKey (`U…`): base32 of the prefix byte, the key and a CRC-16/XMODEM.
fn user_nkey(key: &[u8; 32]) -> String {
    let mut raw = vec![20 << 3];
    raw.extend_from_slice(key);
    let mut crc: u16 = 0;
    for &b in &raw {
        crc ^= u16::from(b) << 8;
        for _ in 0..8 {
            crc = if crc & 0x8000 != 0 {
                (crc << 1) ^ 0x1021
            } else {
                crc << 1
            };
        }
    }
    raw.extend_from_slice(&crc.to_le_bytes());
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut out = String::new();
    let (mut acc, mut bits) = (0u32, 0);
    for b in raw {
        acc = (acc << 8) | u32::from(b);
        bits += 8;
        while bits >= 5 {
            bits -= 5;
            out.push(ALPHABET[((acc >> bits) & 31) as usize] as char);
        }
    }
    if bits > 0 {
        out.push(ALPHABET[((acc << (5 - bits)) & 31) as usize] as char);
    }
    out
}

// ---- the check can fail, and says exactly what -----------------------------------------

fn mutated(edit: impl FnOnce(&mut Value)) -> Vec<String> {
    let repo = Repo::load();
    let (_, mut compose) = load_compose();
    edit(&mut compose);
    check(&compose, &repo)
}

fn service_mut<'a>(compose: &'a mut Value, name: &str) -> &'a mut Value {
    compose
        .get_mut("services")
        .and_then(|s| s.get_mut(name))
        .unwrap_or_else(|| panic!("service {name}"))
}

#[test]
fn the_check_finds_a_port_other_than_design_md_s() {
    let problems = mutated(|c| {
        service_mut(c, "reader")["ports"][0] = Value::String("127.0.0.1:18081:8081".into());
    });
    assert_eq!(
        problems,
        vec![
            "service `reader`: ports: \"127.0.0.1:18081:8081\" publishes container port 8081 on host port 18081; DESIGN.md's port is 8081 for both"
        ]
    );
}

#[test]
fn the_check_finds_a_port_beyond_loopback() {
    let problems = mutated(|c| {
        service_mut(c, "dashboard")["ports"][0] = Value::String("8080:8080".into());
    });
    assert_eq!(
        problems,
        vec![
            "service `dashboard`: ports: \"8080:8080\" is not bound to 127.0.0.1 (nothing listens beyond loopback)"
        ]
    );
}

#[test]
fn the_check_finds_a_setting_the_service_does_not_read() {
    let problems = mutated(|c| {
        let env = service_mut(c, "writer")["environment"]
            .as_mapping_mut()
            .expect("a mapping");
        env.insert("ACE_WRITER_BATCH_SIZE".into(), "100".into());
        // Real, but the reader's: the writer would ignore it.
        env.insert("ACE_READER_POOL_SIZE".into(), "4".into());
    });
    assert_eq!(
        problems,
        vec![
            "service `writer`: environment.ACE_READER_POOL_SIZE: not a setting ace-writer reads (no \"ACE_READER_POOL_SIZE\" in writer/src or core/src)",
            "service `writer`: environment.ACE_WRITER_BATCH_SIZE: not a setting ace-writer reads (no \"ACE_WRITER_BATCH_SIZE\" in writer/src or core/src)",
        ]
    );
}

#[test]
fn the_check_finds_a_secret_given_beyond_its_service() {
    let problems = mutated(|c| {
        let secrets = service_mut(c, "writer")["secrets"]
            .as_sequence_mut()
            .expect("a list");
        secrets.push(Value::String("ace_reader_url".into()));
    });
    assert_eq!(
        problems,
        vec!["service `writer`: secrets: `ace_reader_url` (ace_reader.url) is for reader only"]
    );
}

#[test]
fn the_check_finds_a_file_nothing_provides() {
    let problems = mutated(|c| {
        service_mut(c, "writer")["environment"]["ACE_LEDGER_KEY_FILE"] =
            Value::String("/var/lib/ace/writer/ledger.pem".into());
    });
    assert_eq!(
        problems,
        vec![
            "service `writer`: environment.ACE_LEDGER_KEY_FILE: /var/lib/ace/writer/ledger.pem is in volume writer-keys, but docker/init.sh (which mounts it at /var/lib/ace/writer) never writes writer/ledger.pem"
        ]
    );
}

#[test]
fn the_check_finds_an_unknown_setting_in_the_text_and_an_unknown_subcommand() {
    let repo = Repo::load();
    let (text, _) = load_compose();
    let text = format!("{text}\n# ACE_NO_SUCH_SETTING: 1\n");
    assert_eq!(
        unknown_settings("docker-compose.yml", &text, &repo),
        vec!["docker-compose.yml: ACE_NO_SUCH_SETTING is no setting of the ledger (not in the sources of core, writer, reader, anchor, dashboard, cli)"]
    );
    let init = read(&repo.root.join("docker/init.sh"));
    assert!(
        init.contains("acectl nats add-user"),
        "the mutation below needs it"
    );
    let broken = init.replacen("acectl nats add-user", "acectl nats adduser", 1);
    let problems = check_script("docker/init.sh", &broken, &repo);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains(
            "`acectl nats adduser`: no such subcommand (cli/src has add-user, init, render)"
        ),
        "{problems:#?}"
    );
    let broken = init.replacen("--seed-out", "--seed-file", 1);
    let problems = check_script("docker/init.sh", &broken, &repo);
    assert_eq!(problems.len(), 1, "{problems:#?}");
    assert!(
        problems[0].contains("`acectl … --seed-file`: no such flag in cli/src"),
        "{problems:#?}"
    );
}
