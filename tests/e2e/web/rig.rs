//! One herald with `[web]` on the fake internet: the test DNS server, a test CA for the SMTP
//! listener and for Pebble's own HTTPS, Pebble issuing herald's public certificate.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Output};
use std::time::Duration;

use crate::support::herald::{Herald, herald_bin};
use crate::support::pebble::{Pebble, PebbleOptions};
use crate::support::world::World;

pub const HOST: &str = "herald.example.test";
pub const STS_HOST: &str = "mta-sts.example.test";
pub const WAIT: Duration = Duration::from_secs(60);

/// The shared test [`World`] (directory, DNS, CA, herald's certificate) with Pebble and a
/// running herald; reads the world's fields through `Deref`.
pub struct WebRig {
    w: World,
    /// The ACME server (a test may stop it by taking it).
    pub pebble: Option<Pebble>,
    pub herald: Herald,
    /// herald's `[web] listen`.
    pub web: SocketAddr,
    /// Pebble's root, for curl.
    pub pebble_root: PathBuf,
    /// Where herald writes the mail it would deliver.
    pub captured: PathBuf,
}

/// Starts DNS, Pebble (issuing certificates valid `validity_secs`) and herald, and waits for
/// herald's first certificate. `extra` is TOML appended to the config (more `[web.mta_sts]`),
/// `records` more address records published before herald starts; `renew_before` is
/// `[web] renew_before` (a long one makes every pass order again).
pub fn start(
    validity_secs: u64,
    renew_before: &str,
    extra: &str,
    records: &[(&str, std::net::IpAddr)],
) -> WebRig {
    let w = World::builder().herald_cert(HOST).build();
    let (dir, dns, ca) = (&w.dir, &w.dns, &w.ca);
    let web = crate::support::free_addr();
    dns.add_ip(HOST, web.ip());
    dns.add_ip(STS_HOST, web.ip());
    for (name, ip) in records {
        dns.add_ip(name, *ip);
    }
    let pebble = Pebble::start(
        dir.path(),
        ca,
        dns,
        PebbleOptions {
            tls_port: web.port(),
            validity_secs,
        },
    );
    let pebble_root = pebble.write_root(&dir.path().join("pebble-root.pem"));
    let mut cfg = w.config();
    w.trust_ca(&mut cfg);
    let test_ca = dir.path().join("test-ca.pem").display().to_string();
    crate::support::set(
        &mut cfg,
        "tls.extra_roots",
        vec![test_ca, pebble_root.display().to_string()],
    );
    let captured = dir.path().join("captured");
    crate::support::set(
        &mut cfg,
        "delivery.capture_dir",
        captured.display().to_string(),
    );
    crate::support::set(&mut cfg, "mta_sts.port", web.port() as i64);
    crate::support::set(&mut cfg, "apps.demo.unsubscribe", "one-click");
    let web_section: toml::Table = toml::from_str(&format!(
        r#"
[web]
listen = "{web}"
acme_directory = "{directory}"
acme_retry = "1s"
renew_before = "{renew_before}"

[web.mta_sts."example.test"]
mx = ["mx.example.test", "*.backup.example.test"]
max_age = "1d"
{extra}
"#,
        directory = pebble.directory,
    ))
    .expect("web config parses");
    cfg.extend(web_section);
    let mut herald = Herald::start(dir.path(), cfg);
    herald.wait_for_log("certificate issued and in force", WAIT);
    WebRig {
        w,
        pebble: Some(pebble),
        herald,
        web,
        pebble_root,
        captured,
    }
}

impl std::ops::Deref for WebRig {
    type Target = World;
    fn deref(&self) -> &World {
        &self.w
    }
}

impl WebRig {
    /// curl to `https://host:port/path` at herald's listener, trusting only Pebble's root.
    pub fn curl(&self, host: &str, path: &str, extra: &[&str]) -> Output {
        crate::support::pebble::curl(
            &self.pebble_root,
            &format!("https://{host}:{}{path}", self.web.port()),
            &[(host, self.web)],
            extra,
        )
    }

    /// Runs `herald --config … ARGS`.
    pub fn herald_cli(&self, args: &[&str]) -> Output {
        Command::new(herald_bin())
            .arg("--config")
            .arg(&self.herald.config_path)
            .args(args)
            .output()
            .expect("run herald")
    }
}
