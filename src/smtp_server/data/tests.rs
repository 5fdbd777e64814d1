use std::time::Duration;

use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

use super::*;
use crate::smtp_server::conn::Stream;

const LIMITS: DataLimits = DataLimits {
    max_size: 1000,
    max_line: 100,
};

/// Sends `wire` over loopback and frames it as DATA; the outcome, what reached the sink, and
/// the next line after the data (to show the session is still in step).
async fn frame(wire: &[u8], limits: DataLimits) -> (Result<usize, Fault>, Vec<u8>, Vec<u8>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let mut client = TcpStream::connect(addr).await.expect("connect");
    let (server, _) = listener.accept().await.expect("accept");
    client.write_all(wire).await.expect("write");
    client.write_all(b"NOOP\r\n").await.expect("write");
    let mut conn = Conn::new(Stream::Plain(server));
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut sink = Vec::new();
    let outcome = read_data(&mut conn, limits, deadline, &mut sink)
        .await
        .expect("read");
    let next = match conn.read_line(100, Duration::from_secs(10)).await {
        Ok(Line::Full(l)) => l.to_vec(),
        _ => Vec::new(),
    };
    (outcome, sink, next)
}

#[tokio::test]
async fn data_is_dot_unstuffed_and_ends_only_at_crlf_dot_crlf() {
    let (outcome, sink, next) = frame(b"a\r\n..b\r\n.c\r\n\r\n.\r\n", LIMITS).await;
    assert_eq!(outcome.expect("accepted"), 12);
    assert_eq!(sink, b"a\r\n.b\r\nc\r\n\r\n");
    assert_eq!(next, b"NOOP\r\n");
}

#[tokio::test]
async fn smuggling_sequences_refuse_the_message_and_never_end_it() {
    for seq in ["\n.\r\n", "\r\n.\n", "\r.\r\n", "\n.\n"] {
        let wire = format!("hello{seq}MAIL FROM:<x@y>\r\n.\r\n");
        let (outcome, _, next) = frame(wire.as_bytes(), LIMITS).await;
        assert!(matches!(outcome, Err(Fault::Bare)), "{seq:?}: {outcome:?}");
        let reply = Fault::Bare.reply(&LIMITS).expect("reply");
        assert_eq!((reply.code, reply.status), (550, "5.6.0"));
        assert_eq!(next, b"NOOP\r\n", "{seq:?}: the data ran to its real end");
    }
}

#[tokio::test]
async fn size_and_line_limits_refuse_while_streaming() {
    let big = format!("{}\r\n.\r\n", "x\r\n".repeat(400));
    let (outcome, _, next) = frame(big.as_bytes(), LIMITS).await;
    assert!(matches!(outcome, Err(Fault::TooBig)), "{outcome:?}");
    assert_eq!(next, b"NOOP\r\n");
    let long = format!("{}\r\nok\r\n.\r\n", "y".repeat(300));
    let (outcome, _, next) = frame(long.as_bytes(), LIMITS).await;
    assert!(matches!(outcome, Err(Fault::LongLine)), "{outcome:?}");
    assert_eq!(next, b"NOOP\r\n");
}

#[test]
fn chunks_are_checked_across_their_boundaries() {
    let mut sink = Vec::new();
    let mut body = Chunked::default();
    body.feed(b"a\r", &LIMITS, Some(&mut sink));
    body.feed(b"\nb\r\n", &LIMITS, Some(&mut sink));
    assert!(body.refused(&LIMITS).is_none());
    assert_eq!(body.finish().expect("clean"), 6);
    assert_eq!(sink, b"a\r\nb\r\n");
    let mut body = Chunked::default();
    body.feed(b"a\r\n.\n", &LIMITS, None);
    assert!(matches!(body.finish(), Err(Fault::Bare)));
    let mut body = Chunked::default();
    body.feed(&[b'z'; 1001], &LIMITS, None);
    assert!(matches!(body.refused(&LIMITS), Some(Fault::TooBig)));
}

fn bare(chunks: &[&[u8]]) -> bool {
    let mut c = LineCheck::default();
    for ch in chunks {
        c.feed(ch);
    }
    c.finish();
    c.bare
}

#[test]
fn bare_line_endings_are_found_across_chunks() {
    assert!(!bare(&[b"a\r\nb\r\n"]));
    assert!(!bare(&[b"a\r", b"\nb\r\n"]));
    assert!(bare(&[b"a\nb\r\n"]));
    assert!(bare(&[b"a\r.\r\n"]));
    assert!(bare(&[b"a\r\n.\n"]));
    assert!(bare(&[b"a\r", b"x\r\n"]));
    assert!(bare(&[b"a\r\n", b"\n"]));
    assert!(bare(&[b"a\r"]));
}

#[test]
fn longest_line_is_measured() {
    let mut c = LineCheck::default();
    c.feed(b"abc\r\n");
    c.feed(b"abcdefg");
    c.feed(b"hi\r\n");
    assert_eq!(c.longest, 11);
}
