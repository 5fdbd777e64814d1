//! The admin endpoint's gate, applied as one axum middleware to the whole router in
//! [`super::start`], so every route — including ones other modules merge in later — gets it
//! without code of its own:
//!
//! - `Host` must be an IP literal, `localhost` or `server.hostname` (any port): a page on
//!   another site that rebinds its DNS name to 127.0.0.1 is refused (DNS rebinding).
//! - Every path except `/health` and `/login` needs the token: `Authorization: Bearer <token>`
//!   (the CLI) or the `herald_admin` cookie set by the `/login` form (a browser). The cookie
//!   holds a random session value that expires after 12 hours and ends at `/logout`
//!   ([`super::session`]), never the token; it is `HttpOnly; SameSite=Strict`, so a browser
//!   never sends it on a request another site starts. `/login` refuses an address for 5
//!   minutes after 5 wrong tokens.
//! - A request that can change state (anything but GET/HEAD) carrying an `Origin` or
//!   `Sec-Fetch-Site` header must come from this endpoint's own origin.

use std::net::IpAddr;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

/// Name of the login cookie.
pub(crate) const COOKIE: &str = "herald_admin";

/// What the gate checks against.
pub(crate) struct Gate {
    /// The admin token.
    pub token: String,
    /// `server.hostname`, lower case.
    pub hostname: String,
    /// Browser sessions and the login throttle.
    pub(super) sessions: super::session::Sessions,
}

/// The middleware: Host check, token or cookie, same-origin for state changes.
pub(crate) async fn check(State(gate): State<Arc<Gate>>, req: Request, next: Next) -> Response {
    let headers = req.headers();
    let Some(host) = headers.get(header::HOST).and_then(|h| h.to_str().ok()) else {
        return refuse(StatusCode::BAD_REQUEST, "a Host header is required");
    };
    if !host_allowed(host, &gate.hostname) {
        return refuse(
            StatusCode::MISDIRECTED_REQUEST,
            &format!(
                "Host {host:?} is not this admin endpoint: use an IP address, localhost or {}",
                gate.hostname
            ),
        );
    }
    let host = host.to_string();
    let changes_state = !matches!(*req.method(), Method::GET | Method::HEAD);
    if changes_state && !same_origin(req.headers(), &host) {
        return refuse(
            StatusCode::FORBIDDEN,
            "cross-origin request refused: state changes come only from this endpoint's own \
             pages or from clients that send no Origin",
        );
    }
    match req.uri().path() {
        "/health" => return next.run(req).await,
        "/login" if req.method() == Method::GET => return login_form(StatusCode::OK, ""),
        "/login" if req.method() == Method::POST => return login(&gate, req).await,
        "/logout" => return logout(&gate, req.headers()),
        _ => {}
    }
    if !authorized(req.headers(), &gate.token, &gate.sessions) {
        return unauthorized();
    }
    next.run(req).await
}

/// True for an IP literal (IPv6 in brackets), `localhost` or `hostname`, each with an
/// optional `:port`.
pub(crate) fn host_allowed(host: &str, hostname: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        match rest.split_once(']') {
            Some((ip, port)) if port.is_empty() || valid_port(port) => {
                return ip.parse::<std::net::Ipv6Addr>().is_ok();
            }
            _ => return false,
        }
    } else {
        match host.rsplit_once(':') {
            Some((name, port)) if valid_port(&format!(":{port}")) => name,
            Some(_) => return false,
            None => host,
        }
    };
    let name = name.trim_end_matches('.');
    name.parse::<IpAddr>().is_ok()
        || name.eq_ignore_ascii_case("localhost")
        || name.eq_ignore_ascii_case(hostname.trim_end_matches('.'))
}

fn valid_port(colon_port: &str) -> bool {
    colon_port
        .strip_prefix(':')
        .is_some_and(|p| !p.is_empty() && p.len() <= 5 && p.bytes().all(|b| b.is_ascii_digit()))
}

/// For a state-changing request: `Origin`, when sent, is `http(s)://<Host>`, and
/// `Sec-Fetch-Site`, when sent, is `same-origin` or `none` (typed by the user).
fn same_origin(headers: &HeaderMap, host: &str) -> bool {
    if let Some(origin) = headers.get(header::ORIGIN) {
        let ok = origin.to_str().is_ok_and(|o| {
            o.eq_ignore_ascii_case(&format!("http://{host}"))
                || o.eq_ignore_ascii_case(&format!("https://{host}"))
        });
        if !ok {
            return false;
        }
    }
    match headers
        .get("sec-fetch-site")
        .map(|v| v.to_str().unwrap_or(""))
    {
        None => true,
        Some(site) => site == "same-origin" || site == "none",
    }
}

/// The bearer token matches, or the login cookie is a live session.
fn authorized(headers: &HeaderMap, token: &str, sessions: &super::session::Sessions) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| {
            v.strip_prefix("Bearer ")
                .or_else(|| v.strip_prefix("bearer "))
        })
        .map(str::trim);
    if bearer.is_some_and(|b| equal(b, token)) {
        return true;
    }
    session_cookies(headers).any(|v| sessions.valid(v))
}

/// The values of the login cookie in `headers`.
fn session_cookies(headers: &HeaderMap) -> impl Iterator<Item = &str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|kv| kv.trim().split_once('='))
        .filter(|(k, _)| *k == COOKIE)
        .map(|(_, v)| v)
}

/// `/logout`: ends the browser's session, clears its cookie and sends it to `/login`.
fn logout(gate: &Gate, headers: &HeaderMap) -> Response {
    for v in session_cookies(headers) {
        gate.sessions.end(v);
    }
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/login")
        .header(
            header::SET_COOKIE,
            format!("{COOKIE}=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the reply"))
}

/// Constant-time comparison, so response timing says nothing about the token.
pub(super) fn equal(a: &str, b: &str) -> bool {
    aws_lc_rs::constant_time::verify_slices_are_equal(a.as_bytes(), b.as_bytes()).is_ok()
}

fn refuse(status: StatusCode, why: &str) -> Response {
    (status, format!("herald admin: {why}\n")).into_response()
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer realm=\"herald admin\"")],
        "herald admin: authentication required: send `Authorization: Bearer <token>` with the \
         token from [admin] token_file (default <data_dir>/admin.token), or log in at /login\n",
    )
        .into_response()
}

fn login_form(status: StatusCode, message: &str) -> Response {
    let page = format!(
        "<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>herald admin: log in</title>\
         </head><body>\n<h1>herald admin</h1>\n<p>{message}</p>\n\
         <form method=\"post\" action=\"/login\">\n<label>Admin token (from the token file, \
         default <code>&lt;data_dir&gt;/admin.token</code>): \
         <input type=\"password\" name=\"token\" autocomplete=\"current-password\" required>\
         </label>\n<button type=\"submit\">Log in</button>\n</form>\n</body></html>\n"
    );
    (
        status,
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        page,
    )
        .into_response()
}

/// `POST /login` with `token=...` (a form): starts a session, sets its cookie and redirects to
/// `/`. Throttled per client address ([`super::session::MAX_LOGIN_FAILURES`]).
async fn login(gate: &Gate, req: Request) -> Response {
    let ip = req
        .extensions()
        .get::<ConnectInfo<super::listener::Peer>>()
        .map(|c| c.0.0.ip())
        .unwrap_or(IpAddr::from([0, 0, 0, 0]));
    if let Err(wait) = gate.sessions.login_allowed(ip) {
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [(header::RETRY_AFTER, wait.to_string())],
            format!("herald admin: too many wrong tokens from {ip}; try again in {wait} seconds\n"),
        )
            .into_response();
    }
    let body = match axum::body::to_bytes(req.into_body(), 8 * 1024).await {
        Ok(b) => b,
        Err(_) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, "login form too large"),
    };
    let token = form_urlencoded::parse(&body)
        .find(|(k, _)| k == "token")
        .map(|(_, v)| v.trim().to_string())
        .unwrap_or_default();
    if !equal(&token, &gate.token) {
        let failures = gate.sessions.failed(ip);
        if failures == super::session::MAX_LOGIN_FAILURES {
            tracing::warn!(%ip, failures, "admin login: too many wrong tokens; this address is refused for a while");
        } else {
            tracing::debug!(%ip, failures, "admin login with a wrong token");
        }
        return login_form(StatusCode::UNAUTHORIZED, "That token is not right.");
    }
    gate.sessions.succeeded(ip);
    let session = gate.sessions.start();
    Response::builder()
        .status(StatusCode::SEE_OTHER)
        .header(header::LOCATION, "/")
        .header(
            header::SET_COOKIE,
            format!(
                "{COOKIE}={session}; HttpOnly; SameSite=Strict; Path=/; Max-Age={}",
                super::session::SESSION_TTL.as_secs()
            ),
        )
        .body(Body::empty())
        .unwrap_or_else(|_| refuse(StatusCode::INTERNAL_SERVER_ERROR, "cannot build the reply"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hosts() {
        let h = "herald.example.test";
        for ok in [
            "127.0.0.1",
            "127.0.0.1:8025",
            "[::1]:8025",
            "[::1]",
            "localhost:8025",
            "LOCALHOST",
            "herald.example.test:8025",
            "herald.example.test.",
        ] {
            assert!(host_allowed(ok, h), "{ok}");
        }
        for bad in [
            "evil.test",
            "evil.test:8025",
            "127.0.0.1.evil.test",
            "[::1]x",
            "localhost:80x",
            "herald.example.test.evil",
            "",
        ] {
            assert!(!host_allowed(bad, h), "{bad}");
        }
    }

    #[test]
    fn tokens_and_cookies() {
        let sessions = super::super::session::Sessions::default();
        let mut h = HeaderMap::new();
        assert!(!authorized(&h, "secret-token", &sessions));
        h.insert(
            header::AUTHORIZATION,
            "Bearer secret-token".parse().unwrap(),
        );
        assert!(authorized(&h, "secret-token", &sessions));
        let id = sessions.start();
        let mut h = HeaderMap::new();
        h.insert(
            header::COOKIE,
            format!("a=b; herald_admin={id}").parse().unwrap(),
        );
        assert!(authorized(&h, "secret-token", &sessions));
        h.insert(header::COOKIE, "herald_admin=secret-token".parse().unwrap());
        assert!(
            !authorized(&h, "secret-token", &sessions),
            "the token itself is no cookie"
        );
    }
}
