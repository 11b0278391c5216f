//! core::tsa against a real TSA: OpenSSL's `ts -reply`, with certificates made now.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use ace_core::tsa::{request, verify_response, verify_token, TsaError, TsaTrust};
use ace_testkit::tsa::{KeyKind, Resign, TestTsa};
use sha2::{Digest, Sha256};

const DATA: &[u8] = b"anchor.test/log\n30\nroot\n\n\xe2\x80\x94 sig\n";

fn tsa(kind: KeyKind) -> TestTsa {
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-tsa-"));
    TestTsa::create(&dir, kind).unwrap()
}

fn trust(pem: &str) -> TsaTrust {
    TsaTrust::from_pem(pem).unwrap()
}

/// A query made by `openssl ts -query` with `args` (e.g. another digest or a policy).
fn openssl_query(args: &[&str]) -> Vec<u8> {
    let dir = std::env::temp_dir().join(ace_testkit::unique("ace-tsq-"));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("d"), b"a").unwrap();
    let out = std::process::Command::new("openssl")
        .current_dir(&dir)
        .args(["ts", "-query", "-data", "d", "-cert", "-out", "q.tsq"])
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::read(dir.join("q.tsq")).unwrap()
}

#[test]
fn tokens_from_rsa_and_ec_tsas_verify_here_and_with_openssl() {
    for (kind, key_name) in [
        (KeyKind::Rsa2048, "RSA key"),
        (KeyKind::EcP256, "ECDSA P-256 key"),
    ] {
        let t = tsa(kind);
        let ca = trust(&t.ca_pem());
        let req = request(DATA, 0x8000_0000_0000_0001).unwrap();
        let resp = t.reply(&req.der).unwrap();
        let token = verify_response(&resp, &req, DATA, &ca).unwrap();
        assert_eq!(token.nonce, Some(0x8000_0000_0000_0001), "{kind:?}");
        assert_eq!(token.policy_oid, "1.2.3.4.1");
        assert_eq!(token.signer_subject, "CN=ACE Test TSA");
        // OpenSSL's serial file holds the last serial used, starting from 01.
        assert_eq!(token.serial_hex, "02");
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        assert!((now - token.gen_time_ms).abs() < 60_000);
        t.verify_with_openssl(DATA, &token.token_der).unwrap();

        // The stored token alone, as the audit checks it: with the CA, the TSA's own
        // certificate pinned, or both in one PEM text.
        assert_eq!(
            verify_token(&token.token_der, DATA, None, &ca).unwrap(),
            token
        );
        verify_token(&token.token_der, DATA, None, &trust(&t.tsa_cert_pem())).unwrap();
        let both = format!("{}{}", t.tsa_cert_pem(), t.ca_pem());
        verify_token(&token.token_der, DATA, Some(req.nonce), &trust(&both)).unwrap();

        // Other data.
        let e = verify_token(&token.token_der, b"other", None, &ca).unwrap_err();
        assert!(matches!(e, TsaError::Imprint { .. }), "{e}");
        assert_eq!(
            e.to_string(),
            format!(
                "message imprint is sha256:{}, expected sha256:{}",
                hex::encode(Sha256::digest(DATA)),
                hex::encode(Sha256::digest(b"other"))
            )
        );
        // Another nonce.
        let e = verify_token(&token.token_der, DATA, Some(7), &ca).unwrap_err();
        assert_eq!(
            e.to_string(),
            "nonce 9223372036854775809 in the token, 7 in the request"
        );
        // A trust store holding another CA, whose name is the same as this one's.
        let other = tsa(kind);
        let e = verify_token(&token.token_der, DATA, None, &trust(&other.ca_pem())).unwrap_err();
        assert!(matches!(e, TsaError::Untrusted { .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with(
                "signer certificate is not signed by any configured TSA trust certificate \
                 (subject CN=ACE Test TSA, issuer CN=ACE Test TSA CA; trusted: CN=ACE Test TSA CA)"
            ),
            "{text}"
        );
        assert!(
            text.ends_with(&format!(
                "the signature over the signer certificate does not verify with this trust \
                 certificate's {key_name}"
            )),
            "{text}"
        );
        // Another TSA's certificate pinned.
        let e =
            verify_token(&token.token_der, DATA, None, &trust(&other.tsa_cert_pem())).unwrap_err();
        assert!(matches!(e, TsaError::Untrusted { .. }), "{e}");

        // One flipped byte in the signature (the last field of the token).
        let mut bad = token.token_der.clone();
        let n = bad.len();
        bad[n - 1] ^= 0x01;
        let e = verify_token(&bad, DATA, None, &ca).unwrap_err();
        assert_eq!(
            e.to_string(),
            format!("signature over signedAttrs does not verify with the signer certificate's {key_name}")
        );
        assert!(t.verify_with_openssl(DATA, &bad).is_err());

        // The TSTInfo changed after signing (policy 1.2.3.4.1 → 1.2.3.4.2): the
        // message-digest attribute no longer matches.
        let policy = [0x06, 0x04, 0x2a, 0x03, 0x04, 0x01];
        let at = token
            .token_der
            .windows(policy.len())
            .position(|w| w == policy)
            .unwrap();
        let mut bad = token.token_der.clone();
        bad[at + policy.len() - 1] = 0x02;
        let e = verify_token(&bad, DATA, None, &ca).unwrap_err();
        assert!(matches!(e, TsaError::Attributes(_)), "{e}");
        assert!(
            e.to_string().starts_with("signedAttrs: message-digest is "),
            "{e}"
        );

        // Signed with a certificate of the same CA that is not for time-stamping.
        let plain = t
            .resign(&token.token_der, Resign::NoTimeStampingEku)
            .unwrap();
        let e = verify_token(&plain, DATA, None, &ca).unwrap_err();
        assert_eq!(
            e.to_string(),
            "signer certificate has no extended key usage id-kp-timeStamping \
             (subject CN=ACE Test not a TSA)"
        );
        // The TSA's own certificate named by subjectKeyIdentifier, with OpenSSL's CMS
        // signed attributes: still the TSA's token.
        let by_key_id = t.resign(&token.token_der, Resign::TsaByKeyId).unwrap();
        let v = verify_token(&by_key_id, DATA, Some(req.nonce), &ca).unwrap();
        assert_eq!(v.gen_time_ms, token.gen_time_ms);
        assert_eq!(v.signer_subject, "CN=ACE Test TSA");
        // Without an attribute naming the signer certificate by hash.
        let bare = t
            .resign(&token.token_der, Resign::TsaWithoutEssCertId)
            .unwrap();
        let e = verify_token(&bare, DATA, None, &ca).unwrap_err();
        assert_eq!(
            e.to_string(),
            "signedAttrs: neither signingCertificate nor signingCertificateV2: nothing \
             names the signer certificate"
        );
    }
}

#[test]
fn a_response_to_another_request_is_refused() {
    let t = tsa(KeyKind::EcP256);
    let ca = trust(&t.ca_pem());
    let first = request(b"a", 1).unwrap();
    let second = request(b"a", 2).unwrap();
    let resp = t.reply(&first.der).unwrap();
    let e = verify_response(&resp, &second, b"a", &ca).unwrap_err();
    assert_eq!(e.to_string(), "nonce 1 in the token, 2 in the request");
    verify_response(&resp, &first, b"a", &ca).unwrap();
}

#[test]
fn signer_named_by_sha1_ess_cert_id() {
    // Older TSAs name their certificate in a signingCertificate (SHA-1 ESSCertID).
    let t = tsa(KeyKind::Rsa2048);
    let cnf = std::fs::read_to_string(t.config_path()).unwrap();
    std::fs::write(
        t.config_path(),
        cnf.replace("ess_cert_id_alg = sha256", "ess_cert_id_alg = sha1"),
    )
    .unwrap();
    let req = request(DATA, 5).unwrap();
    let token =
        verify_response(&t.reply(&req.der).unwrap(), &req, DATA, &trust(&t.ca_pem())).unwrap();
    t.verify_with_openssl(DATA, &token.token_der).unwrap();
}

#[test]
fn a_token_stamped_after_its_certificate_expired_is_refused() {
    let t = tsa(KeyKind::EcP256);
    let req = request(DATA, 6).unwrap();
    let resp = t.reply_after_certificate_expiry(&req.der).unwrap();
    let e = verify_response(&resp, &req, DATA, &trust(&t.ca_pem())).unwrap_err();
    assert!(matches!(e, TsaError::Validity { .. }), "{e}");
    let text = e.to_string();
    assert!(
        text.starts_with("genTime 20")
            && text.contains(" is outside the signer certificate's validity ")
            && text.ends_with("(subject CN=ACE Test TSA lapsed)"),
        "{text}"
    );
}

#[test]
fn refusals_name_the_status_text_and_failure() {
    let t = tsa(KeyKind::EcP256);
    let ca = trust(&t.ca_pem());
    let req = request(b"a", 1).unwrap();
    // A digest the TSA does not accept, and a policy it does not have.
    for (args, fail) in [
        (&["-sha1"][..], ", failInfo badAlg"),
        (
            &["-sha256", "-tspolicy", "1.9.9"][..],
            ", failInfo unacceptedPolicy",
        ),
    ] {
        let e =
            verify_response(&t.reply(&openssl_query(args)).unwrap(), &req, b"a", &ca).unwrap_err();
        assert!(matches!(e, TsaError::Status { status: 2, .. }), "{e}");
        let text = e.to_string();
        assert!(
            text.starts_with("TSA answered status rejection (2): ") && text.ends_with(fail),
            "{text}"
        );
    }
}

/// One HTTP/1.1 exchange with `Connection: close`: the status line, headers and body.
async fn post(addr: std::net::SocketAddr, content_type: &str, body: &[u8]) -> (String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!(
        "POST / HTTP/1.1\r\nHost: tsa\r\nContent-Type: {content_type}\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut all = Vec::new();
    s.read_to_end(&mut all).await.unwrap();
    let split = all.windows(4).position(|w| w == b"\r\n\r\n").unwrap();
    (
        String::from_utf8_lossy(&all[..split]).into_owned(),
        all[split + 4..].to_vec(),
    )
}

#[tokio::test]
async fn served_over_http_and_down_on_demand() {
    let t = Arc::new(tsa(KeyKind::Rsa2048));
    let ca = trust(&t.ca_pem());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let down = t.down();
    let server = tokio::spawn(t.clone().serve(listener));

    let req = request(DATA, 42).unwrap();
    let (head, body) = post(addr, "application/timestamp-query", &req.der).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/timestamp-reply"),
        "{head}"
    );
    let token = verify_response(&body, &req, DATA, &ca).unwrap();
    t.verify_with_openssl(DATA, &token.token_der).unwrap();

    let (head, _) = post(addr, "text/plain", &req.der).await;
    assert!(head.starts_with("HTTP/1.1 415 "), "{head}");

    down.store(true, Ordering::SeqCst);
    let (head, _) = post(addr, "application/timestamp-query", &req.der).await;
    assert!(head.starts_with("HTTP/1.1 503 "), "{head}");
    down.store(false, Ordering::SeqCst);
    let (head, body) = post(addr, "application/timestamp-query", &req.der).await;
    assert!(head.starts_with("HTTP/1.1 200 "), "{head}");
    verify_response(&body, &req, DATA, &ca).unwrap();
    server.abort();
}
