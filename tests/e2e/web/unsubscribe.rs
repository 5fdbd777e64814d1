//! One-click unsubscribe: the headers signed, the GET harmless, a forged token powerless,
//! the POST recorded (once, however often replayed) and the next mail refused at RCPT.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use super::rig::{self, HOST};
use crate::submission::client::Client;
use crate::support::tools::verifier_python;

const READER: &str = "reader@dest.test";

fn body(to: &str, subject: &str) -> String {
    format!("From: App <app@example.test>\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nNews.")
}

/// The captured copy of the first message delivered to dest.test (waits with a deadline).
fn captured(dir: &Path, seen: usize) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let mut files: Vec<_> = std::fs::read_dir(dir)
            .map(|d| d.filter_map(Result::ok).map(|e| e.path()).collect())
            .unwrap_or_default();
        files.retain(|p| p.to_string_lossy().ends_with(".dest.test.eml"));
        if files.len() > seen {
            files.sort_by_key(|p| std::fs::metadata(p).and_then(|m| m.modified()).ok());
            return std::fs::read(files.last().unwrap()).expect("read captured mail");
        }
        assert!(
            Instant::now() < deadline,
            "no captured mail in {}",
            dir.display()
        );
        // The capture is a file written by another process: no event to wait on.
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The unfolded value of header `name` in `msg`.
fn header(msg: &str, name: &str) -> Option<String> {
    let head = msg.split("\r\n\r\n").next()?;
    let unfolded = head.replace("\r\n ", " ").replace("\r\n\t", " ");
    unfolded
        .lines()
        .find_map(|l| l.strip_prefix(&format!("{name}: ")).map(str::to_string))
}

const DKIMPY: &str = r#"
import sys, json, dkim
keys = json.loads(sys.argv[1])
msg = sys.stdin.buffer.read()
def dnsfunc(name, timeout=5):
    v = keys.get(name.decode().rstrip('.').lower())
    return v.encode() if v is not None else None
d = dkim.DKIM(msg)
ok = d.verify(dnsfunc=dnsfunc)
print(json.dumps({"ok": bool(ok)}))
"#;

/// dkimpy's verdict on `msg` with the DKIM records `herald dns` prints, and the `h=` list.
fn dkimpy(r: &rig::WebRig, msg: &[u8]) -> serde_json::Value {
    let out = r.herald_cli(&["dns", "--format", "json"]);
    let set: serde_json::Value = serde_json::from_slice(&out.stdout).expect("dns json");
    let keys: serde_json::Map<String, serde_json::Value> = set["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["purpose"] == "dkim")
        .map(|r| (r["name"].as_str().unwrap().to_string(), r["value"].clone()))
        .collect();
    let mut child = Command::new(verifier_python())
        .args(["-c", DKIMPY])
        .arg(serde_json::Value::Object(keys).to_string())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("python3");
    use std::io::Write;
    child.stdin.take().unwrap().write_all(msg).unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dkimpy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("dkimpy json")
}

#[tokio::test(flavor = "multi_thread")]
async fn one_click_headers_are_signed_and_only_a_genuine_post_unsubscribes() {
    let feedback = crate::support::free_addr();
    let r = rig::start(
        3600,
        "1s",
        &format!("[feedback]\nlisten = \"{feedback}\"\ndomain = \"reports.example.test\"\n"),
        &[],
    );
    let tls = r.ca.client_config_trusting();
    let submission = r.herald.smtp_addr("submission");
    let mut c = Client::submission_login(submission, tls.clone()).await;
    let reply = c
        .submit("app@example.test", &[READER], &body(READER, "one"))
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");

    let raw = captured(&r.captured, 0);
    let msg = String::from_utf8_lossy(&raw).into_owned();
    let list = header(&msg, "List-Unsubscribe").expect("List-Unsubscribe added");
    assert_eq!(
        header(&msg, "List-Unsubscribe-Post").as_deref(),
        Some("List-Unsubscribe=One-Click")
    );
    let url = list
        .split(['<', '>'])
        .find(|p| p.starts_with("https://"))
        .expect("an https URL")
        .to_string();
    assert!(
        url.starts_with(&format!("https://{HOST}:{}/u/", r.web.port())),
        "{url}"
    );
    assert!(
        !url.contains("reader") && !url.contains("dest.test"),
        "no readable address: {url}"
    );
    let verdict = dkimpy(&r, &raw);
    assert_eq!(verdict["ok"], true, "{verdict}");
    let sig = header(&msg, "DKIM-Signature").expect("signed");
    let h = sig
        .split(';')
        .find_map(|t| t.trim().strip_prefix("h="))
        .expect("h= tag")
        .to_ascii_lowercase();
    let signed: Vec<&str> = h.split(':').map(str::trim).collect();
    assert!(
        signed.contains(&"list-unsubscribe") && signed.contains(&"list-unsubscribe-post"),
        "h= covers both: {signed:?}"
    );

    let path = url
        .split_once(&format!(":{}", r.web.port()))
        .unwrap()
        .1
        .to_string();
    let status = |extra: &[&str], p: &str| -> (String, String) {
        let mut args = vec!["-w", "\n%{http_code}"];
        args.extend_from_slice(extra);
        let out = r.curl(HOST, p, &args);
        assert!(
            out.status.success(),
            "curl: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, code) = text.rsplit_once('\n').unwrap();
        (code.to_string(), body.to_string())
    };
    // GET: a page with a button, nothing recorded (the next mail goes through).
    let (code, page) = status(&[], &path);
    assert_eq!(code, "200");
    assert!(
        page.contains("<form method=\"post\">") && page.contains("Unsubscribe</button>"),
        "{page}"
    );
    // A forged token (one character changed): 404, nothing recorded.
    let mut forged = path.clone().into_bytes();
    let i = forged.len() - 5;
    forged[i] = if forged[i] == b'A' { b'B' } else { b'A' };
    let forged = String::from_utf8(forged).unwrap();
    let post = ["-d", "List-Unsubscribe=One-Click"];
    assert_eq!(status(&post, &forged).0, "404");
    let reply = c
        .submit("app@example.test", &[READER], &body(READER, "two"))
        .await;
    assert_eq!(
        reply.code, 250,
        "neither the GET nor the forgery unsubscribed: {reply:?}"
    );

    // The genuine POST, then its replay: both 200, one unsubscribe.
    assert_eq!(status(&post, &path).0, "200");
    assert_eq!(status(&post, &path).0, "200");
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    let refused = c.cmd(&format!("RCPT TO:<{READER}>")).await;
    assert_eq!(refused.code, 550, "{refused:?}");
    assert!(
        refused.text.contains("5.7.1") && refused.text.contains("unsubscribed"),
        "{refused:?}"
    );
    // Only that address; the suppression list holds it once, for this app, as an unsubscribe.
    c.expect("RCPT TO:<other@dest.test>", 250).await;
    let listed = r.herald_cli(&["suppress", "list", "--json"]);
    let listed: serde_json::Value = serde_json::from_slice(&listed.stdout).expect("suppress json");
    let entries: Vec<&serde_json::Value> = listed
        .as_array()
        .expect("a list")
        .iter()
        .filter(|e| e["address"] == READER)
        .collect();
    assert_eq!(entries.len(), 1, "{listed:#}");
    assert_eq!(entries[0]["reason"], "unsubscribe");
    assert_eq!(entries[0]["app"], "demo");
    assert_eq!(entries[0]["domain"], "example.test");
    c.expect("RSET", 250).await;

    // The mailto: variant, through the feedback listener, for another reader.
    let second = "second@dest.test";
    let reply = c
        .submit("app@example.test", &[second], &body(second, "three"))
        .await;
    assert_eq!(reply.code, 250, "{reply:?}");
    let msg = String::from_utf8_lossy(&captured(&r.captured, 2)).into_owned();
    let list = header(&msg, "List-Unsubscribe").expect("List-Unsubscribe");
    assert!(!list.contains(second), "{list}");
    let mailto = list
        .split(['<', '>'])
        .find_map(|p| p.strip_prefix("mailto:"))
        .expect("a mailto: address")
        .to_string();
    let (address, query) = mailto.split_once("?subject=").expect("a subject");
    assert_eq!(address, "unsubscribe@reports.example.test");
    let subject = query.replace("%20", " ");
    let mut f = Client::plain(feedback).await;
    assert_eq!(f.reply().await.code, 220);
    f.expect("EHLO dest.test", 250).await;
    f.expect(&format!("MAIL FROM:<{second}>"), 250).await;
    f.expect(&format!("RCPT TO:<{address}>"), 250).await;
    f.expect("DATA", 354).await;
    f.send(format!(
        "From: {second}\r\nTo: {address}\r\nSubject: {subject}\r\n\r\nplease\r\n.\r\n"
    ))
    .await;
    let answer = f.reply().await;
    assert_eq!(answer.code, 250, "{answer:?}");
    c.expect("MAIL FROM:<app@example.test>", 250).await;
    let refused = c.cmd(&format!("RCPT TO:<{second}>")).await;
    assert_eq!(
        refused.code, 550,
        "the mailto unsubscribe is in force: {refused:?}"
    );
}
