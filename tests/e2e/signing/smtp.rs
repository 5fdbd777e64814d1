//! The whole path: an app submits over SMTP (implicit TLS, AUTH) to a herald child process, and
//! the message herald spools is signed aligned and verifies with dkimpy and mail-auth.

use std::path::Path;
use std::time::Duration;

use mail_send::SmtpClientBuilder;
use mail_send::smtp::message::Message;

use herald::config::Config;
use herald::signing::Signer;

use super::helpers::{count_signatures, dkimpy, mail_auth};
use crate::support::herald::{DEMO_PASSWORD, Herald, base_config};

/// The spooled messages: (envelope JSON line, message bytes).
fn spooled(data_dir: &Path) -> Vec<(String, Vec<u8>)> {
    crate::support::spool::spooled(data_dir)
        .into_iter()
        .map(|m| (m.envelope, m.message))
        .collect()
}

async fn submit(herald: &Herald, from: &str, body: &str) -> mail_send::Result<()> {
    let addr = herald.smtp_addr("submissions");
    let mut client = SmtpClientBuilder::new(addr.ip().to_string(), addr.port())
        .expect("client builder")
        .implicit_tls(true)
        .allow_invalid_certs()
        .local_ip(crate::support::free_ip().into())
        .credentials(("demo".to_string(), DEMO_PASSWORD.to_string()))
        .timeout(Duration::from_secs(30))
        .connect()
        .await?;
    let result = client
        .send(Message::new(
            from,
            ["customer@receiver.example"],
            body.as_bytes(),
        ))
        .await;
    let _ = client.quit().await;
    result
}

#[tokio::test]
async fn a_message_submitted_over_smtp_is_spooled_signed() {
    let dir = tempfile::tempdir().expect("tempdir");
    let mut config = base_config(dir.path());
    // Keep the message in the spool: the only next hop refuses connections (a temporary failure).
    if let Some(delivery) = config.get_mut("delivery").and_then(|d| d.as_table_mut()) {
        delivery.insert("relay_host".into(), "127.0.0.1:1".into());
    }
    // A second, RSA key for the demo domain, and a domain the app may use but has no key.
    let rsa = dir.path().join("keys/example.test.r1.rsa.pem");
    let mut keys = config["dkim"]["keys"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let extra: toml::Table = toml::from_str(&format!(
        "domain = \"example.test\"\nselector = \"r1\"\nalgorithm = \"rsa\"\nfile = {:?}\n",
        rsa.display().to_string()
    ))
    .expect("key entry");
    keys.push(extra.into());
    if let Some(dkim) = config.get_mut("dkim").and_then(|d| d.as_table_mut()) {
        dkim.insert("keys".into(), keys.into());
    }
    if let Some(app) = config
        .get_mut("apps")
        .and_then(|a| a.get_mut("demo"))
        .and_then(|a| a.as_table_mut())
    {
        app.insert(
            "senders".into(),
            vec!["@example.test", "@eu.example.test", "@nokey.test"].into(),
        );
    }
    let herald = Herald::start(dir.path(), config);
    assert!(
        herald
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains("DEVELOPMENT DKIM KEY GENERATED")),
        "missing dev keys are generated with a loud warning"
    );

    let body = "From: Alerts <alerts@eu.example.test>\r\nTo: customer@receiver.example\r\n\
                Subject: Grüße\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\
                \r\nDisk almost full on döner-01.\r\n";
    submit(&herald, "alerts@eu.example.test", body)
        .await
        .expect("accepted with 250");

    let refused = submit(
        &herald,
        "x@nokey.test",
        &body.replace("alerts@eu.example.test", "x@nokey.test"),
    )
    .await
    .expect_err("no aligned key");
    let text = refused.to_string();
    assert!(
        text.contains("550") && text.contains("5.7.1") && text.contains("nokey.test"),
        "{text}"
    );

    let spooled = spooled(dir.path());
    assert_eq!(spooled.len(), 1, "only the signed message was accepted");
    let (envelope, message) = &spooled[0];
    assert!(envelope.contains("customer@receiver.example"), "{envelope}");
    assert_eq!(count_signatures(message), 2, "RSA and Ed25519 signatures");

    let cfg = Config::load(&herald.config_path).expect("config");
    let published = Signer::load(&cfg).expect("keys").published_keys();
    let verdicts = dkimpy(message, &published);
    assert_eq!(verdicts.len(), 2);
    for v in &verdicts {
        assert!(v.ok && v.d == "example.test", "dkimpy: {v:?}");
    }
    let results = mail_auth(message, &published).await;
    assert!(
        results.len() == 2 && results.iter().all(|r| r.2 && r.0 == "example.test"),
        "{results:?}"
    );
}
