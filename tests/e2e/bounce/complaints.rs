//! Complaints: each app's message carries `Feedback-ID`, `CFBL-Address` and the signed
//! `CFBL-Feedback-ID` reference, all under herald's DKIM signature; an ARF report returning it
//! suppresses the recipient and counts against the app; one with a forged reference is
//! ignored.

use super::{FEEDBACK_DOMAIN, app_stats, config, mail_feedback, start, try_submit};
use crate::delivery::common::{WAIT, World};
use crate::support::smtp_sink::SinkOptions;

fn arf(original: &str, recipient: &str) -> String {
    format!(
        "From: fbl@isp.example.org\r\nTo: fbl@{FEEDBACK_DOMAIN}\r\nSubject: complaint\r\nMIME-Version: 1.0\r\n\
Content-Type: multipart/report; report-type=feedback-report; boundary=\"arf\"\r\n\r\n\
--arf\r\nContent-Type: text/plain\r\n\r\nThis is an email abuse report.\r\n\
--arf\r\nContent-Type: message/feedback-report\r\n\r\nFeedback-Type: abuse\r\nUser-Agent: isp/1.0\r\n\
Version: 1\r\nOriginal-Rcpt-To: <{recipient}>\r\n\r\n\
--arf\r\nContent-Type: message/rfc822\r\n\r\n{original}\r\n--arf--"
    )
}

fn header<'a>(message: &'a str, name: &str) -> &'a str {
    message
        .split("\r\n")
        .find_map(|l| {
            l.split_once(':')
                .filter(|(n, _)| n.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.trim())
        })
        .unwrap_or_else(|| panic!("no {name} in {message}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn an_arf_complaint_suppresses_the_recipient_and_counts_for_the_app() {
    let mut w = World::new(1);
    w.dns.add_mx("example.org", 10, "mx.example.org");
    let mx = w.sink("mx.example.org", SinkOptions::default());
    let mut rig = start(&w, config(&w));
    let mut c = rig.login("demo").await;
    for (to, subject) in [
        ("reader@example.org", "news"),
        ("other@example.org", "news2"),
    ] {
        let r = try_submit(&mut c, "app@example.test", to, subject).await;
        assert_eq!(r.code, 250, "{r:?}");
    }
    let got = mx.wait_for_messages(2, WAIT);
    let original = got
        .iter()
        .find(|m| m.rcpts == ["reader@example.org"])
        .expect("delivered")
        .text();
    let head = original.split("\r\n\r\n").next().unwrap_or("");
    assert_eq!(
        header(head, "Feedback-ID"),
        "demo:demo:herald:herald.example.test"
    );
    assert_eq!(
        header(head, "CFBL-Address"),
        format!("fbl@{FEEDBACK_DOMAIN}; report=arf")
    );
    let reference = header(head, "CFBL-Feedback-ID").to_string();
    let signed = header(head, "DKIM-Signature").to_ascii_lowercase();
    let unfolded: String = head
        .replace("\r\n\t", " ")
        .replace("\r\n ", " ")
        .to_ascii_lowercase();
    let h = unfolded
        .split("h=")
        .nth(1)
        .and_then(|s| s.split(';').next())
        .unwrap_or_else(|| panic!("no h= in {signed}"));
    for name in ["feedback-id", "cfbl-address", "cfbl-feedback-id"] {
        assert!(
            h.split(':').any(|n| n.trim() == name),
            "{name} not signed: h={h}"
        );
    }

    // A complaint whose reference was forged is ignored: nothing suppressed.
    let swap = if reference.ends_with('a') { "b" } else { "a" };
    let forged = original.replace(
        &reference,
        &format!("{}{swap}", &reference[..reference.len() - 1]),
    );
    let r = mail_feedback(
        &rig,
        &format!("fbl@{FEEDBACK_DOMAIN}"),
        &arf(&forged, "reader@example.org"),
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text.contains("ignored"), "{r:?}");

    // The real one: recorded, suppressed, counted for the app.
    let r = mail_feedback(
        &rig,
        &format!("fbl@{FEEDBACK_DOMAIN}"),
        &arf(&original, "reader@example.org"),
    )
    .await;
    assert_eq!(r.code, 250, "{r:?}");
    assert!(r.text.contains("complaint recorded"), "{r:?}");
    rig.herald.wait_for_event("complained", WAIT);
    let r = try_submit(&mut c, "app@example.test", "reader@example.org", "again").await;
    assert_eq!(r.code, 550, "{r:?}");
    assert!(r.text.starts_with("5.7.1"), "{r:?}");
    assert!(r.text.contains("reported mail as spam"), "{r:?}");
    let r = try_submit(
        &mut c,
        "app@example.test",
        "other@example.org",
        "still-fine",
    )
    .await;
    assert_eq!(r.code, 250, "the other recipient is not suppressed: {r:?}");

    let stats = app_stats(&rig);
    let demo = stats
        .as_array()
        .and_then(|a| a.iter().find(|s| s["app"] == "demo"))
        .expect("demo stats");
    assert_eq!(demo["day"]["complaints"], 1, "{stats}");
    let list = super::herald_cli(&rig, &["suppress", "export", "--format", "csv"]);
    assert!(list.contains("reader@example.org,complaint"), "{list}");
    assert!(!list.contains("other@example.org"), "{list}");
}
