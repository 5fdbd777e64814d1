//! Item 6: the admin endpoint needs the token (bearer or login cookie) everywhere but
//! `/health`, refuses foreign `Host` headers (DNS rebinding) and cross-origin state changes,
//! and the CLI reads the token file on its own.

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::{BODY, rig};

/// One HTTP/1.1 exchange; returns the status code and the whole response text.
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String) {
    let mut s = tokio::net::TcpStream::connect(addr)
        .await
        .expect("connect admin");
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req.push_str(&format!("Host: {addr}\r\n"));
    }
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    req.push_str(body);
    s.write_all(req.as_bytes()).await.expect("send");
    let mut text = String::new();
    s.read_to_string(&mut text).await.expect("read");
    let status = text.get(9..12).and_then(|c| c.parse().ok()).unwrap_or(0);
    (status, text)
}

#[tokio::test]
async fn the_admin_endpoint_needs_the_token_and_refuses_rebinding_and_cross_origin_posts() {
    let admin = crate::support::free_addr();
    let rig = rig(|cfg| crate::support::set(cfg, "admin.listen", admin.to_string()));
    let token_file = rig.dir.path().join("admin.token");
    let mode = std::fs::metadata(&token_file)
        .expect("token file created")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");
    let token = std::fs::read_to_string(&token_file)
        .expect("read token")
        .trim()
        .to_string();
    let bearer = format!("Bearer {token}");
    let auth = [("Authorization", bearer.as_str())];

    let mut c = rig.login().await;
    let r = c.submit("app@example.test", &["r@example.org"], BODY).await;
    assert_eq!(r.code, 250);
    let id = r.text.rsplit(' ').next().expect("queue id").to_string();
    let held = |text: &str| text.contains("\"held\":true");

    // Open: health only.
    assert_eq!(http(admin, "GET", "/health", &[], "").await.0, 200);
    for (method, path) in [
        ("GET", "/queue".to_string()),
        ("GET", "/metrics".to_string()),
        ("GET", "/dns".to_string()),
        ("GET", "/".to_string()),
        ("POST", format!("/queue/{id}/hold")),
        ("DELETE", format!("/queue/{id}")),
        ("POST", "/report/flush".to_string()),
        ("GET", "/no-such-page".to_string()),
    ] {
        let (status, text) = http(admin, method, &path, &[], "").await;
        assert_eq!(status, 401, "{method} {path}: {text}");
        assert!(text.contains("Authorization: Bearer"), "{text}");
    }
    // The cross-origin form post of the issue.
    let (status, _) = http(
        admin,
        "POST",
        &format!("/queue/{id}/hold"),
        &[
            ("Content-Type", "text/plain"),
            ("Origin", "http://evil.test"),
        ],
        "x",
    )
    .await;
    assert!(status == 401 || status == 403, "{status}");
    let (_, view) = http(admin, "GET", &format!("/queue/{id}"), &auth, "").await;
    assert!(!held(&view), "{view}");
    // DNS rebinding: a foreign Host is refused even with the token.
    let (status, text) = http(
        admin,
        "GET",
        "/queue",
        &[("Host", "evil.test:8025"), auth[0]],
        "",
    )
    .await;
    assert_eq!(status, 421, "{text}");
    for host in ["localhost", "herald.example.test:8025", "[::1]:1"] {
        let (status, text) = http(admin, "GET", "/queue", &[("Host", host), auth[0]], "").await;
        assert_eq!(status, 200, "Host {host}: {text}");
    }
    // The token works for state changes, but not from another origin.
    let (status, text) = http(
        admin,
        "POST",
        &format!("/queue/{id}/hold"),
        &[auth[0], ("Origin", "http://evil.test")],
        "",
    )
    .await;
    assert_eq!(status, 403, "{text}");
    let (status, text) = http(admin, "POST", &format!("/queue/{id}/hold"), &auth, "").await;
    assert_eq!(status, 200, "{text}");
    assert!(held(
        &http(admin, "GET", &format!("/queue/{id}"), &auth, "")
            .await
            .1
    ));

    // A browser: the login form, a wrong token, the right one, then the cookie.
    let (status, form) = http(admin, "GET", "/login", &[], "").await;
    assert_eq!(status, 200);
    assert!(
        form.contains("<form method=\"post\" action=\"/login\">"),
        "{form}"
    );
    let urlenc = [("Content-Type", "application/x-www-form-urlencoded")];
    assert_eq!(
        http(admin, "POST", "/login", &urlenc, "token=wrong")
            .await
            .0,
        401
    );
    let (status, text) = http(admin, "POST", "/login", &urlenc, &format!("token={token}")).await;
    assert_eq!(status, 303, "{text}");
    let cookie_line = text
        .lines()
        .find(|l| l.to_ascii_lowercase().starts_with("set-cookie:"))
        .expect("a cookie");
    assert!(
        cookie_line.contains("HttpOnly")
            && cookie_line.contains("SameSite=Strict")
            && cookie_line.contains("Path=/"),
        "{cookie_line}"
    );
    // The cookie is a session value, never the token itself.
    assert!(!cookie_line.contains(&token), "{cookie_line}");
    assert!(cookie_line.contains("Max-Age=43200"), "{cookie_line}");
    let cookie = cookie_line
        .split_once(':')
        .and_then(|(_, v)| v.trim().split(';').next())
        .expect("cookie value")
        .to_string();
    let token_cookie = format!("herald_admin={token}");
    assert_eq!(
        http(
            admin,
            "GET",
            "/queue",
            &[("Cookie", token_cookie.as_str())],
            ""
        )
        .await
        .0,
        401,
        "the token is no cookie"
    );
    let with_cookie = [("Cookie", cookie.as_str())];
    let (status, list) = http(admin, "GET", "/queue", &with_cookie, "").await;
    assert_eq!(status, 200);
    assert!(list.contains(&id));
    let release = format!("/queue/{id}/release");
    let origin = format!("http://{admin}");
    let (status, _) = http(
        admin,
        "POST",
        &release,
        &[with_cookie[0], ("Origin", "http://evil.test")],
        "",
    )
    .await;
    assert_eq!(status, 403);
    assert!(held(
        &http(admin, "GET", &format!("/queue/{id}"), &auth, "")
            .await
            .1
    ));
    let (status, text) = http(
        admin,
        "POST",
        &release,
        &[with_cookie[0], ("Origin", origin.as_str())],
        "",
    )
    .await;
    assert_eq!(status, 200, "{text}");
    assert!(!held(
        &http(admin, "GET", &format!("/queue/{id}"), &auth, "")
            .await
            .1
    ));

    // Logging out ends the session.
    let (status, text) = http(admin, "POST", "/logout", &with_cookie, "").await;
    assert_eq!(status, 303, "{text}");
    assert!(text.contains("Max-Age=0"), "{text}");
    assert_eq!(http(admin, "GET", "/queue", &with_cookie, "").await.0, 401);

    // The CLI reads the token file itself.
    let out = std::process::Command::new(crate::support::herald::herald_bin())
        .arg("--config")
        .arg(&rig.herald.config_path)
        .args(["queue", "hold", &id])
        .output()
        .expect("run herald queue");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(held(
        &http(admin, "GET", &format!("/queue/{id}"), &auth, "")
            .await
            .1
    ));
}

#[tokio::test]
async fn an_empty_token_file_is_replaced_and_login_is_throttled_per_address() {
    let admin = crate::support::free_addr();
    let rig = rig(|cfg| {
        crate::support::set(cfg, "admin.listen", admin.to_string());
        let data = cfg["server"]["data_dir"]
            .as_str()
            .expect("data_dir")
            .to_string();
        std::fs::create_dir_all(&data).expect("data dir");
        std::fs::write(std::path::Path::new(&data).join("admin.token"), "\n").expect("write");
    });
    let token_file = rig.dir.path().join("admin.token");
    let token = std::fs::read_to_string(&token_file)
        .expect("read token")
        .trim()
        .to_string();
    assert_eq!(token.len(), 64, "a new token replaced the empty file");
    let mode = std::fs::metadata(&token_file)
        .expect("meta")
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600, "token file mode {mode:o}");

    let urlenc = [("Content-Type", "application/x-www-form-urlencoded")];
    for _ in 0..5 {
        let (status, _) = http(admin, "POST", "/login", &urlenc, "token=guess").await;
        assert_eq!(status, 401);
    }
    // Refused now, the right token included, with the wait in Retry-After.
    let (status, text) = http(admin, "POST", "/login", &urlenc, &format!("token={token}")).await;
    assert_eq!(status, 429, "{text}");
    assert!(text.to_ascii_lowercase().contains("retry-after:"), "{text}");
    assert!(
        !rig.herald
            .log
            .lock()
            .expect("log")
            .iter()
            .any(|l| l.contains(" INFO ") && l.contains("wrong token")),
        "wrong tokens are not logged at info"
    );
    // The CLI's bearer token is not throttled.
    let bearer = format!("Bearer {token}");
    assert_eq!(
        http(
            admin,
            "GET",
            "/queue",
            &[("Authorization", bearer.as_str())],
            ""
        )
        .await
        .0,
        200
    );
}
