//! `acectl collect` as a producer runs it: on a real git repository and real files, through
//! the binary. Each collector's statement is checked field by field, accepted by the
//! writer's statement parser, and its predicate validated against its JSON Schema in
//! `schemas/state/` (which must agree with `ace_core::state` field by field).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use ace_core::state::{self, Component, Kind, SnapshotPredicate};
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// A fresh directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(tag: &str) -> TempDir {
        static N: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "acectl-collect-{tag}-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Canonical, so that it compares equal to the path the collector records.
        TempDir(dir.canonicalize().unwrap())
    }

    fn path(&self) -> &Path {
        &self.0
    }

    fn write(&self, name: &str, content: &[u8]) -> PathBuf {
        let p = self.0.join(name);
        std::fs::write(&p, content).unwrap();
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// git and acectl without the user's or the system's git configuration, in the C locale,
/// and unable to find a repository above the temp directories.
fn isolate(cmd: &mut Command) -> &mut Command {
    cmd.env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CEILING_DIRECTORIES", std::env::temp_dir())
        .env_remove("GIT_DIR")
        .env_remove("GIT_WORK_TREE")
        // Error messages are matched in English.
        .env("LC_ALL", "C")
}

fn git(dir: &Path, args: &[&str]) -> String {
    let out = isolate(Command::new("git").arg("-C").arg(dir).args(args))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// A repository with one commit of `app.txt` and `Cargo.lock`.
fn repo() -> TempDir {
    let d = TempDir::new("repo");
    git(d.path(), &["init", "-q"]);
    git(d.path(), &["config", "user.name", "Collect Test"]);
    git(d.path(), &["config", "user.email", "collect@test.invalid"]);
    d.write("app.txt", b"version 1\n");
    d.write("Cargo.lock", b"# lock\n");
    git(d.path(), &["add", "."]);
    git(d.path(), &["commit", "-q", "-m", "first"]);
    d
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    fn statement(&self) -> Value {
        assert_eq!(self.code, 0, "stderr: {}", self.stderr);
        serde_json::from_str(&self.stdout).unwrap()
    }

    fn fails_naming(&self, what: &str) {
        assert_eq!(
            self.code, 2,
            "stdout: {} stderr: {}",
            self.stdout, self.stderr
        );
        assert!(self.stdout.is_empty(), "stdout: {}", self.stdout);
        assert!(
            self.stderr.contains(what),
            "stderr does not name {what:?}: {}",
            self.stderr
        );
    }
}

fn acectl_with(args: &[&str], env: &[(&str, &Path)]) -> Run {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_acectl"));
    isolate(cmd.arg("collect").args(args));
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.output().unwrap();
    Run {
        code: out.status.code().expect("exited"),
        stdout: String::from_utf8(out.stdout).unwrap(),
        stderr: String::from_utf8(out.stderr).unwrap(),
    }
}

fn acectl(args: &[&str]) -> Run {
    acectl_with(args, &[])
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn sha256(b: &[u8]) -> String {
    hex::encode(Sha256::digest(b))
}

fn schema(name: &str) -> Value {
    let p = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../schemas/state")
        .join(format!("{name}.v1.json"));
    serde_json::from_str(&std::fs::read_to_string(&p).unwrap()).unwrap()
}

/// Errors of `instance` against schema `name` (empty: valid).
fn schema_errors(name: &str, instance: &Value) -> Vec<String> {
    let schema = schema(name);
    jsonschema::draft202012::meta::validate(&schema)
        .unwrap_or_else(|e| panic!("{name}.v1.json is not a 2020-12 schema: {e}"));
    let v = jsonschema::draft202012::new(&schema).unwrap();
    v.iter_errors(instance).map(|e| e.to_string()).collect()
}

fn assert_valid(name: &str, instance: &Value) {
    let errors = schema_errors(name, instance);
    assert!(errors.is_empty(), "{name}: {errors:?} in {instance:#}");
}

/// The statement's envelope: accepted by the writer's parser, the service subject first,
/// then `extra` exactly, of `predicate_type`.
fn check_statement(st: &Value, service: &str, predicate_type: &str, extra: &[Value]) {
    let bytes = serde_json::to_vec(st).unwrap();
    ace_core::statement::Statement::parse(&bytes).expect("the writer accepts the statement");
    assert_eq!(st["_type"], "https://in-toto.io/Statement/v1");
    assert_eq!(st["predicateType"], predicate_type);
    let name = format!("service:{service}");
    let mut subjects = vec![json!({"name": name, "digest": {"sha256": sha256(name.as_bytes())}})];
    subjects.extend_from_slice(extra);
    assert_eq!(st["subject"], Value::Array(subjects));
    assert_eq!(st["predicate"]["service"], service);
}

/// Every file under `dir` (`.git` included) with its content.
fn tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut out = BTreeMap::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.insert(p.clone(), std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

#[test]
fn collect_code_records_head_and_dirtiness_and_leaves_the_repo_alone() {
    let repo = repo();
    let outside = TempDir::new("artifacts");
    let artifact = outside.write("app.bin", b"\x7fELF build output");
    let lockfile = repo.path().join("Cargo.lock");
    let head = git(repo.path(), &["rev-parse", "HEAD"]);
    let tree_id = git(repo.path(), &["rev-parse", "HEAD^{tree}"]);
    let args = [
        "code",
        "--service",
        "billing",
        "--repo",
        s(repo.path()),
        "--artifact",
        s(&artifact),
        "--lockfile",
        s(&lockfile),
    ];

    let status_before = git(repo.path(), &["status", "--porcelain", "--ignored"]);
    // A new mtime on unchanged content leaves the index's stat data stale: a plain
    // `git status` would refresh and rewrite the index, which collecting must not do.
    let hour_ago = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(repo.path().join("app.txt"))
        .unwrap()
        .set_modified(hour_ago)
        .unwrap();
    let files_before = tree(repo.path());
    let run = acectl(&args);
    assert_eq!(
        tree(repo.path()),
        files_before,
        "collecting changed a file of the repository (.git included)"
    );
    assert_eq!(
        git(repo.path(), &["status", "--porcelain", "--ignored"]),
        status_before
    );

    let st = run.statement();
    let repo_name = s(repo.path());
    check_statement(
        &st,
        "billing",
        state::CODE_V1,
        &[
            json!({"name": repo_name, "digest": {"gitCommit": head}}),
            json!({"name": s(&artifact), "digest": {"sha256": sha256(b"\x7fELF build output")}}),
        ],
    );
    let p = &st["predicate"];
    assert_eq!(p["commit"], head.as_str());
    assert_eq!(p["tree"], tree_id.as_str());
    assert_eq!(p["dirty"], false);
    assert_eq!(p["repository"], repo_name, "no origin: the canonical path");
    assert_eq!(
        p["artifacts"],
        json!([{"path": s(&artifact), "sha256": sha256(b"\x7fELF build output")}])
    );
    assert_eq!(
        p["lockfiles"],
        json!([{"path": s(&lockfile), "sha256": sha256(b"# lock\n")}])
    );
    assert_valid("code", p);
    let _: state::CodePredicate = serde_json::from_value(p.clone()).unwrap();
    assert!(run.stderr.contains(&head), "summary: {}", run.stderr);

    // An edit makes the work tree dirty; HEAD stays.
    repo.write("app.txt", b"version 2, not committed\n");
    let st = acectl(&args).statement();
    assert_eq!(st["predicate"]["dirty"], true);
    assert_eq!(st["predicate"]["commit"], head.as_str());
    assert!(acectl(&args).stderr.contains("(dirty)"));

    // With an origin, the repository is named by its URL (subject too), without the
    // credentials it may carry.
    git(repo.path(), &["checkout", "-q", "--", "app.txt"]);
    let origin = "https://ci:s3cret-token@git.test.invalid/billing.git";
    git(repo.path(), &["remote", "add", "origin", origin]);
    let run = acectl(&args);
    assert!(!run.stdout.contains("s3cret"), "{}", run.stdout);
    let st = run.statement();
    assert_eq!(st["predicate"]["dirty"], false);
    assert_eq!(
        st["predicate"]["repository"],
        "https://git.test.invalid/billing.git"
    );
    assert_eq!(
        st["subject"][1]["name"],
        "https://git.test.invalid/billing.git"
    );
}

#[test]
fn collect_code_refuses_what_is_not_a_repository_or_a_file() {
    let plain = TempDir::new("plain");
    acectl(&["code", "--service", "billing", "--repo", s(plain.path())])
        .fails_naming(s(plain.path()));
    acectl(&["code", "--service", "billing", "--repo", s(plain.path())])
        .fails_naming("not a git repository");

    let repo = repo();
    let missing = repo.path().join("target/app.bin");
    acectl(&[
        "code",
        "--service",
        "billing",
        "--repo",
        s(repo.path()),
        "--artifact",
        s(&missing),
    ])
    .fails_naming(s(&missing));
    acectl(&["code", "--service", "", "--repo", s(repo.path())]).fails_naming("--service");
}

/// The snapshot digest as documented: sha256 over `path NUL sha256 LF`, in path order.
fn expected_snapshot_digest(files: &[(&str, &[u8])]) -> String {
    let mut files: Vec<_> = files.iter().collect();
    files.sort_by_key(|(p, _)| *p);
    let mut text = Vec::new();
    for (p, content) in files {
        text.extend_from_slice(p.as_bytes());
        text.push(0);
        text.extend_from_slice(sha256(content).as_bytes());
        text.push(b'\n');
    }
    sha256(&text)
}

#[test]
fn collect_config_records_files_and_redaction_keeps_the_digest() {
    let d = TempDir::new("config");
    let app = d.write("app.toml", b"port = 8080\n");
    let secrets = d.write("secrets.env", b"DB_PASSWORD=hunter2\n");
    // Given out of path order: the digest does not depend on it.
    let args = [
        "config",
        "--service",
        "billing",
        "--version",
        "r42",
        s(&secrets),
        s(&app),
    ];
    let digest = expected_snapshot_digest(&[
        (s(&app), b"port = 8080\n"),
        (s(&secrets), b"DB_PASSWORD=hunter2\n"),
    ]);

    let st = acectl(&args).statement();
    check_statement(
        &st,
        "billing",
        state::CONFIG_V1,
        &[json!({"name": "config", "digest": {"sha256": digest}})],
    );
    let p = &st["predicate"];
    assert_eq!(p["source"], "file");
    assert_eq!(p["version"], "r42");
    assert_eq!(p["snapshot_digest"], digest.as_str());
    assert_eq!(
        p["files"],
        json!([
            {"path": s(&secrets), "sha256": sha256(b"DB_PASSWORD=hunter2\n"), "content": "DB_PASSWORD=hunter2\n"},
            {"path": s(&app), "sha256": sha256(b"port = 8080\n"), "content": "port = 8080\n"},
        ])
    );
    assert_valid("config", p);
    let _: state::ConfigPredicate = serde_json::from_value(p.clone()).unwrap();

    let mut redacted_args = args.to_vec();
    redacted_args.extend(["--redact", "--source", "vault"]);
    let run = acectl(&redacted_args);
    assert!(!run.stdout.contains("hunter2"), "{}", run.stdout);
    let st = run.statement();
    let p = &st["predicate"];
    assert_eq!(p["snapshot_digest"], digest.as_str());
    assert_eq!(p["source"], "vault");
    for f in p["files"].as_array().unwrap() {
        assert!(f.get("content").is_none(), "redacted yet has content: {f}");
        assert!(f["sha256"].is_string());
    }
    assert_eq!(st["subject"][1]["digest"]["sha256"], digest.as_str());
    assert_valid("config", p);

    let missing = d.path().join("absent.toml");
    acectl(&["config", "--service", "billing", s(&app), s(&missing)]).fails_naming(s(&missing));
    acectl(&["config", "--service", "billing", s(&app), s(&app)]).fails_naming("given twice");
    let binary = d.write("keystore.bin", b"\xff\xfe\x00");
    acectl(&["config", "--service", "billing", s(&binary)]).fails_naming("--redact");
    assert_eq!(
        acectl(&["config", "--service", "billing", "--redact", s(&binary)]).code,
        0
    );
}

/// A directory of stand-in runtimes: `python3` answers, `node` fails, the rest are absent.
fn fake_path() -> TempDir {
    use std::os::unix::fs::PermissionsExt;
    let d = TempDir::new("bin");
    for (name, script) in [
        (
            "python3",
            "#!/bin/sh\necho 'Python 9.9.9'\necho second line\n",
        ),
        ("node", "#!/bin/sh\necho broken >&2\nexit 1\n"),
    ] {
        let p = d.write(name, script.as_bytes());
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    d
}

#[test]
fn collect_env_records_host_runtimes_and_flags() {
    let d = TempDir::new("env");
    let json_flags = d.write(
        "flags.json",
        br#"{"new_checkout": true, "limit": 5, "variant": {"name": "b"}}"#,
    );
    let toml_flags = d.write(
        "flags.toml",
        b"new_checkout = true\nlimit = 5\n[variant]\nname = \"b\"\n",
    );
    let bin = fake_path();
    let image = "registry.test/billing@sha256:".to_owned() + &"a".repeat(64);
    let expected_flags = json!({"new_checkout": true, "limit": 5, "variant": {"name": "b"}});

    for flags in [&json_flags, &toml_flags] {
        // PATH holds only the stand-ins: exactly python3 is found, and the kernel comes
        // from /proc since uname is not on PATH either.
        let st = acectl_with(
            &[
                "env",
                "--service",
                "billing",
                "--flags",
                s(flags),
                "--container-image",
                &image,
            ],
            &[("PATH", bin.path())],
        )
        .statement();
        check_statement(&st, "billing", state::ENVIRONMENT_V1, &[]);
        let p = &st["predicate"];
        assert_eq!(p["runtimes"], json!({"python3": "Python 9.9.9"}));
        assert_eq!(
            p["feature_flags"],
            expected_flags,
            "from {}",
            flags.display()
        );
        assert_eq!(p["container_image"], image.as_str());
        assert_eq!(p["arch"], std::env::consts::ARCH);
        let osrelease = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
        assert_eq!(p["kernel"], osrelease.trim());
        assert!(
            ["chrony", "systemd-timesyncd", "unknown"]
                .contains(&p["time_source"].as_str().unwrap()),
            "{p}"
        );
        assert!(!p["os"].as_str().unwrap().is_empty());
        assert_valid("environment", p);
        let _: state::EnvironmentPredicate = serde_json::from_value(p.clone()).unwrap();
    }

    // On the real PATH: uname answers, and no flags or image are recorded.
    let st = acectl(&["env", "--service", "billing"]).statement();
    let p = &st["predicate"];
    let uname = Command::new("uname").arg("-r").output().unwrap();
    assert_eq!(p["kernel"], String::from_utf8(uname.stdout).unwrap().trim());
    assert_eq!(p["feature_flags"], json!({}));
    assert!(p.get("container_image").is_none());
    assert_valid("environment", p);

    let yaml = d.write("flags.yaml", b"a: 1\n");
    acectl(&["env", "--service", "billing", "--flags", s(&yaml)]).fails_naming(s(&yaml));
    let list = d.write("list.json", b"[1, 2]");
    acectl(&["env", "--service", "billing", "--flags", s(&list)]).fails_naming("JSON object");
    let missing = d.path().join("absent.json");
    acectl(&["env", "--service", "billing", "--flags", s(&missing)]).fails_naming(s(&missing));
}

#[test]
fn collect_mutation_records_payload_digest_and_refuses_sequence_zero() {
    let d = TempDir::new("mutation");
    let payload = d.write("m.json", br#"{"op": "refund", "amount": 12}"#);
    let digest = sha256(br#"{"op": "refund", "amount": 12}"#);
    let st = acectl(&[
        "mutation",
        "--service",
        "billing",
        "--id",
        "m-7",
        "--sequence",
        "3",
        "--origin",
        "kafka:billing-events",
        "--payload",
        s(&payload),
        "--external-ref",
        "partition 0 offset 1234",
    ])
    .statement();
    check_statement(
        &st,
        "billing",
        state::MUTATION_V1,
        &[json!({"name": "mutation:m-7", "digest": {"sha256": digest}})],
    );
    assert_eq!(
        st["predicate"],
        json!({
            "service": "billing",
            "mutation_id": "m-7",
            "sequence": 3,
            "origin": "kafka:billing-events",
            "payload_sha256": digest,
            "external_ref": "partition 0 offset 1234",
        })
    );
    assert_valid("mutation", &st["predicate"]);

    let base = |seq: &'static str, payload: &Path| {
        acectl(&[
            "mutation",
            "--service",
            "billing",
            "--id",
            "m-1",
            "--sequence",
            seq,
            "--origin",
            "api",
            "--payload",
            s(payload),
        ])
    };
    base("0", &payload).fails_naming("--sequence");
    let missing = d.path().join("absent.json");
    base("1", &missing).fails_naming(s(&missing));
    let st = base("1", &payload).statement();
    assert!(st["predicate"].get("external_ref").is_none());
    assert_valid("mutation", &st["predicate"]);
}

/// Whether the core type deserializes a predicate.
type Parses = fn(&Value) -> bool;

/// One instance of each predicate with every optional field present.
fn full_instances() -> Vec<(&'static str, Value, Parses)> {
    fn parses<T: serde::de::DeserializeOwned>(v: &Value) -> bool {
        serde_json::from_value::<T>(v.clone()).is_ok()
    }
    let h = "ab".repeat(32);
    let snapshot = SnapshotPredicate {
        service: "billing".into(),
        taken_at: "2026-12-01T17:00:00Z".into(),
        components: vec![
            Component {
                kind: Kind::Code,
                envelope: format!("sha256:{h}"),
            },
            Component {
                kind: Kind::Config,
                envelope: format!("sha256:{}", "cd".repeat(32)),
            },
        ],
        mutation_sequence: 0,
        partial: true,
        missing: vec![Kind::Environment],
    };
    vec![
        (
            "code",
            json!({"service": "s", "repository": "/r", "commit": "a".repeat(40),
                   "tree": "b".repeat(64), "dirty": false,
                   "artifacts": [{"path": "x", "sha256": h}], "lockfiles": []}),
            parses::<state::CodePredicate>,
        ),
        (
            "config",
            json!({"service": "s", "source": "file", "version": "1", "snapshot_digest": h,
                   "files": [{"path": "x", "sha256": h, "content": "c"}]}),
            parses::<state::ConfigPredicate>,
        ),
        (
            "environment",
            json!({"service": "s", "os": "o", "kernel": "k", "arch": "a",
                   "container_image": "i", "runtimes": {"rustc": "1"},
                   "feature_flags": {"f": [1]}, "time_source": "unknown"}),
            parses::<state::EnvironmentPredicate>,
        ),
        (
            "mutation",
            json!({"service": "s", "mutation_id": "m", "sequence": 1, "origin": "o",
                   "payload_sha256": h, "external_ref": "e"}),
            parses::<state::MutationPredicate>,
        ),
        (
            "snapshot",
            serde_json::to_value(&snapshot).unwrap(),
            parses::<SnapshotPredicate>,
        ),
    ]
}

#[test]
fn collect_schemas_agree_with_the_core_types_field_by_field() {
    for (name, full, parses) in full_instances() {
        assert!(parses(&full), "{name}: the core type refuses {full}");
        assert_valid(name, &full);
        let schema = schema(name);
        let mut props: Vec<&String> = schema["properties"].as_object().unwrap().keys().collect();
        let mut fields: Vec<&String> = full.as_object().unwrap().keys().collect();
        props.sort();
        fields.sort();
        assert_eq!(
            props, fields,
            "{name}: schema properties and type fields differ"
        );
        let required = schema["required"].as_array().unwrap();
        for field in fields {
            let mut without = full.clone();
            without.as_object_mut().unwrap().remove(field);
            let is_required = required.contains(&json!(field));
            assert_eq!(
                schema_errors(name, &without).is_empty(),
                !is_required,
                "{name}: schema and requiredness of {field} disagree"
            );
            assert_eq!(
                parses(&without),
                !is_required,
                "{name}: the core type and the schema disagree on whether {field} is required"
            );
        }
        // Both refuse a field they do not know.
        let mut extra = full.clone();
        extra["note"] = json!("x");
        assert!(
            !parses(&extra),
            "{name}: the core type takes an unknown field"
        );
        let errors = schema_errors(name, &extra);
        assert!(
            errors.iter().any(|e| e.contains("note")),
            "{name}: the schema takes an unknown field: {errors:?}"
        );
    }
}

#[test]
fn collect_schemas_refuse_bad_digests_kinds_and_sequences() {
    let instances: BTreeMap<&str, Value> = full_instances()
        .into_iter()
        .map(|(n, v, _)| (n, v))
        .collect();
    let refused = |name: &str, pointer: &str, bad: Value| {
        let mut v = instances[name].clone();
        *v.pointer_mut(pointer).unwrap() = bad.clone();
        assert!(
            !schema_errors(name, &v).is_empty(),
            "{name}: {pointer} = {bad} accepted"
        );
    };
    refused("code", "/commit", json!("A".repeat(40)));
    refused("code", "/tree", json!("a".repeat(41)));
    refused("code", "/artifacts/0/sha256", json!("a".repeat(63)));
    refused(
        "code",
        "/artifacts/0",
        json!({"path": "x", "sha256": "ab".repeat(32), "extra": 1}),
    );
    refused(
        "config",
        "/snapshot_digest",
        json!(format!("sha256:{}", "a".repeat(64))),
    );
    refused("config", "/files/0/content", json!(null));
    refused("mutation", "/sequence", json!(0));
    refused("mutation", "/sequence", json!(1.5));
    refused("environment", "/runtimes/rustc", json!(1));
    refused("snapshot", "/components/0/kind", json!("mutation"));
    refused("snapshot", "/components/0/envelope", json!("a".repeat(64)));
    refused("snapshot", "/missing/0", json!("kernel"));
    refused("snapshot", "/mutation_sequence", json!(-1));
}
