//! Runs the scenarios against the stack: each step does what an operator, a producer or an
//! attacker would (through acectl, NATS, the reader's and the dashboard's HTTP, SQL as a
//! service role) and checks the outcome; the first failing step fails its scenario.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ace_core::ack::Ack;
use ace_core::envelope::Envelope;
use ace_core::ids::KeyId;
use async_nats::jetstream;
use futures::StreamExt;

use crate::envelopes;
use crate::expect::{expand, expand_json, subset};
use crate::spec::{self, Action, Expect, Publish, Scenario, StepSpec};
use crate::stack::{connect_nkey, path, read_key, tail, Stack};

/// How long a published envelope may wait for its ack.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);

/// One published message and what became of it.
#[derive(Debug, Clone)]
struct Outcome {
    raw: Vec<u8>,
    stream_seq: u64,
    /// JetStream dropped it as a duplicate inside its window (no ledger ack follows).
    jetstream_duplicate: bool,
    ack: Option<Ack>,
}

pub struct Runner<'a> {
    stack: &'a mut Stack,
    vars: HashMap<String, String>,
    last: Vec<Outcome>,
    conns: HashMap<String, async_nats::Client>,
    http: reqwest::Client,
    dashboard_cookies: Option<HashMap<String, String>>,
}

/// A scenario's result.
pub struct Verdict {
    pub name: String,
    pub elapsed: Duration,
    /// `None` when it passed; else the failing step and why.
    pub failure: Option<String>,
}

impl<'a> Runner<'a> {
    pub fn new(stack: &'a mut Stack) -> Result<Runner<'a>, String> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("an HTTP client: {e}"))?;
        let mut vars = HashMap::new();
        for (name, key) in &stack.keys {
            vars.insert(
                format!("keyid:{name}"),
                KeyId::from_public_key(&key.verifying_key())
                    .as_str()
                    .to_string(),
            );
        }
        Ok(Runner {
            stack,
            vars,
            last: Vec::new(),
            conns: HashMap::new(),
            http,
            dashboard_cookies: None,
        })
    }

    pub async fn scenario(&mut self, sc: &Scenario) -> Verdict {
        let started = Instant::now();
        let mut failure = None;
        for (i, step) in sc.steps.iter().enumerate() {
            if let Err(why) = self.step(step).await {
                failure = Some(format!("step {} ({}): {why}", i + 1, step.action.name()));
                break;
            }
        }
        Verdict {
            name: sc.name.clone(),
            elapsed: started.elapsed(),
            failure,
        }
    }

    async fn step(&mut self, step: &StepSpec) -> Result<(), String> {
        match &step.action {
            Action::Health(services) => self.health(services).await,
            Action::Publish(p) => {
                let outcomes = self.publish(p).await?;
                self.judge(&outcomes, step.expect.as_ref())?;
                self.judge_dlq(&outcomes, step.expect.as_ref()).await?;
                self.remember(outcomes, p.to.as_deref().unwrap_or(&p.as_user));
                Ok(())
            }
            Action::Verify(v) => self.verify(v.index, v.max.unwrap_or(10)).await,
            Action::Consistency(_) => {
                let state = self.stack.dir.join("trusted-checkpoint.note");
                let reader = self.stack.url("reader");
                self.acectl(&[
                    "verify",
                    "consistency",
                    "--reader",
                    &reader,
                    "--ledger-key",
                    &self.stack.ledger_vkey.clone(),
                    "--state",
                    path(&state),
                ])
                .map(drop)
            }
            Action::Reader(r) => self.reader(r).await,
            Action::NewKey(k) => {
                let key = ed25519_dalek::SigningKey::from_bytes(&rand::random());
                let file = self.stack.dir.join(format!("keys/{}.key", k.name));
                std::fs::write(&file, hex::encode(key.to_bytes()))
                    .map_err(|e| format!("writing {}: {e}", file.display()))?;
                self.add_key_named(&k.name, key);
                Ok(())
            }
            Action::AddKey(k) => {
                let mut args = vec!["key".to_string(), "add".into(), k.producer.clone()];
                let file = self.stack.dir.join(format!("keys/{}.key", k.key));
                if k.generate {
                    args.extend(["--generate".into(), "--out".into(), path(&file).into()]);
                } else {
                    let key = self.stack.keys.get(&k.key).ok_or_else(|| {
                        format!("no key named {:?} (make it with new_key)", k.key)
                    })?;
                    args.extend([
                        "--public-key".into(),
                        hex::encode(key.verifying_key().as_bytes()),
                    ]);
                }
                self.acectl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
                if k.generate {
                    let key = read_key(&file).map_err(|e| e.to_string())?;
                    self.add_key_named(&k.key, key);
                }
                Ok(())
            }
            Action::RotateKey(r) => {
                let file = self.stack.dir.join(format!("keys/{}.key", r.new));
                self.acectl(&[
                    "key",
                    "rotate",
                    &r.producer,
                    "--generate",
                    "--out",
                    path(&file),
                    "--overlap",
                    &r.overlap,
                ])?;
                let key = read_key(&file).map_err(|e| e.to_string())?;
                self.add_key_named(&r.new, key);
                Ok(())
            }
            Action::RevokeKey(r) => {
                let keyid = self.keyid(&r.key)?;
                let out = self.acectl(&["key", "revoke", &keyid, "--reason", &r.reason])?;
                if !out.contains("revoked") {
                    return Err(format!("acectl key revoke said: {out}"));
                }
                Ok(())
            }
            Action::Suspend(s) => {
                self.producer_state("suspend", &s.producer, Some(&s.reason))
                    .await
            }
            Action::Resume(s) => self.producer_state("resume", &s.producer, None).await,
            Action::Sleep(d) => {
                tokio::time::sleep(spec::duration(d)?).await;
                Ok(())
            }
            Action::DashboardRetry(_) => {
                let outcomes = self.dashboard_retry().await?;
                self.judge(&outcomes, step.expect.as_ref())?;
                self.judge_dlq(&outcomes, step.expect.as_ref()).await?;
                let producer = self.vars.get("producer").cloned().unwrap_or_default();
                self.remember(outcomes, &producer);
                Ok(())
            }
            Action::DashboardDiscard(d) => self.dashboard_discard(&d.note).await,
            Action::RefusePublish(r) => self.refuse_publish(&r.as_user, &r.to).await,
            Action::RefuseSubscribe(r) => self.refuse_subscribe(&r.as_user, &r.subject).await,
            Action::RefuseConnect(r) => {
                let seed = self.seed(&r.as_user)?;
                match connect_nkey(&self.stack.nats.url(), &seed).await {
                    Ok(_) => Err(format!("{} could connect to NATS", r.as_user)),
                    Err(_) => Ok(()),
                }
            }
            Action::RefuseJetstreamApi(r) => self.refuse_jetstream_api(&r.as_user).await,
            Action::RefuseSql(r) => self.refuse_sql(&r.role, &r.statements).await,
            Action::Anchored(a) => self.anchored(&a.sinks, spec::duration(&a.within)?).await,
            Action::Audit(a) => self.audit(a.verify_signatures, a.receipts),
        }
    }

    /// `acectl producer suspend|resume` with the NATS authorization re-rendered and the
    /// private server reloaded.
    async fn producer_state(
        &mut self,
        cmd: &str,
        producer: &str,
        reason: Option<&str>,
    ) -> Result<(), String> {
        let mut args: Vec<String> = vec!["producer".into(), cmd.into(), producer.into()];
        if let Some(r) = reason {
            args.extend(["--reason".into(), r.into()]);
        }
        args.extend(self.stack.nats_sync_args());
        self.acectl(&args.iter().map(String::as_str).collect::<Vec<_>>())?;
        self.conns.remove(producer);
        // SIGHUP is asynchronous: give the server its reload.
        tokio::time::sleep(Duration::from_millis(500)).await;
        Ok(())
    }

    fn add_key_named(&mut self, name: &str, key: ed25519_dalek::SigningKey) {
        self.vars.insert(
            format!("keyid:{name}"),
            KeyId::from_public_key(&key.verifying_key())
                .as_str()
                .to_string(),
        );
        self.stack.keys.insert(name.to_string(), key);
    }

    fn keyid(&self, name: &str) -> Result<String, String> {
        self.vars
            .get(&format!("keyid:{name}"))
            .cloned()
            .ok_or_else(|| format!("no key named {name:?}"))
    }

    fn seed(&self, user: &str) -> Result<std::path::PathBuf, String> {
        self.stack
            .seeds
            .get(user)
            .cloned()
            .ok_or_else(|| format!("no NATS user {user:?} in this stack (producers of `stack.producers`, writer, anchor, dashboard, admin)"))
    }

    fn acectl(&self, args: &[&str]) -> Result<String, String> {
        self.stack.acectl(args).map_err(|e| e.to_string())
    }

    async fn conn(&mut self, user: &str) -> Result<async_nats::Client, String> {
        if let Some(c) = self.conns.get(user) {
            return Ok(c.clone());
        }
        let seed = self.seed(user)?;
        let c = connect_nkey(&self.stack.nats.url(), &seed)
            .await
            .map_err(|e| format!("connecting to NATS as {user}: {e}"))?;
        self.conns.insert(user.to_string(), c.clone());
        Ok(c)
    }

    async fn health(&mut self, services: &[String]) -> Result<(), String> {
        for s in services {
            let base =
                self.stack.service(s).map(|s| s.url()).ok_or_else(|| {
                    format!("no service {s:?} (writer, reader, anchor, dashboard)")
                })?;
            for p in ["/healthz", "/readyz", "/metrics"] {
                let r = self
                    .http
                    .get(format!("{base}{p}"))
                    .send()
                    .await
                    .map_err(|e| format!("{s} {p}: {e}"))?;
                let status = r.status();
                let body = r.text().await.unwrap_or_default();
                if !status.is_success() {
                    return Err(format!("{s} {p}: HTTP {status}: {body}"));
                }
                if p == "/metrics" && !body.contains("# TYPE ace_") {
                    return Err(format!(
                        "{s} /metrics: no ace_ metric in {} bytes",
                        body.len()
                    ));
                }
            }
        }
        Ok(())
    }

    async fn publish(&mut self, p: &Publish) -> Result<Vec<Outcome>, String> {
        let target = match (&p.to, p.as_user.as_str()) {
            (Some(t), _) => t.clone(),
            (None, "admin") => return Err("admin publishes only with `to`".into()),
            (None, u) => u.to_string(),
        };
        let bodies: Vec<Vec<u8>> = if p.again {
            if self.last.is_empty() {
                return Err("`again` needs an earlier publish step".into());
            }
            self.last.iter().map(|o| o.raw.clone()).collect()
        } else {
            (0..p.count)
                .map(|n| envelopes::build(p, n, &self.stack.keys, &target))
                .collect::<Result<_, _>>()?
        };
        let client = self.conn(&p.as_user).await?;
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(10));
        let subject = self.stack.names.intake_subject(&target);
        let msg_id = !p.again;
        let sent: Vec<Result<(Vec<u8>, jetstream::publish::PublishAck), String>> =
            futures::stream::iter(bodies.into_iter().enumerate())
                .map(|(i, body)| {
                    let js = js.clone();
                    let subject = subject.clone();
                    async move {
                        let mut headers = async_nats::HeaderMap::new();
                        if let (true, Ok(env)) = (msg_id, Envelope::parse(&body)) {
                            headers.insert("Nats-Msg-Id", env.digest().as_str());
                        }
                        headers.insert("Ace-Published-At", chrono_now().as_str());
                        let ack = js
                            .publish_with_headers(subject.clone(), headers, body.clone().into())
                            .await
                            .map_err(|e| format!("publishing envelope {i} to {subject}: {e}"))?
                            .await
                            .map_err(|e| {
                                format!("JetStream did not store envelope {i} on {subject}: {e}")
                            })?;
                        Ok((body, ack))
                    }
                })
                .buffered(64)
                .collect()
                .await;
        let mut outcomes = Vec::with_capacity(sent.len());
        for s in sent {
            let (raw, puback) = s?;
            outcomes.push(Outcome {
                raw,
                stream_seq: puback.sequence,
                jetstream_duplicate: puback.duplicate,
                ack: None,
            });
        }
        self.await_acks(&mut outcomes).await?;
        Ok(outcomes)
    }

    async fn await_acks(&self, outcomes: &mut [Outcome]) -> Result<(), String> {
        let deadline = tokio::time::Instant::now() + ACK_TIMEOUT;
        for o in outcomes.iter_mut().filter(|o| !o.jetstream_duplicate) {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let seq = o.stream_seq;
            o.ack = self.stack.acks.wait_for(left, |a| a.get(seq)).await;
            if o.ack.is_none() {
                return Err(format!(
                    "no ledger ack for stream seq {seq} within {} s; writer log:\n{}",
                    ACK_TIMEOUT.as_secs(),
                    self.log_tail("writer")
                ));
            }
        }
        Ok(())
    }

    fn log_tail(&self, service: &str) -> String {
        self.stack
            .service(service)
            .map(|s| tail(&s.log, 10))
            .unwrap_or_default()
    }

    /// Checks every outcome against the expectation; names the first that misses it.
    fn judge(&self, outcomes: &[Outcome], expect: Option<&Expect>) -> Result<(), String> {
        let Some(e) = expect else { return Ok(()) };
        let index = match &e.index {
            Some(t) => Some(expand(t, &self.vars)?),
            None => None,
        };
        let n = outcomes.len();
        for (i, o) in outcomes.iter().enumerate() {
            let which = format!("envelope {} of {n} (stream seq {})", i + 1, o.stream_seq);
            let Some(ack) = &o.ack else {
                if e.ack.as_deref() == Some("duplicate") && o.jetstream_duplicate {
                    continue;
                }
                return Err(format!(
                    "{which}: JetStream dropped it as a duplicate; no ledger ack"
                ));
            };
            let status = ack.status.as_str();
            let reason = ack.reason.as_ref();
            let said = || match reason {
                Some(r) => format!("{status} ({}: {})", r.code, r.detail),
                None => format!(
                    "{status} (index {:?}, warnings {:?})",
                    ack.index, ack.warnings
                ),
            };
            if let Some(want) = &e.ack {
                if want != status {
                    return Err(format!("{which}: expected ack {want}, got {}", said()));
                }
            }
            if let Some(want) = &e.reason {
                let code = reason.map(|r| r.code.to_string()).unwrap_or_default();
                if *want != code {
                    return Err(format!("{which}: expected reason {want}, got {}", said()));
                }
            }
            if let Some(want) = &e.detail {
                if !reason.is_some_and(|r| r.detail.contains(want.as_str())) {
                    return Err(format!(
                        "{which}: expected a detail containing {want:?}, got {}",
                        said()
                    ));
                }
            }
            if let Some(want) = e.warnings {
                if ack.warnings.len() != want {
                    return Err(format!(
                        "{which}: expected {want} warning(s), got {:?}",
                        ack.warnings
                    ));
                }
            }
            if let Some(want) = &e.warning {
                if !ack.warnings.iter().any(|w| w.contains(want.as_str())) {
                    return Err(format!(
                        "{which}: expected a warning containing {want:?}, got {:?}",
                        ack.warnings
                    ));
                }
            }
            if let Some(want) = &index {
                if ack.index.map(|i| i.to_string()).as_deref() != Some(want.as_str()) {
                    return Err(format!("{which}: expected index {want}, got {}", said()));
                }
            }
        }
        Ok(())
    }

    /// Checks the DLQ rows `expect.dlq` asks about (after the acks: the writer commits
    /// before it acks, so the rows are there).
    async fn judge_dlq(&self, outcomes: &[Outcome], expect: Option<&Expect>) -> Result<(), String> {
        let Some(want) = expect.and_then(|e| e.dlq) else {
            return Ok(());
        };
        let reason = expect.and_then(|e| e.reason.clone());
        let db = self.stack.admin_db().await?;
        for o in outcomes {
            let row = self.dlq_row(&db, o.stream_seq).await?;
            match (want, row.as_ref()) {
                (true, None) => return Err(format!("no DLQ row for stream seq {}", o.stream_seq)),
                (false, Some(r)) => {
                    let code: String = r.get("code");
                    return Err(format!(
                        "a DLQ row for stream seq {} ({code})",
                        o.stream_seq
                    ));
                }
                (true, Some(r)) => {
                    let code: String = r.get("code");
                    if let Some(want) = &reason {
                        if code != *want {
                            let detail: String = r.get("detail");
                            return Err(format!(
                                "the DLQ row of stream seq {} says {code} ({detail}), not {want}",
                                o.stream_seq
                            ));
                        }
                    }
                }
                (false, None) => {}
            }
        }
        Ok(())
    }

    fn remember(&mut self, outcomes: Vec<Outcome>, producer: &str) {
        self.vars.insert("producer".into(), producer.to_string());
        let first = outcomes.iter().find_map(|o| o.ack.as_ref());
        for (var, val) in [
            ("digest", first.and_then(|a| a.digest.clone())),
            ("index", first.and_then(|a| a.index).map(|i| i.to_string())),
            ("block", first.and_then(|a| a.block).map(|b| b.to_string())),
        ] {
            match val {
                Some(v) => self.vars.insert(var.into(), v),
                None => self.vars.remove(var),
            };
        }
        self.last = outcomes;
    }

    async fn verify(&mut self, index: Option<u64>, max: usize) -> Result<(), String> {
        let indexes: Vec<u64> = match index {
            Some(i) => vec![i],
            None => self
                .last
                .iter()
                .filter_map(|o| o.ack.as_ref().and_then(|a| a.index))
                .collect(),
        };
        if indexes.is_empty() {
            return Err("the last publish has no entry to verify".into());
        }
        // First and last at least, then evenly spaced between.
        let max = max.max(2);
        let picks: Vec<u64> = if indexes.len() <= max {
            indexes.clone()
        } else {
            let step = (indexes.len() - 1) as f64 / (max - 1) as f64;
            (0..max)
                .map(|i| indexes[((i as f64) * step).round() as usize])
                .collect()
        };
        let reader = self.stack.url("reader");
        let vkey = self.stack.ledger_vkey.clone();
        for i in picks {
            self.acectl(&[
                "verify",
                "entry",
                "--reader",
                &reader,
                "--ledger-key",
                &vkey,
                "--index",
                &i.to_string(),
            ])
            .map_err(|e| format!("entry {i}: {e}"))?;
        }
        Ok(())
    }

    async fn reader(&mut self, r: &spec::ReaderGet) -> Result<(), String> {
        let path = expand(&r.get, &self.vars)?;
        let url = format!("{}{path}", self.stack.url("reader"));
        let a = self
            .http
            .get(&url)
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let status = a.status().as_u16();
        let body = a.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if status != r.status {
            return Err(format!(
                "GET {path}: expected HTTP {}, got {status}: {body}",
                r.status
            ));
        }
        if let Some(want) = &r.json {
            let want = expand_json(want, &self.vars)?;
            let got: serde_json::Value = serde_json::from_str(&body)
                .map_err(|e| format!("GET {path}: not JSON ({e}): {body}"))?;
            subset(&want, &got, "").map_err(|e| format!("GET {path}: {e}"))?;
        }
        Ok(())
    }

    /// Logs in as the stack's operator (once) and returns the session's cookies.
    async fn dashboard_login(&mut self) -> Result<HashMap<String, String>, String> {
        if let Some(c) = &self.dashboard_cookies {
            return Ok(c.clone());
        }
        let mut cookies = HashMap::new();
        let form = self.dashboard_get("/login", &mut cookies).await?;
        let token = csrf(&form)?;
        let (user, pw) = self.stack.operator.clone();
        let status = self
            .dashboard_post(
                "/login",
                &[("csrf", &token), ("username", &user), ("password", &pw)],
                &mut cookies,
            )
            .await?;
        if status != 303 {
            return Err(format!("dashboard login as {user}: HTTP {status}"));
        }
        self.dashboard_cookies = Some(cookies.clone());
        Ok(cookies)
    }

    /// An operator's action on DLQ item `id`, as the dashboard's form posts it: the item
    /// page's CSRF token, then `POST /dlq/{id}/{action}`, answered 303.
    async fn dashboard_act(
        &self,
        id: i64,
        action: &str,
        extra: &[(&str, &str)],
        cookies: &mut HashMap<String, String>,
    ) -> Result<(), String> {
        let page = self.dashboard_get(&format!("/dlq/{id}"), cookies).await?;
        let token = csrf(&page)?;
        let mut form = vec![("csrf", token.as_str())];
        form.extend_from_slice(extra);
        let path = format!("/dlq/{id}/{action}");
        match self.dashboard_post(&path, &form, cookies).await? {
            303 => Ok(()),
            status => Err(format!("POST {path}: HTTP {status}")),
        }
    }

    async fn dashboard_get(
        &self,
        path: &str,
        cookies: &mut HashMap<String, String>,
    ) -> Result<String, String> {
        let url = format!("{}{path}", self.stack.url("dashboard"));
        let r = self
            .http
            .get(&url)
            .header(reqwest::header::COOKIE, cookie_header(cookies))
            .send()
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        take_cookies(&r, cookies);
        let status = r.status();
        let body = r.text().await.map_err(|e| format!("GET {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("GET {path} on the dashboard: HTTP {status}"));
        }
        Ok(body)
    }

    async fn dashboard_post(
        &self,
        path: &str,
        form: &[(&str, &str)],
        cookies: &mut HashMap<String, String>,
    ) -> Result<u16, String> {
        let url = format!("{}{path}", self.stack.url("dashboard"));
        let r = self
            .http
            .post(&url)
            .header(reqwest::header::COOKIE, cookie_header(cookies))
            .form(form)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        take_cookies(&r, cookies);
        Ok(r.status().as_u16())
    }

    /// The DLQ item ids of the last publish, in order.
    async fn dlq_items(&self) -> Result<Vec<i64>, String> {
        if self.last.is_empty() {
            return Err("no earlier publish step whose DLQ items to act on".into());
        }
        let db = self.stack.admin_db().await?;
        let mut items = Vec::new();
        for o in &self.last {
            let row = self
                .dlq_row(&db, o.stream_seq)
                .await?
                .ok_or_else(|| format!("stream seq {} has no DLQ item", o.stream_seq))?;
            items.push(row.get("id"));
        }
        Ok(items)
    }

    /// The DLQ row of the intake message at `seq` (its identity: the sequence and the
    /// message's JetStream storage time), if the writer made one.
    async fn dlq_row(
        &self,
        db: &tokio_postgres::Client,
        seq: u64,
    ) -> Result<Option<tokio_postgres::Row>, String> {
        let stored_at = self.stored_at(seq).await?;
        db.query_opt(
            "SELECT id, code, detail FROM dlq_items WHERE stream_seq = $1 AND stored_at = $2",
            &[&(seq as i64), &stored_at],
        )
        .await
        .map_err(|e| format!("reading dlq_items: {e}"))
    }

    async fn dashboard_retry(&mut self) -> Result<Vec<Outcome>, String> {
        let items = self.dlq_items().await?;
        let mut cookies = self.dashboard_login().await?;
        let db = self.stack.admin_db().await?;
        let mut outcomes = Vec::new();
        for (id, old) in items.iter().zip(self.last.clone()) {
            self.dashboard_act(*id, "retry", &[], &mut cookies).await?;
            let seq: i64 = db
                .query_opt(
                    "SELECT stream_seq FROM dlq_actions WHERE dlq_id = $1 AND action = 'retry' ORDER BY id DESC LIMIT 1",
                    &[id],
                )
                .await
                .map_err(|e| format!("reading dlq_actions: {e}"))?
                .ok_or_else(|| format!("the retry of DLQ item {id} left no dlq_actions row"))?
                .get(0);
            outcomes.push(Outcome {
                raw: old.raw,
                stream_seq: seq as u64,
                jetstream_duplicate: false,
                ack: None,
            });
        }
        self.dashboard_cookies = Some(cookies);
        self.await_acks(&mut outcomes).await?;
        Ok(outcomes)
    }

    async fn dashboard_discard(&mut self, note: &str) -> Result<(), String> {
        let items = self.dlq_items().await?;
        let mut cookies = self.dashboard_login().await?;
        let db = self.stack.admin_db().await?;
        for id in items {
            self.dashboard_act(id, "discard", &[("note", note)], &mut cookies)
                .await?;
            let found = db
                .query_opt(
                    "SELECT actor FROM dlq_actions WHERE dlq_id = $1 AND action = 'discard' AND note = $2",
                    &[&id, &note],
                )
                .await
                .map_err(|e| format!("reading dlq_actions: {e}"))?;
            if found.is_none() {
                return Err(format!(
                    "the discard of DLQ item {id} left no dlq_actions row with the note"
                ));
            }
        }
        self.dashboard_cookies = Some(cookies);
        Ok(())
    }

    /// When JetStream stored intake message `seq`. With the sequence it names the
    /// message's DLQ row (migration V10): a recreated stream numbers messages from 1 again,
    /// so the sequence alone may name an older message's row.
    async fn stored_at(&self, seq: u64) -> Result<chrono::DateTime<chrono::Utc>, String> {
        let js = jetstream::new(self.stack.admin.clone());
        let name = self.stack.names.intake_stream();
        let m = js
            .get_stream(&name)
            .await
            .map_err(|e| format!("the intake stream {name}: {e}"))?
            .get_raw_message(seq)
            .await
            .map_err(|e| format!("message {seq} of {name}: {e}"))?;
        i64::try_from(m.time.unix_timestamp_nanos())
            .map(chrono::DateTime::from_timestamp_nanos)
            .map_err(|_| format!("message {seq} of {name}: time {} out of range", m.time))
    }

    async fn intake_last_seq(&self) -> Result<u64, String> {
        let js = jetstream::new(self.stack.admin.clone());
        let mut s = js
            .get_stream(self.stack.names.intake_stream())
            .await
            .map_err(|e| format!("the intake stream: {e}"))?;
        Ok(s.info()
            .await
            .map_err(|e| format!("the intake stream's info: {e}"))?
            .state
            .last_sequence)
    }

    async fn refuse_publish(&mut self, user: &str, to: &str) -> Result<(), String> {
        let before = self.intake_last_seq().await?;
        let client = self.conn(user).await?;
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let body = b"{\"sdf\": \"a publish that must be refused\"}".to_vec();
        let subject = self.stack.names.intake_subject(to);
        let stored = match js.publish(subject.clone(), body.into()).await {
            Ok(f) => f.await.is_ok(),
            Err(_) => false,
        };
        let after = self.intake_last_seq().await?;
        if stored || after != before {
            return Err(format!(
                "{user} published to {subject}: the intake stream went from seq {before} to {after}"
            ));
        }
        Ok(())
    }

    async fn refuse_subscribe(&mut self, user: &str, subject: &str) -> Result<(), String> {
        let full = format!("{}.{subject}", self.stack.prefix);
        let probe_subject = full.replace(['>', '*'], "sdf-probe");
        let client = self.conn(user).await?;
        let mut spy = client
            .subscribe(full.clone())
            .await
            .map_err(|e| format!("the subscribe call: {e}"))?;
        let _ = client.flush().await;
        // The control: the admin, who may read it, does receive the probe.
        let mut control = self
            .stack
            .admin
            .subscribe(probe_subject.clone())
            .await
            .map_err(|e| format!("the admin's control subscription: {e}"))?;
        let _ = self.stack.admin.flush().await;
        tokio::time::sleep(Duration::from_millis(200)).await;
        self.stack
            .admin
            .publish(probe_subject.clone(), "sdf probe: not for you".into())
            .await
            .map_err(|e| format!("publishing the probe: {e}"))?;
        let _ = self.stack.admin.flush().await;
        if tokio::time::timeout(Duration::from_secs(2), control.next())
            .await
            .ok()
            .flatten()
            .is_none()
        {
            return Err(format!(
                "the control failed: the admin did not receive the probe on {probe_subject}"
            ));
        }
        if let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(1500), spy.next()).await {
            return Err(format!("{user} received a message on {full}"));
        }
        Ok(())
    }

    async fn refuse_jetstream_api(&mut self, user: &str) -> Result<(), String> {
        let client = self.conn(user).await?;
        let mut js = jetstream::new(client);
        js.set_timeout(Duration::from_secs(2));
        let intake = self.stack.names.intake_stream();
        if js.delete_stream(&intake).await.is_ok() {
            return Err(format!("{user} deleted stream {intake}"));
        }
        let mallory = format!("{}_MALLORY", self.stack.prefix.to_uppercase());
        let created = js
            .create_stream(jetstream::stream::Config {
                name: mallory.clone(),
                subjects: vec![format!("{}-mallory.>", self.stack.prefix)],
                ..Default::default()
            })
            .await
            .is_ok();
        let admin = jetstream::new(self.stack.admin.clone());
        if created {
            let _ = admin.delete_stream(&mallory).await;
            return Err(format!("{user} created stream {mallory}"));
        }
        if admin.get_stream(&intake).await.is_err() {
            return Err(format!("stream {intake} is gone"));
        }
        Ok(())
    }

    async fn refuse_sql(&mut self, role: &str, statements: &[String]) -> Result<(), String> {
        let url = self.stack.db.url(role);
        let mut c = ace_core::db::connect(&url)
            .await
            .map_err(|e| format!("connecting as {role}: {e}"))?;
        for s in statements {
            let tx = c
                .transaction()
                .await
                .map_err(|e| format!("as {role}: BEGIN: {e}"))?;
            // Inside a transaction that is always rolled back: a statement wrongly allowed
            // is reported, and undone.
            let result = tx.batch_execute(s).await;
            let _ = tx.rollback().await;
            match result {
                Ok(()) => return Err(format!("{role} was allowed: {s}")),
                Err(e) => {
                    let code = e.code().map(|c| c.code().to_string()).unwrap_or_default();
                    if code != "42501" {
                        return Err(format!(
                            "{role}: {s}: refused, but not for want of a privilege (SQLSTATE {code}): {e}"
                        ));
                    }
                }
            }
        }
        Ok(())
    }

    async fn anchored(&mut self, sinks: &[String], within: Duration) -> Result<(), String> {
        let height: i64 = self
            .vars
            .get("block")
            .ok_or("anchored needs an earlier accepted publish (its block)")?
            .parse()
            .map_err(|e| format!("block: {e}"))?;
        let db = self.stack.admin_db().await?;
        let deadline = Instant::now() + within;
        loop {
            let rows = db
                .query(
                    "SELECT DISTINCT sink FROM anchor_receipts WHERE height >= $1",
                    &[&height],
                )
                .await
                .map_err(|e| format!("reading anchor_receipts: {e}"))?;
            let have: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            let missing: Vec<&String> = sinks.iter().filter(|s| !have.contains(s)).collect();
            if missing.is_empty() {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "no receipt at or after block {height} from {missing:?} within {} s; anchor log:\n{}",
                    within.as_secs(),
                    self.log_tail("anchor")
                ));
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    fn audit(&self, verify_signatures: bool, receipts: bool) -> Result<(), String> {
        let reader = self.stack.url("reader");
        let mut args: Vec<String> = vec![
            "audit".into(),
            "--ledger-key".into(),
            self.stack.ledger_vkey.clone(),
            "--reader".into(),
            reader,
        ];
        if verify_signatures {
            args.push("--verify-signatures".into());
        }
        if receipts {
            args.extend([
                "--tsa-cert".into(),
                self.stack.tsa_ca.display().to_string(),
                "--witness-key".into(),
                self.stack.witness_vkey.clone(),
            ]);
        }
        let a: Vec<&str> = args.iter().map(String::as_str).collect();
        // An auditor's access: the read-only role.
        let out = self
            .stack
            .acectl_env(
                &a,
                &[("ACE_DATABASE_URL", &self.stack.db.url("ace_reader"))],
            )
            .map_err(|e| e.to_string())?;
        if !out.contains("audit passed") {
            return Err(format!("acectl audit did not say it passed: {out}"));
        }
        if receipts {
            let line = out
                .lines()
                .find(|l| l.contains("witness cosignatures and"))
                .ok_or_else(|| format!("acectl audit printed no receipts line: {out}"))?;
            let numbers: Vec<u64> = line
                .split(|c: char| !c.is_ascii_digit())
                .filter_map(|w| w.parse().ok())
                .collect();
            // "N (…), …; C witness cosignatures and T time-stamp tokens verified"
            let n = numbers.len();
            if n < 2 || numbers[n - 2] == 0 || numbers[n - 1] == 0 {
                return Err(format!(
                    "no verified cosignature or time-stamp token: {line}"
                ));
            }
        }
        Ok(())
    }
}

fn chrono_now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn csrf(page: &str) -> Result<String, String> {
    let marker = "name=\"csrf\" value=\"";
    let i = page
        .find(marker)
        .ok_or("the dashboard page has no CSRF field")?;
    let rest = &page[i + marker.len()..];
    let end = rest.find('"').ok_or("an unterminated CSRF field")?;
    Ok(rest[..end].to_string())
}

fn cookie_header(c: &HashMap<String, String>) -> String {
    c.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("; ")
}

fn take_cookies(r: &reqwest::Response, cookies: &mut HashMap<String, String>) {
    for v in r.headers().get_all(reqwest::header::SET_COOKIE) {
        let Ok(v) = v.to_str() else { continue };
        let first = v.split(';').next().unwrap_or("");
        if let Some((k, val)) = first.split_once('=') {
            if val.is_empty() || v.contains("Max-Age=0") {
                cookies.remove(k);
            } else {
                cookies.insert(k.to_string(), val.to_string());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csrf_fields_and_cookies() {
        assert_eq!(
            csrf("<input type=hidden name=\"csrf\" value=\"abc\">").as_deref(),
            Ok("abc")
        );
        assert!(csrf("<form></form>").is_err());
        let mut c = HashMap::new();
        c.insert("ace_session".to_string(), "x".to_string());
        assert_eq!(cookie_header(&c), "ace_session=x");
    }
}
