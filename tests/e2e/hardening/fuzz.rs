//! Item 9: property tests with a bounded number of cases in the normal test run. Generated
//! and mutated input goes to the SMTP session reader and the authoritative DNS listener of a
//! running herald (real sockets), and to the MTA-STS policy parser; each must answer sanely
//! and keep running.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::time::Duration;

use proptest::prelude::*;
use proptest::test_runner::{Config, TestCaseError, TestRunner};

use herald::mta_sts::policy;

fn runner(cases: u32) -> TestRunner {
    TestRunner::new(Config {
        cases,
        failure_persistence: None,
        ..Config::default()
    })
}

/// One command of a generated session: mostly plausible SMTP, sometimes raw noise.
fn command() -> impl Strategy<Value = Vec<u8>> {
    let word = "[A-Za-z0-9.@<>:=_-]{0,40}";
    prop_oneof![
        word.prop_map(|w| format!("EHLO {w}\r\n").into_bytes()),
        word.prop_map(|w| format!("MAIL FROM:<{w}>\r\n").into_bytes()),
        word.prop_map(|w| format!("RCPT TO:<{w}>\r\n").into_bytes()),
        Just(b"DATA\r\n".to_vec()),
        (0u64..200, any::<bool>()).prop_map(|(n, last)| {
            format!("BDAT {n}{}\r\n", if last { " LAST" } else { "" }).into_bytes()
        }),
        word.prop_map(|w| format!("AUTH PLAIN {w}\r\n").into_bytes()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\r\n".to_vec()),
        Just(b".\r\n".to_vec()),
        proptest::collection::vec(any::<u8>(), 0..300),
        proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), any::<u8>()],
            0..50
        ),
    ]
}

/// Reads everything herald sends until it closes (or 20 s pass).
fn read_all(s: &mut TcpStream) -> Vec<u8> {
    let _ = s.set_read_timeout(Some(Duration::from_secs(20)));
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

#[test]
fn smtp_sessions_of_generated_commands_get_well_formed_replies() {
    let dir = tempfile::tempdir().expect("temp dir");
    super::certs(dir.path());
    let mut cfg = crate::support::herald::base_config(dir.path());
    crate::support::set(&mut cfg, "smtp.command_timeout", "2s");
    crate::support::set(&mut cfg, "smtp.data_timeout", "2s");
    crate::support::set(&mut cfg, "smtp.max_connections_per_ip", 1000);
    let mut h = crate::support::herald::Herald::start(dir.path(), cfg);
    let addr = h.smtp_addr("submission");
    let script = proptest::collection::vec(command(), 1..25);
    runner(64)
        .run(&script, |cmds| {
            let mut s = TcpStream::connect(addr).map_err(|e| TestCaseError::fail(e.to_string()))?;
            for c in &cmds {
                if s.write_all(c).is_err() {
                    break; // herald already closed (too many errors): fine
                }
            }
            let _ = s.write_all(b"QUIT\r\n");
            let _ = s.shutdown(std::net::Shutdown::Write);
            let answer = read_all(&mut s);
            prop_assert!(
                answer.starts_with(b"220 "),
                "no greeting: {:?}",
                String::from_utf8_lossy(&answer)
            );
            for line in answer.split(|&b| b == b'\n').filter(|l| !l.is_empty()) {
                let text = String::from_utf8_lossy(line);
                prop_assert!(line.ends_with(b"\r"), "reply line without CRLF: {text:?}");
                let code_ok = line.len() >= 4
                    && (b'2'..=b'5').contains(&line[0])
                    && line[1..3].iter().all(u8::is_ascii_digit)
                    && (line[3] == b' ' || line[3] == b'-');
                prop_assert!(code_ok, "malformed reply line {text:?}");
                if line[0] >= b'4' {
                    let status = text.get(4..).unwrap_or("").split(' ').next().unwrap_or("");
                    let parts: Vec<&str> = status.split('.').collect();
                    prop_assert!(
                        parts.len() == 3
                            && parts[0] == (line[0] as char).to_string()
                            && parts
                                .iter()
                                .all(|p| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit())),
                        "refusal without an enhanced status code: {text:?}"
                    );
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(h.child.try_wait().expect("wait").is_none(), "herald exited");
    let mut s = TcpStream::connect(addr).expect("connect after the fuzzing");
    let _ = s.write_all(b"QUIT\r\n");
    assert!(read_all(&mut s).starts_with(b"220 "));
    h.terminate();
}

const INCLUDE: &str = "_spf.relay.example.test";

/// A TXT query for `name`, id 0x4242.
fn query(name: &str) -> Vec<u8> {
    use hickory_proto::op::{Message, MessageType, OpCode, Query};
    use hickory_proto::rr::{Name, RecordType};
    let mut m = Message::new(0x4242, MessageType::Query, OpCode::Query);
    m.add_query(Query::query(
        Name::from_ascii(name).expect("name"),
        RecordType::TXT,
    ));
    m.to_vec().expect("encode query")
}

/// Sends `packet` from a fresh socket and returns the answer, if one comes within `wait`.
fn ask(addr: SocketAddr, packet: &[u8], wait: Duration) -> Option<Vec<u8>> {
    let s = UdpSocket::bind("127.0.0.1:0").expect("bind");
    s.set_read_timeout(Some(wait)).expect("timeout");
    s.send_to(packet, addr).expect("send");
    let mut buf = [0u8; 4096];
    s.recv(&mut buf).ok().map(|n| buf[..n].to_vec())
}

#[test]
fn the_dns_listener_survives_mutated_packets_and_answers_sanely() {
    let dir = tempfile::tempdir().expect("temp dir");
    super::certs(dir.path());
    let listen = crate::support::free_addr();
    let mut cfg = crate::support::herald::base_config(dir.path());
    crate::support::set(&mut cfg, "spf.include", INCLUDE);
    crate::support::set(&mut cfg, "spf.addresses", vec!["203.0.113.10"]);
    crate::support::set(&mut cfg, "dns_server.listen", listen.to_string());
    crate::support::set(&mut cfg, "dns_server.rate_limit", 100_000);
    let mut h = crate::support::herald::Herald::start(dir.path(), cfg);
    let valid = query(&format!("{INCLUDE}."));
    let good = ask(listen, &valid, Duration::from_secs(5)).expect("an answer to a valid query");
    let parsed = hickory_proto::op::Message::from_vec(&good).expect("answer parses");
    assert_eq!(parsed.metadata.id, 0x4242);
    assert!(!parsed.answers.is_empty());

    let mutation = (
        proptest::collection::vec((0..valid.len(), any::<u8>()), 1..6),
        0..=valid.len() + 16,
        proptest::collection::vec(any::<u8>(), 0..16),
    );
    runner(256)
        .run(&mutation, |(flips, cut, tail)| {
            let mut p = valid.clone();
            for (i, b) in flips {
                p[i] = b;
            }
            p.truncate(cut);
            p.extend_from_slice(&tail);
            if let Some(answer) = ask(listen, &p, Duration::from_millis(100)) {
                let m = hickory_proto::op::Message::from_vec(&answer);
                prop_assert!(m.is_ok(), "unparsable answer to {p:?}: {answer:?}");
                if let (Ok(m), true) = (m, p.len() >= 2) {
                    prop_assert_eq!(m.metadata.id, u16::from_be_bytes([p[0], p[1]]));
                    prop_assert!(
                        m.metadata.message_type == hickory_proto::op::MessageType::Response
                    );
                }
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    assert!(h.child.try_wait().expect("wait").is_none(), "herald exited");
    let again = ask(listen, &valid, Duration::from_secs(5)).expect("still answering");
    assert_eq!(again, good);
    h.terminate();
}

fn policy_text() -> impl Strategy<Value = (String, String, u64, Vec<String>, bool)> {
    let label = "[a-z0-9]([a-z0-9-]{0,10}[a-z0-9])?";
    let host = proptest::collection::vec(label, 2..4).prop_map(|l| l.join("."));
    let mx = prop_oneof![host.clone(), host.prop_map(|h| format!("*.{h}"))];
    (
        prop_oneof![Just("enforce"), Just("testing"), Just("none")].prop_map(str::to_string),
        "[A-Za-z0-9]{1,32}",
        0u64..=31_557_600,
        proptest::collection::vec(mx, 1..5),
        any::<bool>(),
    )
}

#[test]
fn the_mta_sts_policy_parser_reads_valid_policies_and_never_panics() {
    runner(512)
        .run(&policy_text(), |(mode, id, max_age, mx, crlf)| {
            let nl = if crlf { "\r\n" } else { "\n" };
            let mut lines = vec![
                "version: STSv1".to_string(),
                format!("mode: {mode}"),
                format!("max_age: {max_age}"),
            ];
            lines.extend(mx.iter().map(|m| format!("mx: {m}")));
            let turn = mx.len() % lines.len();
            lines.rotate_left(turn);
            let body = lines.join(nl) + nl;
            let p = policy::parse(&body, &id)
                .map_err(|e| TestCaseError::fail(format!("{e}: {body:?}")))?;
            prop_assert_eq!(p.max_age, max_age);
            prop_assert_eq!(&p.id, &id);
            prop_assert_eq!(policy::mode_name(p.mode), mode.as_str());
            prop_assert_eq!(p.mx.len(), mx.len());
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    runner(2048)
        .run(
            &(".{0,400}", proptest::collection::vec(any::<u8>(), 0..400)),
            |(text, bytes)| {
                let _ = policy::parse(&text, "id");
                let _ = policy::parse(&String::from_utf8_lossy(&bytes), "id");
                Ok(())
            },
        )
        .unwrap_or_else(|e| panic!("{e}"));
}
