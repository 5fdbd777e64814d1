//! Shared by the signing tests: key rings written to a temp dir, a [`Signer`] over them, and
//! the two independent verifiers.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use herald::config::{Config, DkimAlgorithm, DnsConfig};
use herald::signing::{PublishedKey, Signer, keys};
use mail_auth::{AuthenticatedMessage, DkimResult};

use crate::support::dns::DnsServer;
use crate::support::tools::{VERIFIER_PACKAGES, verifier_python};

/// One key of a test key ring: domain, selector, algorithm, active.
pub type Spec<'a> = (&'a str, &'a str, DkimAlgorithm, bool);

/// Generates the keys in `dir/keys` and returns a config listing them.
pub fn config_with(dir: &Path, specs: &[Spec]) -> Config {
    let mut text = format!("[server]\ndata_dir = {:?}\n", dir.display().to_string());
    for (domain, selector, alg, active) in specs {
        let file = dir
            .join("keys")
            .join(format!("{domain}.{selector}.{}.pem", alg.as_str()));
        let generated = keys::generate(*alg, 2048).expect("generate key");
        keys::write_private_key(&file, &generated.pem).expect("write key");
        text.push_str(&key_block(domain, selector, *alg, &file, *active));
    }
    parse_config(&text)
}

/// A `[[dkim.keys]]` block.
pub fn key_block(
    domain: &str,
    selector: &str,
    alg: DkimAlgorithm,
    file: &Path,
    active: bool,
) -> String {
    format!(
        "\n[[dkim.keys]]\ndomain = {domain:?}\nselector = {selector:?}\nalgorithm = {:?}\nfile = {:?}\nactive = {active}\n",
        alg.as_str(),
        file.display().to_string()
    )
}

/// A config from TOML text, validated like herald validates its file.
pub fn parse_config(text: &str) -> Config {
    let cfg: Config = toml::from_str(text).expect("test config parses");
    cfg.validate("test").expect("test config is valid");
    cfg
}

/// A signer over freshly generated keys (the temp dir must outlive it).
pub fn signer(dir: &Path, specs: &[Spec]) -> Signer {
    Signer::load(&config_with(dir, specs)).expect("signer loads")
}

/// A message with CRLF line ends from header lines and a body.
pub fn message(headers: &[&str], body: &str) -> Vec<u8> {
    let mut m = Vec::new();
    for h in headers {
        m.extend_from_slice(h.as_bytes());
        m.extend_from_slice(b"\r\n");
    }
    m.extend_from_slice(b"\r\n");
    m.extend_from_slice(body.as_bytes());
    m
}

/// A plain message from `from` to a recipient elsewhere.
pub fn simple(from: &str) -> Vec<u8> {
    message(
        &[
            &format!("From: Billing <{from}>"),
            "To: Customer <customer@receiver.example>",
            "Subject: Your invoice",
            "Date: Mon, 23 Nov 2026 09:00:00 +0000",
            "Message-ID: <inv-1@example.test>",
            "MIME-Version: 1.0",
            "Content-Type: text/plain; charset=utf-8",
        ],
        "Dear customer,\r\n\r\nyour invoice is attached.\r\n",
    )
}

/// What one verifier said about one `DKIM-Signature:`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    /// `d=`.
    pub d: String,
    /// `s=`.
    pub s: String,
    /// `a=`.
    pub a: String,
    /// `h=` as signed (lower-cased names, whitespace removed).
    pub h: Vec<String>,
    /// Whether an `l=` tag is present.
    pub l: bool,
    /// `c=`.
    pub c: String,
    /// Verified.
    pub ok: bool,
    /// The verifier's complaint, if any.
    pub err: String,
}

const DKIMPY: &str = r#"
import sys, json
try:
    import dkim
    from dkim.util import parse_tag_value
except ImportError as e:
    print("dkimpy missing: " + str(e), file=sys.stderr); sys.exit(3)
keys = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    if isinstance(name, bytes):
        name = name.decode()
    v = keys.get(name.rstrip('.').lower())
    return v.encode() if v is not None else None
headers, _ = dkim.rfc822_parse(msg)
sigs = [v for (n, v) in headers if n.lower() == b'dkim-signature']
for i, v in enumerate(sigs):
    t = parse_tag_value(v)
    err = ""
    try:
        ok = bool(dkim.DKIM(msg).verify(idx=i, dnsfunc=dnsfunc))
    except Exception as e:
        ok, err = False, repr(e)
    g = lambda k: t.get(k, b'').decode()
    print(json.dumps({"d": g(b'd'), "s": g(b's'), "a": g(b'a'), "h": g(b'h'), "l": b'l' in t,
                      "c": g(b'c'), "ok": ok, "err": err}))
"#;

/// Verifies every signature of `signed` with dkimpy, the public keys being `published`.
pub fn dkimpy(signed: &[u8], published: &[PublishedKey]) -> Vec<Verdict> {
    let keys: serde_json::Map<String, serde_json::Value> = published
        .iter()
        .map(|k| (k.record_name(), k.txt.clone().into()))
        .collect();
    let mut child = Command::new(verifier_python())
        .arg("-c")
        .arg(DKIMPY)
        .arg(serde_json::Value::Object(keys).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the verifier's python3 runs");
    let mut stdin = child.stdin.take().expect("stdin");
    let input = signed.to_vec();
    let writer = std::thread::spawn(move || {
        let _ = stdin.write_all(&input);
    });
    let out = child.wait_with_output().expect("python3 finishes");
    let _ = writer.join();
    assert!(
        out.status.success(),
        "dkimpy failed ({}): {} — it needs the Debian packages {VERIFIER_PACKAGES}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).expect("dkimpy JSON line");
            let s = |k: &str| v[k].as_str().unwrap_or_default().to_string();
            Verdict {
                d: s("d"),
                s: s("s"),
                a: s("a"),
                h: s("h")
                    .split(':')
                    .map(|n| {
                        n.split_whitespace()
                            .collect::<String>()
                            .to_ascii_lowercase()
                    })
                    .collect(),
                l: v["l"].as_bool().unwrap_or(true),
                c: s("c"),
                ok: v["ok"].as_bool().unwrap_or(false),
                err: s("err"),
            }
        })
        .collect()
}

/// Verifies every signature of `signed` with mail-auth, the keys published on a test DNS
/// server it queries over real DNS packets. Returns (d, s, passed).
pub async fn mail_auth(signed: &[u8], published: &[PublishedKey]) -> Vec<(String, String, bool)> {
    let dns = DnsServer::start();
    for k in published {
        dns.add_txt(&k.record_name(), &k.txt);
    }
    let auth = herald::resolver::authenticator(&DnsConfig {
        servers: vec![dns.addr],
    })
    .expect("resolver");
    let msg = AuthenticatedMessage::parse(signed).expect("mail-auth parses the message");
    auth.verify_dkim(&msg)
        .await
        .iter()
        .map(|o| {
            let sig = o.signature();
            (
                sig.map(|s| s.d.clone()).unwrap_or_default(),
                sig.map(|s| s.s.clone()).unwrap_or_default(),
                *o.result() == DkimResult::Pass,
            )
        })
        .collect()
}

/// Signs `msg` and checks both verifiers accept exactly the signatures herald added, made with
/// `d=` `domain`; returns the signed bytes and dkimpy's verdicts on herald's signatures.
pub async fn sign_and_verify(
    signer: &Signer,
    msg: Vec<u8>,
    domain: &str,
) -> (Vec<u8>, Vec<Verdict>) {
    let original = msg.clone();
    let signed = signer.sign(msg).await.expect("message is signed");
    assert!(
        signed.ends_with(&original),
        "the original bytes follow the signatures unchanged"
    );
    let added = count_signatures(&signed) - count_signatures(&original);
    assert!(added >= 1, "herald added a signature");
    let published = signer.published_keys();
    let verdicts = dkimpy(&signed, &published);
    let ours: Vec<Verdict> = verdicts.into_iter().take(added).collect();
    for v in &ours {
        assert!(v.ok, "dkimpy rejects herald's signature: {v:?}");
        assert_eq!(v.d, domain);
        assert_eq!(v.c, "relaxed/relaxed");
        assert!(!v.l, "no l= tag");
    }
    let results = mail_auth(&signed, &published).await;
    let passed: Vec<_> = results.iter().filter(|r| r.2).collect();
    assert_eq!(
        passed.len(),
        added,
        "mail-auth verifies herald's signatures: {results:?}"
    );
    assert!(passed.iter().all(|r| r.0 == domain));
    (signed, ours)
}

/// How many `DKIM-Signature:` header fields a message has.
pub fn count_signatures(msg: &[u8]) -> usize {
    let end = find(msg, b"\r\n\r\n").unwrap_or(msg.len());
    msg[..end]
        .split(|&b| b == b'\n')
        .filter(|l| l.len() >= 15 && l[..15].eq_ignore_ascii_case(b"dkim-signature:"))
        .count()
}

/// Position of `needle` in `hay`.
pub fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}
