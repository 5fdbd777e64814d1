//! The authoritative listener inside `herald serve`, asked by hickory-resolver and `dig`.

use std::net::SocketAddr;
use std::process::Command;
use std::time::Duration;

use hickory_resolver::TokioResolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

use super::{INCLUDE, INCLUDE_VALUE};
use crate::support::herald::{Herald, base_config};
use crate::support::tools::require_tool;

/// A hickory resolver asking only `addr`, over TCP or UDP only.
fn resolver(addr: SocketAddr, tcp: bool) -> TokioResolver {
    let mut conn = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = addr.port();
    let ns = NameServerConfig::new(addr.ip(), false, vec![conn]);
    let mut opts = ResolverOpts::default();
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(5);
    TokioResolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("resolver")
}

async fn txt(r: &TokioResolver, name: &str) -> Result<String, NetError> {
    let lookup = r.txt_lookup(name).await?;
    Ok(lookup
        .answers()
        .iter()
        .filter_map(|rec| match &rec.data {
            RData::TXT(t) => Some(
                t.txt_data
                    .iter()
                    .map(|s| String::from_utf8_lossy(s))
                    .collect::<String>(),
            ),
            _ => None,
        })
        .collect())
}

fn dig(addr: SocketAddr, args: &[&str]) -> String {
    let out = Command::new(require_tool("dig", "dnsutils"))
        .arg(format!("@{}", addr.ip()))
        .args([
            "-p",
            &addr.port().to_string(),
            "+norec",
            "+time=5",
            "+tries=1",
        ])
        .args(args)
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[tokio::test]
async fn listener_answers_its_names_over_udp_and_tcp_and_refuses_others() {
    let dir = tempfile::tempdir().unwrap();
    let listen = crate::support::free_addr();
    let mut cfg = base_config(dir.path());
    let extra: toml::Table = toml::from_str(&format!(
        "[spf]\ninclude = \"{INCLUDE}\"\naddresses = [\"203.0.113.10\", \"2001:db8::10\"]\n\
         [dns_server]\nlisten = \"{listen}\"\nrate_limit = 1000\n"
    ))
    .unwrap();
    cfg.extend(extra);
    let h = Herald::start(dir.path(), cfg);
    let dkim_name = "dev._domainkey.example.test.";

    for tcp in [false, true] {
        let r = resolver(listen, tcp);
        assert_eq!(
            txt(&r, &format!("{INCLUDE}.")).await.expect("include"),
            INCLUDE_VALUE
        );
        let key = txt(&r, dkim_name).await.expect("selector");
        assert!(key.starts_with("v=DKIM1; k=ed25519; p="), "{key}");
        match txt(&r, "example.com.").await {
            Err(NetError::Dns(DnsError::ResponseCode(ResponseCode::Refused))) => {}
            other => panic!(
                "foreign name over {}: {other:?}",
                if tcp { "TCP" } else { "UDP" }
            ),
        }
    }

    // The same over dig, which shows the flags: authoritative, no recursion.
    for mode in ["+notcp", "+tcp"] {
        let out = dig(listen, &[mode, "TXT", INCLUDE]);
        assert!(
            out.contains("status: NOERROR") && out.contains("flags: qr aa"),
            "{out}"
        );
        assert!(out.contains(&format!("\"{INCLUDE_VALUE}\"")), "{out}");
        let out = dig(listen, &[mode, "TXT", "www.example.org"]);
        assert!(out.contains("status: REFUSED"), "{out}");
        let out = dig(listen, &[mode, "A", &format!("nope.{INCLUDE}")]);
        assert!(
            out.contains("status: NXDOMAIN") && out.contains("SOA"),
            "{out}"
        );
    }
    drop(h);
}

#[test]
fn listener_rate_limits_each_source() {
    let dir = tempfile::tempdir().unwrap();
    let listen = crate::support::free_addr();
    let mut cfg = base_config(dir.path());
    let extra: toml::Table = toml::from_str(&format!(
        "[spf]\ninclude = \"{INCLUDE}\"\naddresses = [\"203.0.113.10\"]\n\
         [dns_server]\nlisten = \"{listen}\"\nrate_limit = 2\n"
    ))
    .unwrap();
    cfg.extend(extra);
    let _h = Herald::start(dir.path(), cfg);
    // Far more queries than the bucket holds, back to back from one address.
    let statuses: Vec<String> = (0..12)
        .map(|_| {
            let out = dig(listen, &["+tcp", "TXT", INCLUDE]);
            out.lines()
                .find_map(|l| l.split("status: ").nth(1))
                .map(|s| s.split(',').next().unwrap_or("").to_string())
                .unwrap_or_default()
        })
        .collect();
    assert_eq!(statuses[0], "NOERROR", "{statuses:?}");
    assert!(statuses.iter().any(|s| s == "REFUSED"), "{statuses:?}");
}
