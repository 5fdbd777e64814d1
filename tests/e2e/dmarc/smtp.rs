//! A plain SMTP client for the feedback listener, as a receiver's report sender uses it:
//! EHLO, MAIL, RCPT, DATA with dot-stuffing; every reply kept for assertions.

use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// One reply: code and the text of its last line.
#[derive(Debug, Clone)]
pub struct Reply {
    pub code: u16,
    pub text: String,
}

pub struct Client {
    r: BufReader<TcpStream>,
    w: TcpStream,
}

impl Client {
    pub fn connect(addr: SocketAddr) -> (Client, Reply) {
        let s = TcpStream::connect(addr).expect("connect to the feedback listener");
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        let mut c = Client {
            r: BufReader::new(s.try_clone().unwrap()),
            w: s,
        };
        let greeting = c.read();
        (c, greeting)
    }

    pub fn read(&mut self) -> Reply {
        loop {
            let mut line = String::new();
            let n = self.r.read_line(&mut line).expect("read reply");
            assert!(n > 0, "connection closed while waiting for a reply");
            let code = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let text = line.get(4..).unwrap_or("").trim_end().to_string();
            if line.as_bytes().get(3) != Some(&b'-') {
                return Reply { code, text };
            }
        }
    }

    pub fn cmd(&mut self, line: &str) -> Reply {
        self.w.write_all(format!("{line}\r\n").as_bytes()).unwrap();
        self.read()
    }

    /// A second handle on the connection, for writing from another thread.
    pub fn writer(&self) -> TcpStream {
        self.w.try_clone().expect("clone the connection")
    }

    /// Writes `bytes` as they are, without waiting for a reply (part of a message's data).
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.w.write_all(bytes).unwrap();
        self.w.flush().unwrap();
    }

    /// Sends `data` after a 354, dot-stuffed, and returns the final reply.
    pub fn data(&mut self, data: &[u8]) -> Reply {
        let r = self.cmd("DATA");
        assert_eq!(r.code, 354, "DATA refused: {r:?}");
        let mut out = Vec::with_capacity(data.len() + 16);
        let mut at_line_start = true;
        for &b in data {
            if at_line_start && b == b'.' {
                out.push(b'.');
            }
            out.push(b);
            at_line_start = b == b'\n';
        }
        if !out.ends_with(b"\r\n") {
            out.extend_from_slice(b"\r\n");
        }
        out.extend_from_slice(b".\r\n");
        self.w.write_all(&out).unwrap();
        self.read()
    }
}

/// Delivers one mail to `rcpt` and returns the reply to the end of data.
pub fn deliver(addr: SocketAddr, rcpt: &str, mail: &[u8]) -> Reply {
    let (mut c, greeting) = Client::connect(addr);
    assert_eq!(greeting.code, 220, "{greeting:?}");
    assert_eq!(c.cmd("EHLO mail-sender.report.test").code, 250);
    let r = c.cmd("MAIL FROM:<>");
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.cmd(&format!("RCPT TO:<{rcpt}>"));
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.data(mail);
    let _ = c.cmd("QUIT");
    r
}
