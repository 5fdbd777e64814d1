//! A minimal HTTPS server (HTTP/1.1 over tokio-rustls) for MTA-STS policy hosts
//! (`https://mta-sts.<domain>/.well-known/mta-sts.txt`) and TLS-RPT `https:` report endpoints.
//! Responses are set per path at run time; every request is counted and POST bodies are kept.
//! Connections are kept alive (HTTP/1.1), so a client that pools them pays one TLS handshake,
//! not one per request. Unknown paths answer 404.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};

use super::thread::{ServerThread, stopped};

/// Largest request head or body the server reads.
const LIMIT: usize = 16 * 1024 * 1024;

/// A canned HTTP response.
#[derive(Clone, Debug)]
pub struct Response {
    /// HTTP status code.
    pub status: u16,
    /// `Content-Type` header.
    pub content_type: String,
    /// Body bytes.
    pub body: Vec<u8>,
    /// `Location` header (for redirects, which MTA-STS fetchers must not follow).
    pub location: Option<String>,
}

impl Response {
    /// `200` with a `text/plain` body (what an MTA-STS policy is served as).
    pub fn text(body: &str) -> Response {
        Response {
            status: 200,
            content_type: "text/plain".into(),
            body: body.as_bytes().to_vec(),
            location: None,
        }
    }

    /// An MTA-STS policy file (RFC 8461 §3.2) with CRLF line ends.
    pub fn mta_sts_policy(mode: &str, mx: &[&str], max_age: u64) -> Response {
        let mut body = format!("version: STSv1\r\nmode: {mode}\r\n");
        for m in mx {
            body.push_str(&format!("mx: {m}\r\n"));
        }
        body.push_str(&format!("max_age: {max_age}\r\n"));
        Response::text(&body)
    }

    /// An empty response with just a status code (e.g. 404, 500, 204).
    pub fn status(status: u16) -> Response {
        Response {
            status,
            content_type: "text/plain".into(),
            body: Vec::new(),
            location: None,
        }
    }

    /// A `302` redirect to `location`.
    pub fn redirect(location: &str) -> Response {
        Response {
            location: Some(location.to_string()),
            ..Response::status(302)
        }
    }
}

/// One recorded POST: (path, headers with lower-case names, body).
pub type Post = (String, Vec<(String, String)>, Vec<u8>);

/// One request as the server saw it (for asserting which host a client asked for).
#[derive(Clone, Debug)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// Path without the query string.
    pub path: String,
    /// The `Host` header.
    pub host: Option<String>,
    /// The SNI name of the TLS ClientHello.
    pub sni: Option<String>,
}

#[derive(Default)]
struct State {
    routes: HashMap<String, Response>,
    hits: HashMap<String, usize>,
    posts: Vec<Post>,
    requests: Vec<Request>,
    tls_errors: Vec<String>,
    /// TLS handshakes completed (connections served).
    connections: usize,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    down: AtomicBool,
}

/// A running HTTPS server; stops when dropped.
pub struct HttpsServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _thread: ServerThread,
}

impl HttpsServer {
    /// Serves HTTPS on `listener` with `tls` (e.g. `ca.server_config(&["mta-sts.example.test"],
    /// Validity::Current)`), answering each `(path, response)` of `routes`.
    pub fn start(
        listener: std::net::TcpListener,
        tls: Arc<rustls::ServerConfig>,
        routes: Vec<(&str, Response)>,
    ) -> HttpsServer {
        let addr = listener.local_addr().expect("local addr");
        listener.set_nonblocking(true).expect("nonblocking");
        let state = State {
            routes: routes
                .into_iter()
                .map(|(p, r)| (p.to_string(), r))
                .collect(),
            ..State::default()
        };
        let shared = Arc::new(Shared {
            state: Mutex::new(state),
            changed: Condvar::new(),
            down: AtomicBool::new(false),
        });
        let shared2 = shared.clone();
        let thread = ServerThread::spawn("test-https", move |stop| {
            let listener = tokio::net::TcpListener::from_std(listener).expect("tokio listener");
            let acceptor = tokio_rustls::TlsAcceptor::from(tls);
            async move {
                let accept = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else {
                            continue;
                        };
                        if shared2.down.load(Ordering::SeqCst) {
                            drop(stream);
                            continue;
                        }
                        let acceptor = acceptor.clone();
                        let shared = shared2.clone();
                        tokio::spawn(async move {
                            match acceptor.accept(stream).await {
                                Ok(tls) => {
                                    shared.state.lock().expect("state").connections += 1;
                                    let sni = tls.get_ref().1.server_name().map(str::to_string);
                                    serve(tls, sni, &shared).await;
                                }
                                Err(e) => {
                                    let mut state = shared.state.lock().expect("state");
                                    state.tls_errors.push(e.to_string());
                                    shared.changed.notify_all();
                                }
                            }
                        });
                    }
                };
                tokio::select! {
                    _ = accept => {}
                    _ = stopped(stop) => {}
                }
            }
        });
        HttpsServer {
            addr,
            shared,
            _thread: thread,
        }
    }

    /// The address the server listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets (or replaces) the response for `path`.
    pub fn set_response(&self, path: &str, response: Response) {
        let mut state = self.shared.state.lock().expect("state");
        state.routes.insert(path.to_string(), response);
    }

    /// Removes the response for `path` (it then answers 404).
    pub fn remove_response(&self, path: &str) {
        let mut state = self.shared.state.lock().expect("state");
        state.routes.remove(path);
    }

    /// While `down`, every connection is closed right after accept, before TLS (an outage).
    pub fn set_down(&self, down: bool) {
        self.shared.down.store(down, Ordering::SeqCst);
    }

    /// How many requests (any method) reached `path`.
    pub fn hits(&self, path: &str) -> usize {
        let state = self.shared.state.lock().expect("state");
        state.hits.get(path).copied().unwrap_or(0)
    }

    /// Failed TLS handshakes as the server saw them (e.g. `received fatal alert: UnknownCA`
    /// when a client refused the certificate).
    pub fn tls_errors(&self) -> Vec<String> {
        self.shared.state.lock().expect("state").tls_errors.clone()
    }

    /// Waits until at least `n` TLS handshakes failed; panics on timeout.
    pub fn wait_for_tls_errors(&self, n: usize, timeout: Duration) -> Vec<String> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().expect("state");
        while state.tls_errors.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "https server {} saw {} of {n} failed TLS handshakes in {timeout:?}",
                    self.addr,
                    state.tls_errors.len()
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .expect("state")
                .0;
        }
        state.tls_errors.clone()
    }

    /// How many connections completed their TLS handshake (with keep-alive, fewer than the
    /// requests when the client reuses them).
    pub fn connections(&self) -> usize {
        self.shared.state.lock().expect("state").connections
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<Request> {
        self.shared.state.lock().expect("state").requests.clone()
    }

    /// Every POST received so far: (path, headers with lower-case names, body as sent).
    pub fn posts(&self) -> Vec<Post> {
        self.shared.state.lock().expect("state").posts.clone()
    }

    /// Waits until at least `n` POSTs arrived; panics with what arrived on timeout.
    pub fn wait_for_posts(&self, n: usize, timeout: Duration) -> Vec<Post> {
        let deadline = Instant::now() + timeout;
        let mut state = self.shared.state.lock().expect("state");
        while state.posts.len() < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                panic!(
                    "https server {} got {} of {n} POSTs in {timeout:?}; hits: {:?}; posts: {:?}",
                    self.addr,
                    state.posts.len(),
                    state.hits,
                    state
                        .posts
                        .iter()
                        .map(|(p, h, b)| (p, h, b.len()))
                        .collect::<Vec<_>>()
                );
            }
            state = self
                .shared
                .changed
                .wait_timeout(state, left)
                .expect("state")
                .0;
        }
        state.posts.clone()
    }
}

/// Header value by (lower-case) name, for assertions on [`Post`] headers.
pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
}

/// How long a kept-alive connection may sit idle before the server closes it.
const IDLE: Duration = Duration::from_secs(30);

/// Serves requests on one connection, HTTP/1.1 keep-alive: until the client closes, asks for
/// `Connection: close` (or speaks HTTP/1.0 without keep-alive), idles for [`IDLE`], or the
/// server is set down (an outage also cuts the connections a client keeps in its pool).
async fn serve<S>(stream: S, sni: Option<String>, shared: &Shared)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut r = BufReader::new(stream);
    loop {
        let next = tokio::time::timeout(IDLE, serve_one(&mut r, &sni, shared)).await;
        if !matches!(next, Ok(true)) || shared.down.load(Ordering::SeqCst) {
            break;
        }
    }
    let stream = r.get_mut();
    let _ = stream.shutdown().await;
    // Linger until the client closes too, so that closing with unread bytes (its close_notify)
    // cannot turn into a TCP reset that destroys the response before the client read it.
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 1024];
        while let Ok(n) = r.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await;
}

/// Reads one request and answers it; `true` when the connection stays open for another.
async fn serve_one<S>(r: &mut BufReader<S>, sni: &Option<String>, shared: &Shared) -> bool
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    let mut request_line = String::new();
    match r.read_line(&mut request_line).await {
        Ok(0) | Err(_) => return false,
        Ok(_) => {}
    }
    // A connection taken from a client's pool while the server is down is cut unanswered.
    if shared.down.load(Ordering::SeqCst) {
        return false;
    }
    let mut parts = request_line.split_whitespace();
    let (Some(method), Some(target)) = (parts.next(), parts.next()) else {
        return false;
    };
    let http10 = parts.next() == Some("HTTP/1.0");
    let method = method.to_string();
    let path = target.split('?').next().unwrap_or("/").to_string();
    let mut headers = Vec::new();
    let mut head_len = request_line.len();
    loop {
        let mut line = String::new();
        match r.read_line(&mut line).await {
            Ok(0) | Err(_) => return false,
            Ok(n) => head_len += n,
        }
        if head_len > LIMIT {
            return false;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((n, v)) = line.split_once(':') {
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_string()));
        }
    }
    let connection = header(&headers, "connection").map(str::to_ascii_lowercase);
    let keep_alive = match connection.as_deref() {
        Some(c) if c.contains("close") => false,
        Some(c) if c.contains("keep-alive") => true,
        _ => !http10,
    };
    let Some(body) = read_body(r, &headers).await else {
        return false;
    };
    let response = {
        let mut state = shared.state.lock().expect("state");
        *state.hits.entry(path.clone()).or_default() += 1;
        state.requests.push(Request {
            method: method.clone(),
            path: path.clone(),
            host: header(&headers, "host").map(str::to_string),
            sni: sni.clone(),
        });
        if method.eq_ignore_ascii_case("POST") {
            state.posts.push((path.clone(), headers, body));
        }
        let response = state
            .routes
            .get(&path)
            .cloned()
            .unwrap_or_else(|| Response::status(404));
        shared.changed.notify_all();
        response
    };
    let mut head = format!(
        "HTTP/1.1 {} {}\r\nContent-Type: {}\r\nContent-Length: {}\r\nConnection: {}\r\n",
        response.status,
        reason(response.status),
        response.content_type,
        response.body.len(),
        if keep_alive { "keep-alive" } else { "close" },
    );
    if let Some(location) = &response.location {
        head.push_str(&format!("Location: {location}\r\n"));
    }
    head.push_str("\r\n");
    let stream = r.get_mut();
    let mut sent = stream.write_all(head.as_bytes()).await.is_ok();
    if sent && !method.eq_ignore_ascii_case("HEAD") {
        sent = stream.write_all(&response.body).await.is_ok();
    }
    sent && stream.flush().await.is_ok() && keep_alive
}

/// Reads a `Content-Length` or `chunked` body; `None` on a broken request.
async fn read_body<R: AsyncBufReadExt + Unpin>(
    r: &mut R,
    headers: &[(String, String)],
) -> Option<Vec<u8>> {
    let chunked = header(headers, "transfer-encoding")
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"));
    if chunked {
        let mut body = Vec::new();
        loop {
            let mut size_line = String::new();
            r.read_line(&mut size_line).await.ok()?;
            let size_hex = size_line.trim().split(';').next().unwrap_or("");
            let size = usize::from_str_radix(size_hex, 16).ok()?;
            if size == 0 {
                // Trailers, then the final empty line.
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).await.ok()? == 0 || line.trim().is_empty() {
                        return Some(body);
                    }
                }
            }
            if body.len() + size > LIMIT {
                return None;
            }
            let start = body.len();
            body.resize(start + size, 0);
            r.read_exact(&mut body[start..]).await.ok()?;
            let mut crlf = String::new();
            r.read_line(&mut crlf).await.ok()?;
        }
    }
    let len: usize = match header(headers, "content-length") {
        Some(v) => v.parse().ok()?,
        None => 0,
    };
    if len > LIMIT {
        return None;
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await.ok()?;
    Some(body)
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        201 => "Created",
        202 => "Accepted",
        204 => "No Content",
        301 => "Moved Permanently",
        302 => "Found",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        500 => "Internal Server Error",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
