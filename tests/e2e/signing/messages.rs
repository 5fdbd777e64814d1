//! Signing through [`herald::signing::Signer`]: what gets signed, with which key, and what is
//! refused. Every signature is checked by mail-auth and dkimpy.

use herald::config::DkimAlgorithm::{Ed25519, Rsa};

use super::helpers::{
    count_signatures, dkimpy, mail_auth, message, sign_and_verify, signer, simple,
};

#[tokio::test]
async fn rsa_signature_verifies_and_signs_the_headers_present() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(dir.path(), &[("example.test", "s1", Rsa, true)]);
    let (signed, ours) =
        sign_and_verify(&signer, simple("billing@example.test"), "example.test").await;
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].a, "rsa-sha256");
    assert_eq!(ours[0].s, "s1");
    let mut h = ours[0].h.clone();
    h.sort();
    assert_eq!(
        h,
        [
            "content-type",
            "date",
            "from",
            "from",
            "message-id",
            "mime-version",
            "subject",
            "to"
        ],
        "each listed header present is signed, From twice, nothing absent"
    );
    assert!(signed.starts_with(b"DKIM-Signature: v=1; a=rsa-sha256;"));
}

#[tokio::test]
async fn ed25519_signature_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(dir.path(), &[("example.test", "ed", Ed25519, true)]);
    let (_, ours) = sign_and_verify(&signer, simple("billing@example.test"), "example.test").await;
    assert_eq!(ours.len(), 1);
    assert_eq!(ours[0].a, "ed25519-sha256");
}

#[tokio::test]
async fn a_domain_with_rsa_and_ed25519_keys_gets_both_signatures() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(
        dir.path(),
        &[
            ("example.test", "ed", Ed25519, true),
            ("example.test", "rsa", Rsa, true),
            ("example.test", "old", Rsa, false),
        ],
    );
    let (_, ours) = sign_and_verify(&signer, simple("billing@example.test"), "example.test").await;
    let mut algs: Vec<&str> = ours.iter().map(|v| v.a.as_str()).collect();
    algs.sort();
    assert_eq!(
        algs,
        ["ed25519-sha256", "rsa-sha256"],
        "the inactive key does not sign"
    );
    assert_eq!(
        signer.published_keys().len(),
        3,
        "the retiring key stays published"
    );
}

#[tokio::test]
async fn a_subdomain_sender_is_signed_by_the_nearest_configured_parent() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(
        dir.path(),
        &[
            ("example.test", "s1", Ed25519, true),
            ("eu.example.test", "s1", Ed25519, true),
        ],
    );
    sign_and_verify(
        &signer,
        simple("alerts@mail.corp.example.test"),
        "example.test",
    )
    .await;
    sign_and_verify(&signer, simple("alerts@eu.example.test"), "eu.example.test").await;
    sign_and_verify(
        &signer,
        simple("alerts@x.eu.example.test"),
        "eu.example.test",
    )
    .await;
}

#[tokio::test]
async fn eight_bit_and_smtputf8_messages_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(dir.path(), &[("example.test", "s1", Rsa, true)]);
    let msg = message(
        &[
            "From: Zoë Ångström <zoë.ångström@example.test>",
            "To: Jürgen <jürgen@empfänger.example>",
            "Subject: Grüße — 請求書 ✓",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
            "Content-Transfer-Encoding: 8bit",
        ],
        "Schöne Grüße aus Köln.\r\n日本語の本文。\r\n  trailing  spaces   \r\n\r\n\r\n",
    );
    sign_and_verify(&signer, msg, "example.test").await;
    // Raw Latin-1 bytes (not UTF-8) in the body.
    let mut latin1 = simple("billing@example.test");
    latin1.extend_from_slice(b"caf\xe9 cr\xe8me br\xfbl\xe9e\r\n");
    sign_and_verify(&signer, latin1, "example.test").await;
}

#[tokio::test]
async fn long_folded_headers_verify() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(dir.path(), &[("example.test", "s1", Ed25519, true)]);
    let to: Vec<String> = (0..40)
        .map(|i| format!("user{i}@receiver.example"))
        .collect();
    let to = format!("To: {}", to.join(",\r\n    "));
    let subject = format!(
        "Subject: {}\r\n\t{}\r\n {}",
        "a very long subject ".repeat(5),
        "continued on a second line ".repeat(4),
        "and a third"
    );
    let refs = format!(
        "References: {}",
        (0..20)
            .map(|i| format!("<ref{i}@example.test>"))
            .collect::<Vec<_>>()
            .join("\r\n ")
    );
    let msg = message(
        &[
            "From: billing@example.test",
            &to,
            &subject,
            &refs,
            "List-Unsubscribe: <mailto:u@example.test>",
            "List-Unsubscribe-Post: List-Unsubscribe=One-Click",
            "X-Not-Signed: \t  spaced   out  ",
        ],
        "body\r\n",
    );
    let (_, ours) = sign_and_verify(&signer, msg, "example.test").await;
    assert!(
        ours[0].h.contains(&"list-unsubscribe-post".to_string()),
        "{:?}",
        ours[0].h
    );
    assert!(!ours[0].h.contains(&"x-not-signed".to_string()));
}

#[tokio::test]
async fn a_message_already_signed_by_someone_else_keeps_that_signature() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(dir.path(), &[("example.test", "s1", Rsa, true)]);
    let mut msg = b"DKIM-Signature: v=1; a=rsa-sha256; d=other.example; s=x; c=relaxed/relaxed;\r\n\th=from:subject; bh=AAAA; b=BBBB\r\n".to_vec();
    msg.extend_from_slice(&simple("billing@example.test"));
    let (signed, _) = sign_and_verify(&signer, msg.clone(), "example.test").await;
    assert_eq!(count_signatures(&signed), 2);
    let all = dkimpy(&signed, &signer.published_keys());
    assert_eq!(all[1].d, "other.example");
    assert!(
        !all[1].ok,
        "the foreign signature cannot verify (no key): the verifier is checking"
    );
}

#[tokio::test]
async fn a_ten_megabyte_message_verifies() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(
        dir.path(),
        &[
            ("example.test", "s1", Rsa, true),
            ("example.test", "e", Ed25519, true),
        ],
    );
    let line = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ  x\t\r\n";
    let body = line.repeat(10 * 1024 * 1024 / line.len() + 1);
    let mut msg = simple("billing@example.test");
    msg.extend_from_slice(body.as_bytes());
    assert!(msg.len() > 10 * 1024 * 1024);
    let (_, ours) = sign_and_verify(&signer, msg, "example.test").await;
    assert_eq!(ours.len(), 2);
}

#[tokio::test]
async fn a_body_altered_after_signing_fails_both_verifiers() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(
        dir.path(),
        &[
            ("example.test", "s1", Rsa, true),
            ("example.test", "e", Ed25519, true),
        ],
    );
    let signed = signer
        .sign(simple("billing@example.test"))
        .await
        .expect("signed");
    let published = signer.published_keys();
    assert!(dkimpy(&signed, &published).iter().all(|v| v.ok));
    let text = String::from_utf8(signed).expect("utf-8");
    let altered = text
        .replace("your invoice is attached", "your invoice is ATTACHED")
        .into_bytes();
    let verdicts = dkimpy(&altered, &published);
    assert_eq!(verdicts.len(), 2);
    assert!(
        verdicts.iter().all(|v| !v.ok),
        "dkimpy must reject: {verdicts:?}"
    );
    let results = mail_auth(&altered, &published).await;
    assert_eq!(results.len(), 2);
    assert!(
        results.iter().all(|r| !r.2),
        "mail-auth must reject: {results:?}"
    );
    // A second From: added after signing is caught by the over-signed From.
    let fresh = signer
        .sign(simple("billing@example.test"))
        .await
        .expect("signed");
    let fresh = String::from_utf8(fresh).expect("utf-8");
    let forged = fresh.replacen(
        "From: Billing",
        "From: evil@attacker.example\r\nFrom: Billing",
        1,
    );
    assert_ne!(fresh, forged);
    assert!(dkimpy(forged.as_bytes(), &published).iter().all(|v| !v.ok));
}

#[tokio::test]
async fn an_unaligned_from_is_refused_naming_the_domain() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(
        dir.path(),
        &[
            ("example.test", "s1", Ed25519, true),
            ("shop.other.test", "s1", Ed25519, true),
            ("off.test", "s1", Ed25519, false),
        ],
    );
    for (from, domain) in [
        ("someone@unrelated.test", "unrelated.test"),
        ("x@example.test.evil.test", "example.test.evil.test"),
        ("x@other.test", "other.test"),
        ("x@notexample.test", "notexample.test"),
        ("x@off.test", "off.test"),
    ] {
        let reply = signer.sign(simple(from)).await.expect_err("refused");
        assert_eq!(
            (reply.code, reply.status),
            (550, "5.7.1"),
            "{from}: {reply}"
        );
        assert!(reply.text.contains(domain), "{reply}");
    }
    assert_eq!(
        signer.aligned_domain("a.b.example.test").as_deref(),
        Some("example.test")
    );
    assert_eq!(
        signer.aligned_domain("other.test"),
        None,
        "a child's key never signs its parent"
    );
}

#[tokio::test]
async fn messages_without_exactly_one_author_are_refused() {
    let dir = tempfile::tempdir().expect("tempdir");
    let signer = signer(dir.path(), &[("example.test", "s1", Ed25519, true)]);
    let cases: [(&str, Vec<u8>); 4] = [
        (
            "two From headers",
            message(
                &["From: a@example.test", "From: b@example.test", "Subject: x"],
                "x\r\n",
            ),
        ),
        (
            "two addresses",
            message(
                &["From: a@example.test, b@example.test", "Subject: x"],
                "x\r\n",
            ),
        ),
        (
            "no From",
            message(&["To: a@example.test", "Subject: x"], "x\r\n"),
        ),
        (
            "empty group",
            message(&["From: undisclosed-senders:;", "Subject: x"], "x\r\n"),
        ),
    ];
    for (what, msg) in cases {
        let reply = signer.sign(msg).await.expect_err(what);
        assert_eq!(
            (reply.code, reply.status),
            (550, "5.6.0"),
            "{what}: {reply}"
        );
        assert!(reply.text.contains("From"), "{what}: {reply}");
    }
}
