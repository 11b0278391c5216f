//! The worked examples of DESIGN.md (`core/tests/data/contract.json`), reproduced byte for
//! byte, and published outside vectors for the same formats.

use std::collections::HashMap;

use ace_core::checkpoint::{
    open_checkpoint, open_checkpoint_bytes, open_note, sign_checkpoint, sign_note, Checkpoint,
    NoteSigner, NoteVerifier,
};
use ace_core::envelope::{envelope_sha256, pae, Envelope, IN_TOTO_PAYLOAD_TYPE};
use ace_core::ids::{EnvelopeDigest, KeyId};
use ace_core::keys::{verify_envelope, RegisteredKey};
use ace_core::leaf::LeafRecord;
use ace_core::rejection::RejectionCode;
use ace_core::statement::Statement;
use ed25519_dalek::SigningKey;
use serde_json::Value;

fn contract() -> Value {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/contract.json");
    let text = std::fs::read_to_string(path).expect("read contract.json");
    serde_json::from_str(&text).expect("contract.json is JSON")
}

fn s<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key]
        .as_str()
        .unwrap_or_else(|| panic!("{key} is a string"))
}

fn seed(hex_seed: &str) -> [u8; 32] {
    hex::decode(hex_seed).unwrap().try_into().unwrap()
}

#[test]
fn dsse() {
    let c = contract();
    let d = &c["dsse"];
    let key = SigningKey::from_bytes(&seed(s(d, "producer_seed")));
    assert_eq!(
        hex::encode(key.verifying_key().as_bytes()),
        s(d, "producer_public_key")
    );
    let keyid = KeyId::from_public_key(&key.verifying_key());
    assert_eq!(keyid.as_str(), s(d, "keyid"));

    let payload = s(d, "payload_text").as_bytes();
    assert_eq!(s(d, "payload_type"), IN_TOTO_PAYLOAD_TYPE);
    assert_eq!(hex::encode(pae(IN_TOTO_PAYLOAD_TYPE, payload)), s(d, "pae"));

    let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, payload, &key);
    let text = env.to_json();
    assert_eq!(std::str::from_utf8(&text).unwrap(), s(d, "envelope_text"));
    assert_eq!(env.digest().as_str(), s(d, "envelope_digest"));
    assert_eq!(
        EnvelopeDigest::from_pae(&env.pae()).as_str(),
        s(d, "envelope_digest")
    );
    assert_eq!(envelope_sha256(&text), s(d, "envelope_sha256"));

    let parsed = Envelope::parse(s(d, "envelope_text").as_bytes()).unwrap();
    assert_eq!(parsed, env);
    assert_eq!(parsed.to_json(), text);

    let mut keys = HashMap::new();
    let reg = RegisteredKey::new("acme-build", key.verifying_key(), 0);
    keys.insert(reg.keyid.as_str().to_owned(), reg);
    let now = 1_767_225_600_123;
    assert_eq!(
        verify_envelope(&parsed, &parsed.pae(), "acme-build", &keys, now).unwrap(),
        keyid
    );
    assert_eq!(
        verify_envelope(&parsed, &parsed.pae(), "other", &keys, now)
            .unwrap_err()
            .code,
        RejectionCode::WrongProducerKey
    );

    let st = Statement::parse(&parsed.payload).unwrap();
    let rows = st.subjects();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].name, "app-1.2.3.tar.gz");
    assert_eq!(rows[0].algorithm, "sha256");
    assert_eq!(st.predicate_type, "https://slsa.dev/provenance/v1");
}

#[test]
fn leaf() {
    let c = contract();
    let d = &c["dsse"];
    let l = &c["leaf"];
    let record = LeafRecord {
        digest: s(d, "envelope_digest").to_owned(),
        envelope_sha256: s(d, "envelope_sha256").to_owned(),
        index: 0,
        integrated_time: 1_767_225_600_123,
        producer: "acme-build".to_owned(),
    };
    assert_eq!(
        std::str::from_utf8(&record.to_bytes()).unwrap(),
        s(l, "record_text")
    );
    assert_eq!(hex::encode(record.leaf_hash()), s(l, "leaf_hash"));
    assert_eq!(
        LeafRecord::parse(s(l, "record_text").as_bytes()).unwrap(),
        record
    );
}

#[test]
fn checkpoint() {
    let c = contract();
    let cp_v = &c["checkpoint"];
    let origin = s(cp_v, "origin");
    let signer = NoteSigner::from_seed(origin, seed(s(cp_v, "ledger_seed"))).unwrap();
    assert_eq!(signer.verifier_key(), s(cp_v, "vkey"));
    let verifier = NoteVerifier::parse(s(cp_v, "vkey")).unwrap();
    assert_eq!(verifier, signer.verifier());
    let back = NoteSigner::parse_key_file(&signer.to_key_file()).unwrap();
    assert_eq!(back.verifier_key(), s(cp_v, "vkey"));

    let cp = Checkpoint {
        origin: origin.to_owned(),
        tree_size: cp_v["tree_size"].as_u64().unwrap(),
        root_hash: hex::decode(s(cp_v, "root_hash"))
            .unwrap()
            .try_into()
            .unwrap(),
        extensions: vec![],
    };
    // The root of the reference leaves at size 7 (the merkle section).
    assert_eq!(s(cp_v, "root_hash"), s(&c["merkle"]["roots"], "7"));

    let note = sign_checkpoint(&cp, &[&signer]).unwrap();
    assert_eq!(note, s(cp_v, "note_text"));
    assert_eq!(
        open_checkpoint(s(cp_v, "note_text"), std::slice::from_ref(&verifier)).unwrap(),
        cp
    );

    let bytes = note.as_bytes();
    for i in 0..bytes.len() {
        let mut flipped = bytes.to_vec();
        flipped[i] ^= 0x01;
        assert!(
            open_checkpoint_bytes(&flipped, std::slice::from_ref(&verifier)).is_err(),
            "flipping byte {i} was not detected"
        );
    }
}

/// secure-systems-lab/dsse protocol.md, "Test Vectors": PAE of the HelloWorld example.
#[test]
fn dsse_protocol_pae_example() {
    assert_eq!(
        pae("http://example.com/HelloWorld", b"hello world"),
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    );
}

/// secure-systems-lab/dsse testvectors/vectors.json (commit 82043adf): ed25519 keys of
/// RFC 8032 section 7.1 TEST 1 and TEST 2, so the signatures are deterministic and ours
/// must match them exactly.
#[test]
fn dsse_repository_ed25519_vectors() {
    let key_a = SigningKey::from_bytes(&seed(
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
    ));
    let key_b = SigningKey::from_bytes(&seed(
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
    ));
    assert_eq!(
        hex::encode(key_a.verifying_key().as_bytes()),
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
    );
    let statement = br#"{"_type":"https://in-toto.io/Statement/v1"}"#;

    // "single-signature"
    let env = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, statement, &key_a);
    assert_eq!(
        hex::encode(env.pae()),
        "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203433207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d"
    );
    let doc = r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"}]}"#;
    let parsed = Envelope::parse(doc.as_bytes()).unwrap();
    assert_eq!(parsed.payload, statement);
    assert_eq!(parsed.signatures[0].sig, env.signatures[0].sig);

    // "url-safe-base64"
    let doc = r#"{"payload":"-_-_Pj8=","payloadType":"application/vnd.in-toto+json","signatures":[{"sig":"P-_KHICeR7tI6S_YyejJTRtrXhcQyQ2LYPaL8h90KjC9qN8HU_svOQ6TuDOT1HIrsGW886DbWNWcCmX5twLrAw==","keyid":"A"}]}"#;
    let parsed = Envelope::parse(doc.as_bytes()).unwrap();
    assert_eq!(
        hex::encode(parsed.pae()),
        "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203520fbffbf3e3f"
    );
    let ours = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, &parsed.payload, &key_a);
    assert_eq!(parsed.signatures[0].sig, ours.signatures[0].sig);

    // "non-ascii-payload-type": LEN counts UTF-8 bytes.
    assert_eq!(
        hex::encode(pae("application/vnd.exämple+json", statement)),
        "445353457631203239206170706c69636174696f6e2f766e642e6578c3a46d706c652b6a736f6e203433207b225f74797065223a2268747470733a2f2f696e2d746f746f2e696f2f53746174656d656e742f7631227d"
    );
    let ours = Envelope::sign("application/vnd.exämple+json", statement, &key_a);
    assert_eq!(
        ours.signatures[0].sig,
        base64_std("xmSk/ug66ysT7ayhkCIjhAq42zgZXSsEWuzUaNL7w2eGAdF/NU6/fRXPtmfN+5DNSAs5/i2lUnHjbbjPsu0tAw==")
    );

    // "empty-payload": signed as "... 0 " with a trailing space.
    let ours = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, b"", &key_a);
    assert_eq!(
        hex::encode(ours.pae()),
        "445353457631203238206170706c69636174696f6e2f766e642e696e2d746f746f2b6a736f6e203020"
    );
    assert_eq!(
        ours.signatures[0].sig,
        base64_std("gSggCAaTLTYyRH6FIDBem6meyIynsYy8RTHVzwx9tnTb7Bg/1jMWnuVgI/gffqmbsC2VX5/jHfkkDqsj7CDbDg==")
    );

    // "empty-payload-type": rejected (our parse refuses an empty payloadType).
    let doc = r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"","signatures":[{"sig":"iC3q/+3Rm0+lpAJRueDmDh15PnwCfxKmS0NAfKsbv+zgulXQC/WM9trc+j1XEqlwDIg/vf/uNfebeD6sxInrDg==","keyid":"A"}]}"#;
    let r = Envelope::parse(doc.as_bytes()).unwrap_err();
    assert_eq!(r.field.as_deref(), Some("payloadType"));

    // "payload-type-swapped": the signature covers the in-toto type, so it fails.
    let mut keys = HashMap::new();
    let reg = RegisteredKey::new("p", key_a.verifying_key(), 0);
    keys.insert("A".to_owned(), reg);
    let doc = r#"{"payload":"eyJfdHlwZSI6Imh0dHBzOi8vaW4tdG90by5pby9TdGF0ZW1lbnQvdjEifQ==","payloadType":"application/vnd.example.other+json","signatures":[{"sig":"2WAfaHm5jluo0w+0rk8uVkluELJYWjSmU9x7EUzx+AyteDGJ4/nqyJXfmAUVFIAoQafWm7AxBZNw5M9ixNHiCA==","keyid":"A"}]}"#;
    let swapped = Envelope::parse(doc.as_bytes()).unwrap();
    assert_eq!(
        verify_envelope(&swapped, &swapped.pae(), "p", &keys, 1)
            .unwrap_err()
            .code,
        RejectionCode::BadSignature
    );

    // "threshold-two-distinct-keys": key B's signature.
    let ours = Envelope::sign(IN_TOTO_PAYLOAD_TYPE, statement, &key_b);
    assert_eq!(
        ours.signatures[0].sig,
        base64_std("c1+67/aT0yqEpwx8PsVY3MLHsj9D0CZ014/Fv/QlG59P+9CobUZ7xECJ/V3USG0Ob9CiE5LjReEZUzNF2l7eBw==")
    );
}

fn base64_std(s: &str) -> Vec<u8> {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.decode(s).unwrap()
}

/// golang.org/x/mod sumdb/note/note_test.go (TestNewSigner, TestSign, TestOpen): the
/// PeterNeumann key pair and its published signature over the Peter Neumann quote.
#[test]
fn go_sumdb_note_vectors() {
    let skey = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz";
    let vkey = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW";
    let text = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n";
    let want = "If you think cryptography is the answer to your problem,\n\
                then you don't know what your problem is.\n\
                \n\
                \u{2014} PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n";

    let signer = NoteSigner::parse_key_file(skey).unwrap();
    assert_eq!(signer.verifier_key(), vkey);
    assert_eq!(signer.key_hash(), 0xc74f20a3);
    assert_eq!(sign_note(text, &[&signer]).unwrap(), want);

    let verifier = NoteVerifier::parse(vkey).unwrap();
    let opened = open_note(want, &[verifier]).unwrap();
    assert_eq!(opened.text, text);
    assert_eq!(opened.verified.len(), 1);
}
