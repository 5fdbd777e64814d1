//! End-to-end tests: running herald in production — config paths and environment overrides,
//! first-day refusals, service-manager readiness, `herald dkim activate`, JSON logs.

mod activate;
mod admin_path;
mod example;
mod first_day;
mod in_process;
mod metrics;
mod reload;
mod rollout;
mod service;
mod startup;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use crate::support::herald::{Herald, herald_bin};

/// Runs `herald --config CONFIG ARGS…` from `cwd` with extra environment variables.
fn herald_in(cwd: &Path, config: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    Command::new(herald_bin())
        .current_dir(cwd)
        .arg("--config")
        .arg(config)
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .output()
        .expect("run herald")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Writes `cfg` to `dir/herald.toml` and starts `herald serve` with extra environment
/// variables `env` (not waiting for it to be ready).
fn serve(dir: &Path, cfg: &toml::Table, env: &[(&str, &str)]) -> Herald {
    let config = dir.join("herald.toml");
    std::fs::write(&config, toml::to_string(cfg).expect("toml")).expect("write config");
    Herald::spawn_with_env(&config, cfg.clone(), &["serve"], env)
}

/// Submits one message as demo over implicit TLS.
pub(crate) async fn submit_as_demo(addr: std::net::SocketAddr, to: &str, subject: &str) {
    let mut client = mail_send::SmtpClientBuilder::new(addr.ip().to_string(), addr.port())
        .expect("client builder")
        .implicit_tls(true)
        .allow_invalid_certs()
        .helo_host("app.test")
        .credentials((
            "demo".to_string(),
            crate::support::herald::DEMO_PASSWORD.to_string(),
        ))
        .timeout(std::time::Duration::from_secs(30))
        .connect()
        .await
        .expect("log in");
    let body =
        format!("From: app@example.test\r\nTo: {to}\r\nSubject: {subject}\r\n\r\nHello.\r\n");
    client
        .send(mail_send::smtp::message::Message::new(
            "app@example.test",
            [to],
            body.as_bytes(),
        ))
        .await
        .expect("accepted");
    let _ = client.quit().await;
}
