//! `acectl snapshot` and `acectl state resolve`: record a service's state S(T) = {code,
//! configuration, environment} as signed statements bound by a snapshot, and later say
//! exactly what the state was at a time, with every input proven against a signed
//! checkpoint, or fail naming the gap (docs/state.md).

use std::path::PathBuf;
use std::time::Duration;

use ace_core::ack::AckStatus;
use ace_core::envelope::{Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::ProducerId;
use ace_core::nats::Names;
use ace_core::state::{
    check_sequence, service_subject, Component, Contract, Kind, MutationPredicate,
    SnapshotPredicate, MUTATION_V1, SNAPSHOT_V1,
};
use ace_core::statement::Statement;
use base64::Engine;
use clap::{Args, Subcommand};
use serde::Serialize;
use serde_json::Value;

use crate::collect;
use crate::http::{HttpError, Reader};
use crate::publish::{send, Sent};
use crate::verify::{fetch_and_check, verifiers};
use crate::NatsArgs;

#[derive(Args)]
pub struct SnapshotArgs {
    #[arg(long)]
    pub service: String,
    /// The service's determinism contract (TOML: service, mandatory, optional).
    #[arg(long)]
    pub contract: PathBuf,
    /// Code: the service's git repository (read, never modified).
    #[arg(long)]
    pub repo: Option<PathBuf>,
    #[arg(long = "artifact")]
    pub artifacts: Vec<PathBuf>,
    #[arg(long = "lockfile")]
    pub lockfiles: Vec<PathBuf>,
    /// Configuration: files of the running configuration.
    #[arg(long = "config")]
    pub configs: Vec<PathBuf>,
    #[arg(long, default_value = "file")]
    pub config_source: String,
    #[arg(long)]
    pub config_version: Option<String>,
    /// Record the configuration's digests without its content.
    #[arg(long)]
    pub redact: bool,
    /// Environment: record this host's environment.
    #[arg(long)]
    pub env: bool,
    #[arg(long)]
    pub flags: Option<PathBuf>,
    #[arg(long)]
    pub container_image: Option<String>,
    /// The last mutation sequence applied when the snapshot is taken.
    #[arg(long, default_value_t = 0)]
    pub mutation_sequence: u64,
    /// Record the snapshot even if a mandatory signal is missing, marked partial.
    #[arg(long)]
    pub partial: bool,
    /// The publishing producer and its signing key.
    #[arg(long)]
    pub producer: String,
    #[arg(long)]
    pub key: PathBuf,
    #[arg(long, default_value_t = 30)]
    pub timeout_secs: u64,
    #[command(flatten)]
    pub nats: NatsArgs,
}

#[derive(Subcommand)]
pub enum StateCmd {
    /// Say what a service's state was at a time, and prove it (exit 0 verified, 1 a
    /// check failed, 2 could not run, 3 verified but the snapshot is partial).
    Resolve(ResolveArgs),
}

#[derive(Args)]
pub struct ResolveArgs {
    #[arg(long)]
    pub service: String,
    /// RFC 3339 time or unix ms.
    #[arg(long)]
    pub at: String,
    /// Base URL of a reader.
    #[arg(long, env = "ACE_READER_URL")]
    pub reader: String,
    #[arg(long, env = "ACE_READER_CA_FILE")]
    pub reader_ca_file: Option<PathBuf>,
    /// The ledger's note verifier key; repeat for a rotated key.
    #[arg(long = "ledger-key", required = true)]
    pub ledger_keys: Vec<String>,
    /// The service's determinism contract, checked against the snapshot.
    #[arg(long)]
    pub contract: Option<PathBuf>,
    /// Also write the report as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

fn load_contract(path: &PathBuf) -> Result<Contract, String> {
    let text =
        std::fs::read_to_string(path).map_err(|e| format!("contract {}: {e}", path.display()))?;
    Contract::parse(&text, &path.display().to_string()).map_err(|e| e.to_string())
}

/// Publishes one statement; returns (envelope digest, index).
async fn record(
    client: &async_nats::Client,
    names: &Names,
    producer: &str,
    key: &ed25519_dalek::SigningKey,
    what: &str,
    statement: &Value,
    timeout: Duration,
) -> Result<(String, u64), String> {
    let payload = serde_json::to_vec(statement).map_err(|e| format!("{what}: {e}"))?;
    let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &payload, key);
    let digest = env.digest().as_str().to_string();
    // No Nats-Msg-Id: a component unchanged since the last snapshot is the same signed
    // statement (ed25519 is deterministic); the writer answers it `duplicate` with the
    // existing entry's index, which the snapshot then binds.
    match send(client, names, producer, env.to_json(), false, timeout)
        .await
        .map_err(|e| format!("{what}: {e:#}"))?
    {
        Sent::Acked(ack) if ack.status != AckStatus::Rejected => match ack.index {
            Some(i) => Ok((digest, i)),
            None => Err(format!("{what}: the ack carries no index: {ack:?}")),
        },
        Sent::Acked(ack) => Err(format!(
            "{what}: rejected by the ledger: {}",
            ack.reason
                .map(|r| format!("{}: {}", r.code.as_str(), r.detail))
                .unwrap_or_default()
        )),
        Sent::JetStreamDuplicate { stream_seq } => Err(format!(
            "{what}: JetStream took it for a duplicate of stream_seq {stream_seq} (published twice within its window); run again in two minutes or check that message's ack"
        )),
        Sent::NoAck {
            ack_subject,
            stream_seq,
        } => Err(format!(
            "{what}: no ack on {ack_subject} for stream_seq {stream_seq} within {}s (is the writer running?)",
            timeout.as_secs()
        )),
    }
}

pub async fn snapshot(a: SnapshotArgs) -> i32 {
    match snapshot_inner(a).await {
        Ok(code) => code,
        Err((code, e)) => {
            eprintln!("acectl snapshot: {e}");
            code
        }
    }
}

async fn snapshot_inner(a: SnapshotArgs) -> Result<i32, (i32, String)> {
    let usage = |e: String| (2, e);
    let contract = load_contract(&a.contract).map_err(usage)?;
    if contract.service != a.service {
        return Err((
            2,
            format!(
                "contract {} is for service {:?}, not {:?}",
                a.contract.display(),
                contract.service,
                a.service
            ),
        ));
    }
    let mut have = Vec::new();
    if a.repo.is_some() {
        have.push(Kind::Code);
    }
    if !a.configs.is_empty() {
        have.push(Kind::Config);
    }
    if a.env || a.flags.is_some() || a.container_image.is_some() {
        have.push(Kind::Environment);
    }
    let missing = contract.missing(&have);
    if !missing.is_empty() && !a.partial {
        let names: Vec<&str> = missing.iter().map(|k| k.as_str()).collect();
        return Err((
            1,
            format!(
                "the contract {} makes {} mandatory and it was not given ({}); nothing was recorded. Give it, or --partial to record a snapshot marked partial",
                a.contract.display(),
                names.join(", "),
                missing
                    .iter()
                    .map(|k| match k {
                        Kind::Code => "--repo DIR",
                        Kind::Config => "--config FILE",
                        Kind::Environment => "--env",
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ));
    }
    let producer = ProducerId::parse(&a.producer)
        .map_err(|e| usage(format!("--producer {:?}: {e}", a.producer)))?;
    let key = crate::keyfile::read_signing_key(&a.key).map_err(|e| usage(format!("{e:#}")))?;
    let names = Names::new(&a.nats.prefix).map_err(|e| usage(e.to_string()))?;

    // Collect everything before publishing anything: a collector that fails leaves
    // nothing half-recorded.
    let s = &a.service;
    let mut statements: Vec<(Kind, Value, String)> = Vec::new();
    let fail = |e: collect::CollectError| usage(e.to_string());
    if let Some(repo) = &a.repo {
        let p = collect::code(s, repo, &a.artifacts, &a.lockfiles).map_err(fail)?;
        let line = format!(
            "code: {} at {}{}",
            p.repository,
            p.commit,
            if p.dirty { " (dirty work tree)" } else { "" }
        );
        let st = collect::statement(s, Kind::Code.predicate_type(), &code_subjects(&p), &p)
            .map_err(fail)?;
        statements.push((Kind::Code, st, line));
    }
    if !a.configs.is_empty() {
        let p = collect::config(
            s,
            &a.configs,
            &a.config_source,
            a.config_version.as_deref(),
            a.redact,
        )
        .map_err(fail)?;
        let line = format!(
            "config: {} file(s), snapshot digest {}{}",
            p.files.len(),
            p.snapshot_digest,
            if a.redact { " (content redacted)" } else { "" }
        );
        let extra = vec![(
            "config".to_string(),
            "sha256".to_string(),
            p.snapshot_digest.clone(),
        )];
        let st = collect::statement(s, Kind::Config.predicate_type(), &extra, &p).map_err(fail)?;
        statements.push((Kind::Config, st, line));
    }
    if have.contains(&Kind::Environment) {
        let p = collect::environment(s, a.flags.as_deref(), a.container_image.as_deref())
            .map_err(fail)?;
        let line = format!(
            "environment: {} {} {}, time source {}",
            p.os, p.kernel, p.arch, p.time_source
        );
        let st =
            collect::statement(s, Kind::Environment.predicate_type(), &[], &p).map_err(fail)?;
        statements.push((Kind::Environment, st, line));
    }

    let client = crate::connect_nats(&a.nats)
        .await
        .map_err(|e| usage(format!("{e:#}")))?;
    let timeout = Duration::from_secs(a.timeout_secs);
    let mut components = Vec::new();
    for (kind, st, line) in &statements {
        let (digest, index) = record(
            &client,
            &names,
            producer.as_str(),
            &key,
            kind.as_str(),
            st,
            timeout,
        )
        .await
        .map_err(|e| (1, e))?;
        say!("recorded {line}: envelope {digest}, entry {index}");
        components.push(Component {
            kind: *kind,
            envelope: digest,
        });
    }
    let pred = SnapshotPredicate {
        service: s.clone(),
        taken_at: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
        components,
        mutation_sequence: a.mutation_sequence,
        partial: !missing.is_empty(),
        missing: missing.clone(),
    };
    let st = collect::statement(s, SNAPSHOT_V1, &[], &pred).map_err(fail)?;
    let (digest, index) = record(
        &client,
        &names,
        producer.as_str(),
        &key,
        "snapshot",
        &st,
        timeout,
    )
    .await
    .map_err(|e| (1, e))?;
    if pred.partial {
        let names: Vec<&str> = missing.iter().map(|k| k.as_str()).collect();
        say!(
            "recorded PARTIAL snapshot of {s}: envelope {digest}, entry {index}; missing mandatory signal(s): {}",
            names.join(", ")
        );
        Ok(3)
    } else {
        say!("recorded snapshot of {s}: envelope {digest}, entry {index}");
        Ok(0)
    }
}

fn code_subjects(p: &ace_core::state::CodePredicate) -> Vec<(String, String, String)> {
    let mut v = vec![(
        p.repository.clone(),
        "gitCommit".to_string(),
        p.commit.clone(),
    )];
    for a in &p.artifacts {
        v.push((a.path.clone(), "sha256".into(), a.sha256.clone()));
    }
    v
}

/// One input of the state, as the report lists it.
#[derive(Debug, Clone, Serialize)]
pub struct Input {
    /// snapshot, code, config, environment, or mutation.
    pub role: String,
    pub digest: String,
    pub index: Option<u64>,
    /// Unix ms.
    pub integrated_time: Option<i64>,
    /// "verified", or what failed.
    pub proof: String,
    /// What the statement says (commit, config digest, mutation id and sequence).
    pub summary: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub service: String,
    /// The time asked about (unix ms).
    pub at: i64,
    /// verified, partial, or failed.
    pub status: &'static str,
    pub inputs: Vec<Input>,
    /// Every problem found, each naming the input.
    pub problems: Vec<String>,
}

impl Report {
    pub fn exit_code(&self) -> i32 {
        match self.status {
            "verified" => 0,
            "partial" => 3,
            _ => 1,
        }
    }

    pub fn markdown(&self) -> String {
        let at = chrono::DateTime::from_timestamp_millis(self.at)
            .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
            .unwrap_or_else(|| self.at.to_string());
        let mut s = format!(
            "# State of `{}` at {at}\n\n**Status: {}**\n\n| input | digest | ledger index | logged at | proof | what it says |\n|---|---|---|---|---|---|\n",
            self.service,
            self.status.to_uppercase()
        );
        for i in &self.inputs {
            let when = i
                .integrated_time
                .and_then(chrono::DateTime::from_timestamp_millis)
                .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Millis, true))
                .unwrap_or_else(|| "–".into());
            s.push_str(&format!(
                "| {} | `{}` | {} | {when} | {} | {} |\n",
                i.role,
                i.digest,
                i.index.map(|x| x.to_string()).unwrap_or_else(|| "–".into()),
                i.proof.replace('|', "\\|"),
                i.summary.replace('|', "\\|")
            ));
        }
        if !self.problems.is_empty() {
            s.push_str("\n## Problems\n\n");
            for p in &self.problems {
                s.push_str(&format!("- {p}\n"));
            }
        }
        s
    }
}

pub async fn run(cmd: StateCmd) -> i32 {
    match cmd {
        StateCmd::Resolve(a) => resolve_cmd(a).await,
    }
}

async fn resolve_cmd(a: ResolveArgs) -> i32 {
    let contract = match a.contract.as_ref().map(load_contract).transpose() {
        Ok(c) => c,
        Err(e) => {
            eprintln!("acectl state resolve: {e}");
            return 2;
        }
    };
    let at = match parse_at(&a.at) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("acectl state resolve: --at {e}");
            return 2;
        }
    };
    let verifiers = match verifiers(&a.ledger_keys) {
        Ok(v) => v,
        Err(e) => {
            eprintln!("acectl state resolve: {e}");
            return 2;
        }
    };
    let reader = match Reader::with_ca(&a.reader, a.reader_ca_file.as_deref()) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("acectl state resolve: {e}");
            return 2;
        }
    };
    let report = match resolve(&reader, &verifiers, &a.service, at, contract.as_ref()).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("acectl state resolve: {e}");
            return 2;
        }
    };
    print!("{}", report.markdown());
    if let Some(path) = &a.json {
        let text = serde_json::to_string_pretty(&report).unwrap_or_default();
        if let Err(e) = std::fs::write(path, text) {
            eprintln!("acectl state resolve: writing {}: {e}", path.display());
            return 2;
        }
    }
    report.exit_code()
}

fn parse_at(v: &str) -> Result<i64, String> {
    if !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()) {
        return v.parse().map_err(|_| format!("{v:?}: out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(v)
        .map(|t| t.timestamp_millis())
        .map_err(|e| format!("{v:?} is not RFC 3339 or unix ms: {e}"))
}

/// The statement inside a served entry (its envelope, base64).
fn statement_of(entry: &Value) -> Result<(String, Statement), String> {
    let b64 = entry
        .get("envelope")
        .and_then(Value::as_str)
        .ok_or("the entry carries no envelope")?;
    let raw = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|e| format!("envelope is not base64: {e}"))?;
    let env = Envelope::parse(&raw).map_err(|r| format!("envelope: {}", r.detail))?;
    let st = Statement::parse(&env.payload).map_err(|r| format!("statement: {}", r.detail))?;
    let digest = env.digest().as_str().to_string();
    Ok((digest, st))
}

fn names_service(st: &Statement, service: &str) -> bool {
    let (name, hexd) = service_subject(service);
    st.subject.iter().any(|s| {
        s.name == name && s.digest.get("sha256").map(String::as_str) == Some(hexd.as_str())
    })
}

/// Locates the state through the reader, then verifies every input itself.
///
/// # Errors
/// When the reader cannot be asked (unreachable, bad answer): the check could not run.
pub async fn resolve(
    reader: &Reader,
    verifiers: &[ace_core::checkpoint::NoteVerifier],
    service: &str,
    at: i64,
    contract: Option<&Contract>,
) -> Result<Report, HttpError> {
    let mut report = Report {
        service: service.to_string(),
        at,
        status: "failed",
        inputs: Vec::new(),
        problems: Vec::new(),
    };
    let located = match reader
        .get_json(&format!("/v1/state/{service}?at={at}"))
        .await
    {
        Ok(v) => v,
        Err(HttpError::Status {
            status: 404,
            detail,
            ..
        }) => {
            report.problems.push(format!("no snapshot: {detail}"));
            return Ok(report);
        }
        Err(e) => return Err(e),
    };
    let keys = reader.get_json("/v1/keys").await?;
    let snap_index = located["snapshot"]["index"].as_u64();
    let snap_digest = located["snapshot"]["digest"]
        .as_str()
        .unwrap_or("")
        .to_string();

    // The snapshot itself.
    let mut snapshot: Option<SnapshotPredicate> = None;
    let mut input = Input {
        role: "snapshot".into(),
        digest: snap_digest.clone(),
        index: snap_index,
        integrated_time: located["snapshot"]["integrated_time"].as_i64(),
        proof: "not checked".into(),
        summary: String::new(),
    };
    match snap_index {
        None => report
            .problems
            .push("the reader's answer names no snapshot index".into()),
        Some(i) => {
            match verify_statement(reader, i, &keys, verifiers, service, SNAPSHOT_V1).await {
                Ok((proof, st, _)) => {
                    input.proof = proof;
                    match st
                        .predicate
                        .map(serde_json::from_value::<SnapshotPredicate>)
                    {
                        Some(Ok(p)) if p.service == service => {
                            input.summary = format!(
                                "taken {}, {} component(s), after mutation {}{}",
                                p.taken_at,
                                p.components.len(),
                                p.mutation_sequence,
                                if p.partial { " (PARTIAL)" } else { "" }
                            );
                            snapshot = Some(p);
                        }
                        Some(Ok(p)) => report.problems.push(format!(
                            "snapshot entry {i}: its predicate is for service {:?}",
                            p.service
                        )),
                        Some(Err(e)) => report.problems.push(format!(
                            "snapshot entry {i}: the predicate is not a snapshot/v1: {e}"
                        )),
                        None => report
                            .problems
                            .push(format!("snapshot entry {i}: no predicate")),
                    }
                }
                Err(e) => {
                    input.proof = format!("FAILED: {e}");
                    report.problems.push(format!("snapshot entry {i}: {e}"));
                }
            }
        }
    }
    report.inputs.push(input);
    let Some(snap) = snapshot else {
        return Ok(report);
    };

    // Its components, each by the envelope digest the (verified) snapshot names.
    let served: Vec<Value> = located["components"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for comp in &snap.components {
        let mut input = Input {
            role: comp.kind.as_str().into(),
            digest: comp.envelope.clone(),
            index: None,
            integrated_time: None,
            proof: "not checked".into(),
            summary: String::new(),
        };
        let found = served
            .iter()
            .find(|c| c["envelope"].as_str() == Some(comp.envelope.as_str()));
        match found.and_then(|c| c["index"].as_u64()) {
            None => {
                let status = found
                    .and_then(|c| c["status"].as_str())
                    .unwrap_or("unknown");
                input.proof = format!("FAILED: not in the log ({status})");
                report.problems.push(format!(
                    "{} component {}: not in the log (status {status})",
                    comp.kind.as_str(),
                    comp.envelope
                ));
            }
            Some(i) => {
                input.index = Some(i);
                match verify_statement(
                    reader,
                    i,
                    &keys,
                    verifiers,
                    service,
                    comp.kind.predicate_type(),
                )
                .await
                {
                    Ok((proof, st, logged)) => {
                        input.proof = proof;
                        input.integrated_time = logged;
                        input.summary = summarize(comp.kind, st.predicate.as_ref());
                    }
                    Err(e) => {
                        input.proof = format!("FAILED: {e}");
                        report
                            .problems
                            .push(format!("{} component entry {i}: {e}", comp.kind.as_str()));
                    }
                }
                if let Err(e) = check_digest(reader, i, &comp.envelope).await {
                    report
                        .problems
                        .push(format!("{} component entry {i}: {e}", comp.kind.as_str()));
                }
            }
        }
        report.inputs.push(input);
    }

    // Mutations after the snapshot, in order and without a gap.
    let mut seqs = Vec::new();
    for m in located["mutations"].as_array().cloned().unwrap_or_default() {
        let (Some(i), Some(d)) = (m["index"].as_u64(), m["digest"].as_str()) else {
            report
                .problems
                .push("a mutation in the reader's answer lacks index or digest".into());
            continue;
        };
        let mut input = Input {
            role: "mutation".into(),
            digest: d.to_string(),
            index: Some(i),
            integrated_time: m["integrated_time"].as_i64(),
            proof: "not checked".into(),
            summary: String::new(),
        };
        match verify_statement(reader, i, &keys, verifiers, service, MUTATION_V1).await {
            Ok((proof, st, _)) => {
                input.proof = proof;
                match st
                    .predicate
                    .map(serde_json::from_value::<MutationPredicate>)
                {
                    Some(Ok(p)) => {
                        input.summary = format!(
                            "mutation {} #{} from {}{}",
                            p.mutation_id,
                            p.sequence,
                            p.origin,
                            p.external_ref
                                .map(|r| format!(" ({r})"))
                                .unwrap_or_default()
                        );
                        seqs.push(p.sequence);
                    }
                    _ => report.problems.push(format!(
                        "mutation entry {i}: the predicate is not a mutation/v1"
                    )),
                }
            }
            Err(e) => {
                input.proof = format!("FAILED: {e}");
                report.problems.push(format!("mutation entry {i}: {e}"));
            }
        }
        report.inputs.push(input);
    }
    if located["truncated"].as_bool() == Some(true) {
        report
            .problems
            .push("more than 10,000 mutations follow the snapshot: take a newer snapshot".into());
    }
    if let Err(e) = check_sequence(snap.mutation_sequence, &seqs) {
        report
            .problems
            .push(format!("mutations after the snapshot: {e}"));
    }

    // The determinism contract.
    let kinds: Vec<Kind> = snap.components.iter().map(|c| c.kind).collect();
    if let Some(c) = contract {
        if c.service != service {
            report
                .problems
                .push(format!("the contract is for service {:?}", c.service));
        }
        for k in c.missing(&kinds) {
            report.problems.push(format!(
                "contract violation: mandatory signal {} is not in the snapshot",
                k.as_str()
            ));
        }
    }
    report.status = if !report.problems.is_empty() {
        "failed"
    } else if snap.partial {
        "partial"
    } else {
        "verified"
    };
    Ok(report)
}

/// The entry's envelope digest must be the one the snapshot names.
async fn check_digest(reader: &Reader, index: u64, want: &str) -> Result<(), String> {
    let entry = reader
        .get_json(&format!("/v1/entries/{index}"))
        .await
        .map_err(|e| e.to_string())?;
    let (digest, _) = statement_of(&entry)?;
    if digest == want {
        Ok(())
    } else {
        Err(format!(
            "its envelope digest is {digest}, the snapshot names {want}"
        ))
    }
}

/// Verifies an entry end to end (leaf, signature, inclusion, checkpoint), then that it
/// is a statement of `predicate_type` about `service`.
async fn verify_statement(
    reader: &Reader,
    index: u64,
    keys: &Value,
    verifiers: &[ace_core::checkpoint::NoteVerifier],
    service: &str,
    predicate_type: &str,
) -> Result<(String, Statement, Option<i64>), String> {
    let (_, entry) = fetch_and_check(reader, index, None, keys, verifiers)
        .await
        .map_err(|e| e.to_string())?;
    let (_, st) = statement_of(&entry)?;
    if st.predicate_type != predicate_type {
        return Err(format!(
            "its predicate type is {}, not {predicate_type}",
            st.predicate_type
        ));
    }
    if !names_service(&st, service) {
        return Err(format!("it does not name service:{service} as a subject"));
    }
    Ok(("verified".into(), st, entry["integrated_time"].as_i64()))
}

fn summarize(kind: Kind, predicate: Option<&Value>) -> String {
    let p = predicate.cloned().unwrap_or(Value::Null);
    let s = |k: &str| p.get(k).and_then(Value::as_str).unwrap_or("?").to_string();
    match kind {
        Kind::Code => format!(
            "{} at commit {} (tree {})",
            s("repository"),
            s("commit"),
            s("tree")
        ),
        Kind::Config => format!("config {} from {}", s("snapshot_digest"), s("source")),
        Kind::Environment => format!("{} {} {}", s("os"), s("kernel"), s("arch")),
    }
}
