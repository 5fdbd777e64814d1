//! A raw SMTP client for protocol-level tests: exact bytes out, replies parsed by code, STARTTLS
//! with tokio-rustls, bound to its own loopback IP so per-IP limits never mix between tests.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

/// One SMTP reply: its code and every line's text joined by newlines.
#[derive(Debug, Clone)]
pub struct SmtpReply {
    pub code: u16,
    pub text: String,
}

enum S {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    Gone,
}

/// A raw client connection.
pub struct Client {
    s: S,
    buf: Vec<u8>,
}

pub const HOST: &str = "herald.example.test";

/// A TCP connection from `local_ip` to `addr` (waits for nothing; read the greeting yourself).
pub async fn tcp_from(local_ip: Ipv4Addr, addr: SocketAddr) -> std::io::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    socket.bind(SocketAddr::new(IpAddr::V4(local_ip), 0))?;
    socket.connect(addr).await
}

impl Client {
    /// Plain connection from a fresh loopback IP.
    pub async fn plain(addr: SocketAddr) -> Client {
        Client::plain_from(crate::support::free_ip(), addr).await
    }

    /// Plain connection from a chosen loopback IP.
    pub async fn plain_from(local_ip: Ipv4Addr, addr: SocketAddr) -> Client {
        let tcp = tcp_from(local_ip, addr).await.expect("connect to herald");
        Client {
            s: S::Plain(tcp),
            buf: Vec::new(),
        }
    }

    /// Implicit-TLS connection from a chosen loopback IP.
    pub async fn tls_from(
        local_ip: Ipv4Addr,
        addr: SocketAddr,
        tls: Arc<rustls::ClientConfig>,
    ) -> Client {
        let tcp = tcp_from(local_ip, addr).await.expect("connect to herald");
        let name = ServerName::try_from(HOST).expect("server name");
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("TLS handshake with herald");
        Client {
            s: S::Tls(Box::new(stream)),
            buf: Vec::new(),
        }
    }

    /// Sends raw bytes.
    pub async fn send(&mut self, bytes: impl AsRef<[u8]>) {
        let b = bytes.as_ref();
        let r = match &mut self.s {
            S::Plain(s) => s.write_all(b).await,
            S::Tls(s) => {
                async {
                    s.write_all(b).await?;
                    s.flush().await
                }
                .await
            }
            S::Gone => panic!("connection gone"),
        };
        r.expect("send to herald");
    }

    async fn fill(&mut self) -> usize {
        let mut tmp = [0u8; 8192];
        let read = async {
            match &mut self.s {
                S::Plain(s) => s.read(&mut tmp).await,
                S::Tls(s) => s.read(&mut tmp).await,
                S::Gone => Ok(0),
            }
        };
        let n = tokio::time::timeout(Duration::from_secs(30), read)
            .await
            .expect("herald answered within 30 s")
            .unwrap_or(0);
        self.buf.extend_from_slice(&tmp[..n]);
        n
    }

    /// Reads one (possibly multi-line) reply; panics on end of stream.
    pub async fn reply(&mut self) -> SmtpReply {
        self.try_reply()
            .await
            .expect("a reply before the connection closed")
    }

    /// Reads one reply, or `None` if the connection closed first.
    pub async fn try_reply(&mut self) -> Option<SmtpReply> {
        let mut lines = Vec::new();
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let line = String::from_utf8_lossy(&line).trim_end().to_string();
                let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
                let last = line.as_bytes().get(3) != Some(&b'-');
                lines.push(line.get(4..).unwrap_or("").to_string());
                if last {
                    return Some(SmtpReply {
                        code,
                        text: lines.join("\n"),
                    });
                }
                continue;
            }
            if self.fill().await == 0 {
                return None;
            }
        }
    }

    /// Sends one command line (CRLF added) and reads its reply.
    pub async fn cmd(&mut self, line: &str) -> SmtpReply {
        self.send(format!("{line}\r\n")).await;
        self.reply().await
    }

    /// Sends a command and asserts the reply code.
    pub async fn expect(&mut self, line: &str, code: u16) -> SmtpReply {
        let r = self.cmd(line).await;
        assert_eq!(r.code, code, "{line:?} got {r:?}");
        r
    }

    /// True once herald has closed the connection (after any pending replies were read).
    pub async fn closed(&mut self) -> bool {
        self.buf.clear();
        self.fill().await == 0
    }

    /// STARTTLS and the handshake.
    pub async fn starttls(&mut self, tls: Arc<rustls::ClientConfig>) {
        self.send("STARTTLS\r\n").await;
        self.starttls_after_sent(tls).await;
    }

    /// The `220` to a STARTTLS already sent, then the handshake.
    pub async fn starttls_after_sent(&mut self, tls: Arc<rustls::ClientConfig>) {
        let r = self.reply().await;
        assert_eq!(r.code, 220, "STARTTLS got {r:?}");
        let S::Plain(tcp) = std::mem::replace(&mut self.s, S::Gone) else {
            panic!("STARTTLS on a TLS connection");
        };
        let name = ServerName::try_from(HOST).expect("server name");
        let stream = TlsConnector::from(tls)
            .connect(name, tcp)
            .await
            .expect("TLS handshake after STARTTLS");
        self.s = S::Tls(Box::new(stream));
    }

    /// How the TLS handshake went (full or resumed), once the connection is TLS.
    pub fn handshake_kind(&self) -> Option<rustls::HandshakeKind> {
        match &self.s {
            S::Tls(s) => s.get_ref().1.handshake_kind(),
            _ => None,
        }
    }

    /// Greeting, EHLO, STARTTLS, EHLO, AUTH PLAIN as the demo app.
    pub async fn submission_login(addr: SocketAddr, tls: Arc<rustls::ClientConfig>) -> Client {
        let mut c = Client::plain(addr).await;
        assert_eq!(c.reply().await.code, 220);
        c.expect("EHLO app.test", 250).await;
        c.starttls(tls).await;
        c.expect("EHLO app.test", 250).await;
        c.auth_plain("demo", crate::support::herald::DEMO_PASSWORD, 235)
            .await;
        c
    }

    /// AUTH PLAIN with an initial response, asserting the reply code.
    pub async fn auth_plain(&mut self, user: &str, pass: &str, code: u16) -> SmtpReply {
        use base64::Engine;
        let token = base64::engine::general_purpose::STANDARD.encode(format!("\0{user}\0{pass}"));
        self.expect(&format!("AUTH PLAIN {token}"), code).await
    }

    /// MAIL, RCPT, DATA with `body` (already CRLF, without the final dot), returning the
    /// reply to the end of data.
    pub async fn submit(&mut self, from: &str, to: &[&str], body: &str) -> SmtpReply {
        self.expect(&format!("MAIL FROM:<{from}>"), 250).await;
        for t in to {
            self.expect(&format!("RCPT TO:<{t}>"), 250).await;
        }
        self.expect("DATA", 354).await;
        self.send(format!("{body}\r\n.\r\n")).await;
        self.reply().await
    }
}
