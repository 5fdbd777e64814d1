//! The SMTP server side of a sink connection: command loop, STARTTLS upgrade, AUTH, the
//! envelope and the scripted replies; the message itself (DATA, BDAT) is in `message`.

mod message;

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};

use super::{DROP, ReceivedMessage, Shared, SinkOptions};

/// State of one connection.
struct Session {
    shared: Arc<Shared>,
    connection: usize,
    helo: Option<String>,
    /// EHLO (not HELO) was used: extensions are in effect.
    esmtp: bool,
    tls: Option<String>,
    sni: Option<String>,
    authenticated: Option<String>,
    mail: Option<(String, Vec<String>)>,
    rcpts: Vec<String>,
    /// The BDAT chunks of the transaction so far (RFC 3030).
    chunks: Option<Vec<u8>>,
}

/// What the command loop ended with.
enum End<S> {
    Closed,
    StartTls(S),
}

pub(super) async fn session(stream: tokio::net::TcpStream, shared: Arc<Shared>, connection: usize) {
    let mut s = Session {
        shared: shared.clone(),
        connection,
        helo: None,
        esmtp: false,
        tls: None,
        sni: None,
        authenticated: None,
        mail: None,
        rcpts: Vec::new(),
        chunks: None,
    };
    let host = host(&shared.opts);
    let greeting = shared
        .opts
        .greeting
        .clone()
        .unwrap_or_else(|| format!("220 {host} ESMTP test sink"));
    let mut reader = BufReader::new(stream);
    if write_reply(reader.get_mut(), &greeting).await.is_err() {
        return;
    }
    if closes(&greeting) {
        linger(&mut reader).await;
        return;
    }
    let serving = greeting.starts_with("220");
    match s.commands(reader, serving).await {
        End::Closed => {}
        End::StartTls(stream) => {
            let Some(config) = shared.opts.tls.clone() else {
                return;
            };
            let acceptor = tokio_rustls::TlsAcceptor::from(config);
            let tls = match acceptor.accept(stream).await {
                Ok(tls) => tls,
                Err(e) => {
                    let mut log = shared.log.lock().expect("log");
                    log.tls_errors.push(e.to_string());
                    shared.changed.notify_all();
                    return;
                }
            };
            let (_, conn) = tls.get_ref();
            s.tls = conn.protocol_version().map(|v| format!("{v:?}"));
            s.sni = conn.server_name().map(str::to_string);
            // RFC 3207: forget everything learnt before TLS.
            s.helo = None;
            s.mail = None;
            s.rcpts.clear();
            let _ = s.commands(BufReader::new(tls), true).await;
        }
    }
}

fn host(opts: &SinkOptions) -> String {
    opts.hostname.clone().unwrap_or_else(|| "sink.test".into())
}

fn closes(reply: &str) -> bool {
    reply.starts_with("421")
}

async fn write_reply<W: AsyncWrite + Unpin>(w: &mut W, reply: &str) -> std::io::Result<()> {
    let mut out = String::new();
    for line in reply.split('\n') {
        out.push_str(line.trim_end_matches('\r'));
        out.push_str("\r\n");
    }
    w.write_all(out.as_bytes()).await?;
    w.flush().await
}

/// Closes our side, then reads until the client closes too (bounded), so that unread pipelined
/// bytes cannot turn our close into a TCP reset that destroys the last reply in flight.
async fn linger<S: AsyncRead + AsyncWrite + Unpin>(r: &mut BufReader<S>) {
    let _ = r.get_mut().shutdown().await;
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match r.read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => {}
            }
        }
    })
    .await;
}

/// Sends a `334` challenge and reads the client's answer line.
async fn ask<S: AsyncRead + AsyncWrite + Unpin>(
    r: &mut BufReader<S>,
    prompt: &str,
) -> Option<String> {
    write_reply(r.get_mut(), &format!("334 {prompt}"))
        .await
        .ok()?;
    let line = read_line(r).await?;
    Some(String::from_utf8_lossy(&line).trim().to_string())
}

/// Reads one line (up to LF); `None` at EOF or error.
async fn read_line<R: AsyncBufReadExt + Unpin>(r: &mut R) -> Option<Vec<u8>> {
    let mut line = Vec::new();
    match r.read_until(b'\n', &mut line).await {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

fn next_scripted(queue: &Mutex<VecDeque<String>>, default: &str) -> String {
    queue
        .lock()
        .expect("script")
        .pop_front()
        .unwrap_or_else(|| default.to_string())
}

/// Strips `<...>` from a MAIL/RCPT argument and splits off parameters.
fn path_and_params(arg: &str) -> Option<(String, Vec<String>)> {
    let arg = arg.trim();
    let rest = arg.strip_prefix('<')?;
    let end = rest.find('>')?;
    let path = rest[..end].to_string();
    let params = rest[end + 1..]
        .split_whitespace()
        .map(str::to_string)
        .collect();
    Some((path, params))
}

impl Session {
    async fn commands<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        mut r: BufReader<S>,
        serving: bool,
    ) -> End<S> {
        loop {
            let Some(raw) = read_line(&mut r).await else {
                return End::Closed;
            };
            let line = String::from_utf8_lossy(&raw).trim_end().to_string();
            let (verb, arg) = match line.split_once(' ') {
                Some((v, a)) => (v.to_ascii_uppercase(), a.to_string()),
                None => (line.to_ascii_uppercase(), String::new()),
            };
            if !serving && verb != "QUIT" {
                if write_reply(r.get_mut(), "503 5.5.1 no service")
                    .await
                    .is_err()
                {
                    return End::Closed;
                }
                continue;
            }
            let reply = match verb.as_str() {
                "EHLO" => self.ehlo(&arg),
                "HELO" => {
                    self.helo = Some(arg.clone());
                    self.esmtp = false;
                    self.mail = None;
                    self.rcpts.clear();
                    self.chunks = None;
                    format!("250 {}", host(&self.shared.opts))
                }
                "STARTTLS" => {
                    if self.tls.is_some() || self.shared.opts.tls.is_none() {
                        "502 5.5.1 STARTTLS not offered".into()
                    } else if let Some(reply) = self.shared.opts.starttls_reply.clone() {
                        reply
                    } else {
                        if write_reply(r.get_mut(), "220 2.0.0 go ahead")
                            .await
                            .is_err()
                        {
                            return End::Closed;
                        }
                        // Anything pipelined after STARTTLS is discarded (RFC 3207 §4.2).
                        return End::StartTls(r.into_inner());
                    }
                }
                "AUTH" => match self.auth(&arg, &mut r).await {
                    Some(reply) => reply,
                    None => return End::Closed,
                },
                "MAIL" => self.mail(&arg),
                "RCPT" => self.rcpt(&arg),
                "BDAT" if self.offers("CHUNKING") => match self.bdat(&arg, &mut r).await {
                    Some(reply) => reply,
                    None => return End::Closed,
                },
                "DATA" if self.chunks.is_some() => "503 5.5.1 DATA cannot follow BDAT".into(),
                "DATA" => {
                    if self.mail.is_none() {
                        "503 5.5.1 MAIL first".into()
                    } else if self.rcpts.is_empty() {
                        "554 5.5.1 no valid recipients".into()
                    } else {
                        if write_reply(r.get_mut(), "354 go ahead").await.is_err() {
                            return End::Closed;
                        }
                        match self.data(&mut r).await {
                            Some(reply) => reply,
                            None => return End::Closed,
                        }
                    }
                }
                "RSET" => {
                    self.mail = None;
                    self.rcpts.clear();
                    self.chunks = None;
                    "250 2.0.0 OK".into()
                }
                "NOOP" => "250 2.0.0 OK".into(),
                "VRFY" => "252 2.1.5 cannot verify".into(),
                "QUIT" => {
                    if write_reply(r.get_mut(), "221 2.0.0 bye").await.is_ok() {
                        linger(&mut r).await;
                    }
                    return End::Closed;
                }
                _ => "500 5.5.2 unknown command".into(),
            };
            if reply == DROP {
                return End::Closed;
            }
            if write_reply(r.get_mut(), &reply).await.is_err() {
                return End::Closed;
            }
            if closes(&reply) {
                linger(&mut r).await;
                return End::Closed;
            }
        }
    }

    /// Whether the test hides EHLO keyword `keyword` (`hide_extensions`).
    fn hides(&self, keyword: &str) -> bool {
        self.shared
            .opts
            .hide_extensions
            .iter()
            .any(|h| h.eq_ignore_ascii_case(keyword))
    }

    /// Whether extension `keyword` is in effect: EHLO was used and the test does not hide it.
    fn offers(&self, keyword: &str) -> bool {
        self.esmtp && !self.hides(keyword)
    }

    fn ehlo(&mut self, arg: &str) -> String {
        self.helo = Some(arg.to_string());
        self.esmtp = true;
        self.mail = None;
        self.rcpts.clear();
        self.chunks = None;
        let opts = &self.shared.opts;
        let mut lines = vec![
            host(opts),
            "PIPELINING".into(),
            "CHUNKING".into(),
            "8BITMIME".into(),
            "SMTPUTF8".into(),
            "ENHANCEDSTATUSCODES".into(),
            "SIZE 52428800".into(),
        ];
        if opts.tls.is_some() && self.tls.is_none() {
            lines.push("STARTTLS".into());
        }
        if opts.require_auth.is_some() && (opts.tls.is_none() || self.tls.is_some()) {
            lines.push("AUTH PLAIN LOGIN".into());
        }
        if opts.requiretls && self.tls.is_some() {
            lines.push("REQUIRETLS".into());
        }
        lines.retain(|l| !self.hides(l.split_whitespace().next().unwrap_or("")));
        let last = lines.len() - 1;
        lines
            .iter()
            .enumerate()
            .map(|(i, l)| format!("250{}{l}", if i == last { ' ' } else { '-' }))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// AUTH PLAIN (with or without initial response) and AUTH LOGIN. `None` on EOF.
    async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        arg: &str,
        r: &mut BufReader<S>,
    ) -> Option<String> {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let Some((user, pass)) = self.shared.opts.require_auth.clone() else {
            return Some("502 5.5.1 AUTH not offered".into());
        };
        if self.shared.opts.tls.is_some() && self.tls.is_none() {
            return Some("538 5.7.11 encryption required for AUTH".into());
        }
        if self.authenticated.is_some() {
            return Some("503 5.5.1 already authenticated".into());
        }
        let mut parts = arg.split_whitespace();
        let mech = parts.next().unwrap_or("").to_ascii_uppercase();
        let initial = parts.next().map(str::to_string);
        let decode = |s: &str| -> Option<String> {
            b64.decode(s)
                .ok()
                .map(|v| String::from_utf8_lossy(&v).into_owned())
        };
        let (got_user, got_pass) = match mech.as_str() {
            "PLAIN" => {
                let resp = match initial {
                    Some(i) => i,
                    None => ask(r, "").await?,
                };
                let Some(decoded) = decode(&resp) else {
                    return Some("501 5.5.2 bad base64".into());
                };
                let mut f = decoded.split('\0');
                let _authz = f.next();
                (
                    f.next().unwrap_or("").to_string(),
                    f.next().unwrap_or("").to_string(),
                )
            }
            "LOGIN" => {
                let u = match initial {
                    Some(i) => i,
                    None => ask(r, &b64.encode("Username:")).await?,
                };
                let p = ask(r, &b64.encode("Password:")).await?;
                (
                    decode(&u).unwrap_or_default(),
                    decode(&p).unwrap_or_default(),
                )
            }
            _ => return Some("504 5.5.4 mechanism not supported".into()),
        };
        if got_user == user && got_pass == pass {
            self.authenticated = Some(got_user);
            Some("235 2.7.0 authenticated".into())
        } else {
            Some("535 5.7.8 bad credentials".into())
        }
    }

    fn mail(&mut self, arg: &str) -> String {
        let opts = &self.shared.opts;
        if self.helo.is_none() {
            return "503 5.5.1 EHLO first".into();
        }
        if self.mail.is_some() {
            return "503 5.5.1 nested MAIL".into();
        }
        if opts.require_tls && self.tls.is_none() {
            return "530 5.7.0 must issue STARTTLS first".into();
        }
        if opts.require_auth.is_some() && self.authenticated.is_none() {
            return "530 5.7.0 authentication required".into();
        }
        let Some(rest) = strip_keyword(arg, "FROM:") else {
            return "501 5.5.4 syntax: MAIL FROM:<address>".into();
        };
        let Some(path) = path_and_params(rest) else {
            return "501 5.5.4 syntax: MAIL FROM:<address>".into();
        };
        // Parameters of extensions not offered are refused, as real servers do (RFC 5321
        // §4.5.3.1.10 / RFC 6531): this is how a relay learns it must not use SMTPUTF8.
        let requiretls_offered = self.esmtp && opts.requiretls && self.tls.is_some();
        if path.1.iter().any(|p| p.eq_ignore_ascii_case("REQUIRETLS")) && !requiretls_offered {
            return "555 5.5.4 REQUIRETLS parameter not supported".into();
        }
        for param in &path.1 {
            let (keyword, value) = param.split_once('=').unwrap_or((param, ""));
            let needs = match keyword.to_ascii_uppercase().as_str() {
                "SMTPUTF8" => "SMTPUTF8",
                "BODY" if value.eq_ignore_ascii_case("8BITMIME") => "8BITMIME",
                "SIZE" => "SIZE",
                _ => continue,
            };
            if !self.offers(needs) {
                return format!("555 5.5.4 {keyword} parameter not supported");
            }
        }
        let reply = next_scripted(&self.shared.mail_replies, "250 2.1.0 OK");
        if reply.starts_with('2') {
            self.mail = Some(path);
        }
        reply
    }

    fn rcpt(&mut self, arg: &str) -> String {
        if self.mail.is_none() {
            return "503 5.5.1 MAIL first".into();
        }
        let Some((path, _)) = strip_keyword(arg, "TO:").and_then(path_and_params) else {
            return "501 5.5.4 syntax: RCPT TO:<address>".into();
        };
        let fixed = self
            .shared
            .opts
            .rcpt_reply_for
            .iter()
            .find(|(address, _)| address.eq_ignore_ascii_case(&path))
            .map(|(_, reply)| reply.clone());
        let reply =
            fixed.unwrap_or_else(|| next_scripted(&self.shared.rcpt_replies, "250 2.1.5 OK"));
        if reply.starts_with('2') {
            self.rcpts.push(path);
        }
        reply
    }
}

/// `FROM:<x>` / `FROM: <x>` with any case.
fn strip_keyword<'a>(arg: &'a str, keyword: &str) -> Option<&'a str> {
    let head = arg.get(..keyword.len())?;
    head.eq_ignore_ascii_case(keyword)
        .then(|| arg[keyword.len()..].trim_start())
}
