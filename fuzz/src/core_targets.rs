//! The core fuzz targets: envelopes and their signatures, in-toto statements, checkpoints
//! and signed notes, cosigned notes and witness bodies, policy files.
//!
//! Each function takes any bytes and asserts what must hold for every input, so that a
//! wrong answer is caught as well as a panic. Keys are fixed (the producer and ledger keys
//! of shared/vectors/contract.json), so that seeds from the contract vectors verify and
//! the fuzzer reaches the code behind a good signature. The signed modes (odd first byte)
//! sign what the fuzzer gives: the fuzzer cannot forge signatures, and without them it
//! would never leave the rejection paths.

use std::collections::HashMap;
use std::sync::LazyLock;

use ace_core::checkpoint::{
    open_checkpoint, open_checkpoint_bytes, open_note, open_note_bytes, sign_checkpoint, sign_note,
    Checkpoint, NoteSigner, NoteVerifier, MAX_NOTE_BYTES,
};
use ace_core::envelope::{envelope_sha256, pae, Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::{EnvelopeDigest, KeyId};
use ace_core::keys::{verify_signers, RegisteredKey, Signers};
use ace_core::policy::{Candidate, Decision, Policy, RateLimiter, Tally};
use ace_core::rejection::{Rejection, RejectionCode};
use ace_core::statement::{Statement, STATEMENT_TYPE_V1};
use ace_core::witness::{
    add_checkpoint_body, cosigned_note as append_cosignatures, interpret_response, note_body,
    parse_add_checkpoint_body, verify_cosignature_lines, verify_cosigned_note,
    AddCheckpointOutcome, CosignatureSigner, CosignatureVerifier, MAX_PROOF_LINES, MAX_TIMESTAMP,
    SIZE_CONTENT_TYPE,
};
use ed25519_dalek::SigningKey;

/// The producer every envelope is verified for.
pub const PRODUCER: &str = "acme";
/// Integration time of every verification: 2026-01-01T00:00:00Z.
pub const NOW_MS: i64 = 1_767_225_600_000;
/// The ledger's origin in shared/vectors/contract.json.
pub const ORIGIN: &str = "example.com/ace-ledger-test";
/// The payload of shared/vectors/contract.json: what policies are evaluated against.
pub const CONTRACT_STATEMENT: &str = r#"{"_type":"https://in-toto.io/Statement/v1","subject":[{"name":"app-1.2.3.tar.gz","digest":{"sha256":"e7c0d1be9dcbe9d627666e135d957b244dc83d3cac9d2dfd3df560a5286ff12f"}}],"predicateType":"https://slsa.dev/provenance/v1","predicate":{"buildDefinition":{"buildType":"https://example.com/build@v1"}}}"#;

/// Producer signing keys, one per verdict of `verify_signers`.
struct Keys {
    /// The contract vector's producer key: registered to [`PRODUCER`], in validity.
    valid: SigningKey,
    /// Registered to another producer.
    foreign: SigningKey,
    /// [`PRODUCER`]'s, revoked before [`NOW_MS`].
    revoked: SigningKey,
    /// [`PRODUCER`]'s, valid until before [`NOW_MS`].
    expired: SigningKey,
    /// [`PRODUCER`]'s, valid only after [`NOW_MS`].
    future: SigningKey,
    /// Not registered at all.
    unknown: SigningKey,
    registry: HashMap<String, RegisteredKey>,
}

static KEYS: LazyLock<Keys> = LazyLock::new(|| {
    let valid = SigningKey::from_bytes(&std::array::from_fn(|i| i as u8 + 1));
    let [foreign, revoked, expired, future, unknown] =
        [2u8, 3, 4, 5, 6].map(|n| SigningKey::from_bytes(&[n; 32]));
    let mut registered = vec![
        RegisteredKey::new(PRODUCER, valid.verifying_key(), 0),
        RegisteredKey::new("other", foreign.verifying_key(), 0),
        RegisteredKey::new(PRODUCER, revoked.verifying_key(), 0),
        RegisteredKey::new(PRODUCER, expired.verifying_key(), 0),
        RegisteredKey::new(PRODUCER, future.verifying_key(), NOW_MS + 1),
    ];
    registered[2].revoked_at_ms = Some(NOW_MS - 1);
    registered[3].valid_until_ms = Some(NOW_MS - 1);
    let registry = registered
        .into_iter()
        .map(|k| (k.keyid.as_str().to_owned(), k))
        .collect();
    Keys {
        valid,
        foreign,
        revoked,
        expired,
        future,
        unknown,
        registry,
    }
});

/// The ledger's checkpoint key of the contract vectors, and a witness.
struct Notes {
    ledger: NoteSigner,
    verifiers: Vec<NoteVerifier>,
    witness: CosignatureSigner,
    witnesses: Vec<CosignatureVerifier>,
}

static NOTES: LazyLock<Notes> = LazyLock::new(|| {
    let ledger = NoteSigner::from_seed(ORIGIN, std::array::from_fn(|i| 0x65 + i as u8))
        .expect("the contract origin is a valid key name");
    let witness = CosignatureSigner::from_seed("witness.example.com/w1", [9; 32])
        .expect("a valid witness name");
    Notes {
        verifiers: vec![ledger.verifier()],
        witnesses: vec![witness.verifier()],
        ledger,
        witness,
    }
});

static STATEMENT: LazyLock<Statement> = LazyLock::new(|| {
    Statement::parse(CONTRACT_STATEMENT.as_bytes()).expect("the contract statement parses")
});

static BUILTIN_POLICY: LazyLock<Policy> = LazyLock::new(Policy::builtin);

/// `envelope` target. First byte even: the rest is envelope bytes as a producer publishes
/// them. Odd: the rest is a payload, signed by the keys the first byte's bits pick (bit 7
/// flips a bit of the first signature), then run as received bytes.
pub fn envelope(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        check_envelope(rest);
        return;
    }
    let keys = &*KEYS;
    let payload_type = if mode & 2 != 0 {
        IN_TOTO_PAYLOAD_TYPE
    } else {
        "application/octet-stream"
    };
    let mut env = Envelope {
        payload_type: payload_type.to_owned(),
        payload: rest.to_vec(),
        signatures: Vec::new(),
    };
    let picks = [
        (4, &keys.valid),
        (8, &keys.foreign),
        (16, &keys.revoked),
        (32, &keys.expired),
        (64, &keys.future),
    ];
    for (bit, key) in picks {
        if mode & bit != 0 {
            env.add_signature(key);
        }
    }
    if env.signatures.is_empty() {
        env.add_signature(&keys.unknown);
    }
    let tampered = mode & 128 != 0;
    if tampered {
        let at = rest.len() % 64;
        env.signatures[0].sig[at] ^= 1 << (rest.len() % 8);
    }
    let verdict =
        check_envelope(&env.to_json()).expect("an envelope built by Envelope::sign parses");
    let first_known = keys.registry.contains_key(&env.signatures[0].keyid);
    match verdict {
        Ok(signers) => {
            assert!(
                !tampered || !first_known,
                "a flipped signature bit verified"
            );
            assert_eq!(
                signers.keyid,
                KeyId::from_public_key(&keys.valid.verifying_key())
            );
        }
        Err(r) if tampered && first_known => {
            assert_eq!(r.code, RejectionCode::BadSignature, "{r}");
            assert_eq!(r.field.as_deref(), Some("signatures[0]"));
        }
        Err(r) => assert!(mode & 4 == 0, "the producer's valid key signed, yet {r}"),
    }
}

/// Parses received envelope bytes and verifies them as the writer does; `None` when they
/// are not an envelope.
fn check_envelope(raw: &[u8]) -> Option<Result<Signers, Rejection>> {
    let _ = envelope_sha256(raw);
    let env = match Envelope::parse(raw) {
        Ok(env) => env,
        Err(r) => {
            assert_eq!(r.code, RejectionCode::MalformedEnvelope, "{r}");
            assert!(
                r.field.is_some(),
                "a malformed envelope names no field: {r}"
            );
            return None;
        }
    };
    assert!(!env.payload_type.is_empty());
    assert!(!env.signatures.is_empty());
    assert!(env.signatures.iter().all(|s| s.sig.len() == 64));
    let signed = env.pae();
    assert_eq!(signed, pae(&env.payload_type, &env.payload));
    assert_eq!(env.digest(), EnvelopeDigest::from_pae(&signed));
    let again = Envelope::parse(&env.to_json()).expect("to_json of a parsed envelope parses");
    assert_eq!(again, env, "to_json does not give the envelope back");
    if env.payload_type == IN_TOTO_PAYLOAD_TYPE {
        statement(&env.payload);
    }
    let verdict = verify_signers(&env, &signed, PRODUCER, &KEYS.registry, NOW_MS);
    match &verdict {
        Ok(s) => assert!(s.valid_keys >= 1),
        Err(r) => {
            assert!(
                matches!(
                    r.code,
                    RejectionCode::BadSignature
                        | RejectionCode::KeyRevoked
                        | RejectionCode::KeyExpired
                        | RejectionCode::WrongProducerKey
                        | RejectionCode::UnknownKey
                ),
                "{r}"
            );
            assert!(r.field.is_some(), "{r}");
        }
    }
    Some(verdict)
}

/// `statement` target: a payload of type `application/vnd.in-toto+json`, parsed and put
/// to the built-in policy as the writer does.
pub fn statement(payload: &[u8]) {
    let st = match Statement::parse(payload) {
        Ok(st) => st,
        Err(r) => {
            assert_eq!(r.code, RejectionCode::MalformedStatement, "{r}");
            assert!(
                r.field.is_some(),
                "a malformed statement names no field: {r}"
            );
            return;
        }
    };
    assert_eq!(st.type_, STATEMENT_TYPE_V1);
    assert!(!st.subject.is_empty());
    assert!(st.subject.iter().all(|s| !s.digest.is_empty()));
    let rows = st.subjects();
    assert_eq!(
        rows.len(),
        st.subject.iter().map(|s| s.digest.len()).sum::<usize>()
    );
    assert!(rows
        .iter()
        .all(|r| !r.algorithm.is_empty() && !r.value.is_empty()));
    let policy = &*BUILTIN_POLICY;
    let mut e = policy.evaluate(&Candidate {
        producer: PRODUCER,
        payload_type: IN_TOTO_PAYLOAD_TYPE,
        envelope_bytes: payload.len(),
        statement: Some(&st),
        valid_signatures: 1,
    });
    RateLimiter::new().settle(policy, PRODUCER, &mut e, NOW_MS);
    let _ = policy.decide(&e);
}

/// `checkpoint` target. First byte even: the rest is a signed note as a client fetches
/// it, opened with the ledger's key, and also read as a checkpoint body and as key
/// strings. Odd: the rest is note text that the ledger signs; what it signs must open.
pub fn checkpoint(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let notes = &*NOTES;
    if mode & 1 == 1 {
        let Ok(text) = std::str::from_utf8(rest) else {
            return;
        };
        let Ok(note) = sign_note(text, &[&notes.ledger]) else {
            return;
        };
        let opened = open_note(&note, &notes.verifiers).expect("a note the ledger signed opens");
        assert_eq!(opened.text, text);
        assert_eq!(opened.verified.len(), 1);
        if let Ok(cp) = Checkpoint::parse_body(text) {
            let back = open_checkpoint(&note, &notes.verifiers).expect("a signed checkpoint opens");
            assert_eq!(back, cp);
        }
        return;
    }
    if let Ok(opened) = open_note_bytes(rest, &notes.verifiers) {
        assert!(!opened.verified.is_empty());
        assert!(opened.text.ends_with('\n'));
    }
    if let Ok(cp) = open_checkpoint_bytes(rest, &notes.verifiers) {
        assert_eq!(Checkpoint::parse_body(&cp.body()).ok(), Some(cp));
    }
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    if let Ok(cp) = Checkpoint::parse_body(text) {
        // Canonical: one checkpoint, one body.
        assert_eq!(cp.body(), text);
        if text.len() < MAX_NOTE_BYTES / 2 {
            let note = sign_checkpoint(&cp, &[&notes.ledger]).expect("a parsed checkpoint signs");
            let back = open_checkpoint(&note, &notes.verifiers).expect("a signed checkpoint opens");
            assert_eq!(back, cp);
        }
    }
    if let Ok(v) = NoteVerifier::parse(text) {
        assert_eq!(NoteVerifier::parse(&v.to_vkey()).ok(), Some(v));
    }
    if let Ok(s) = NoteSigner::parse_key_file(text) {
        assert_eq!(
            NoteSigner::parse_key_file(&s.to_key_file())
                .map(|s| s.verifier())
                .ok(),
            Some(s.verifier())
        );
    }
}

/// `cosigned_note` target; the first byte picks what the rest is:
/// 0: a cosigned checkpoint note, opened with the ledger's and a witness's keys;
/// 1: an `add-checkpoint` request body, as a witness reads it;
/// 2: a witness's answer (status and content type from the first byte's high bits);
/// 3: a checkpoint body that the ledger signs and the witness cosigns: it must verify.
pub fn cosigned_note(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let notes = &*NOTES;
    match mode % 4 {
        0 => {
            if let Ok((cp, cosignatures)) =
                verify_cosigned_note(text, &notes.verifiers, &notes.witnesses)
            {
                assert!(!cosignatures.is_empty());
                assert_eq!(Checkpoint::parse_body(&cp.body()).ok(), Some(cp));
                assert!(cosignatures.iter().all(|c| c.timestamp <= MAX_TIMESTAMP));
            }
            if let Some(body) = note_body(text) {
                let sigs = text.get(body.len() + 1..).unwrap_or("");
                let _ = verify_cosignature_lines(sigs, body, &notes.witnesses);
            }
        }
        1 => {
            if let Ok((old, proof, note)) = parse_add_checkpoint_body(text) {
                assert!(proof.len() <= MAX_PROOF_LINES);
                // Canonical: one request, one body.
                assert_eq!(add_checkpoint_body(old, &proof, note), text);
            }
        }
        2 => {
            let status = [200, 409, 404, 503][usize::from(mode >> 2) % 4];
            let content_type = [
                None,
                Some(SIZE_CONTENT_TYPE),
                Some("Text/X.Tlog.Size; charset=utf-8"),
                Some("text/plain"),
            ][usize::from(mode >> 4) % 4];
            let body = format!("{ORIGIN}\n7\n3bib5AOAnjJXUNPSY814kpwpQreUKjS3fhIslZSnTIw=\n");
            match interpret_response(status, content_type, text, &body, &notes.witnesses) {
                Ok(AddCheckpointOutcome::Cosigned(c)) => assert!(status == 200 && !c.is_empty()),
                Ok(AddCheckpointOutcome::Conflict { .. }) => assert_eq!(status, 409),
                Ok(AddCheckpointOutcome::Refused { body, .. }) => {
                    assert!(body.len() <= 1024 && text.starts_with(&body));
                }
                Err(_) => {}
            }
        }
        _ => {
            let Ok(cp) = Checkpoint::parse_body(text) else {
                if let Ok(v) = CosignatureVerifier::parse(text) {
                    assert_eq!(CosignatureVerifier::parse(&v.to_vkey()).ok(), Some(v));
                }
                return;
            };
            let Ok(note) = sign_checkpoint(&cp, &[&notes.ledger]) else {
                return;
            };
            let timestamp = (text.len() as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15) & MAX_TIMESTAMP;
            let line = notes.witness.cosign(text, timestamp);
            let cosigned = append_cosignatures(&note, std::slice::from_ref(&line));
            let (back, cosignatures) =
                verify_cosigned_note(&cosigned, &notes.verifiers, &notes.witnesses)
                    .expect("a checkpoint the ledger signed and the witness cosigned verifies");
            assert_eq!(back, cp);
            assert_eq!(cosignatures.len(), 1);
            assert_eq!(cosignatures[0].timestamp, timestamp);
            assert_eq!(cosignatures[0].line, line);
            // The ledger's own key ignores the witness's line.
            assert_eq!(open_checkpoint(&cosigned, &notes.verifiers).ok(), Some(cp));
        }
    }
}

/// `policy` target: a policy file's text, compiled, then evaluated against the contract
/// statement and an opaque payload, for the global rules and every producer section.
pub fn policy(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let policy = match Policy::parse(text) {
        Ok(p) => p,
        Err(e) => {
            assert!(!e.to_string().is_empty());
            return;
        }
    };
    assert!(policy.version().starts_with("sha256:"));
    let mut producers = vec![PRODUCER];
    producers.extend(policy.producers_with_overrides());
    let mut limiter = RateLimiter::new();
    let mut tally = Tally::default();
    for producer in producers {
        for (payload_type, statement) in [
            (IN_TOTO_PAYLOAD_TYPE, Some(&*STATEMENT)),
            ("application/octet-stream", None),
        ] {
            let candidate = Candidate {
                producer,
                payload_type,
                envelope_bytes: 1000,
                statement,
                valid_signatures: 1,
            };
            let mut e = policy.evaluate(&candidate);
            limiter.settle(&policy, producer, &mut e, NOW_MS);
            let decision = policy.decide(&e);
            if let Decision::Deny(r) = &decision {
                assert_eq!(r.code, RejectionCode::PolicyDenied);
            }
            tally.add(&policy, &e, &decision);
        }
    }
    let _ = tally.rules(&policy);
    let _ = tally.decisions();
}
