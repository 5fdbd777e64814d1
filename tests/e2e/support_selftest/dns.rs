//! The test DNS server against hickory-resolver (UDP and TCP) and `dig`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Duration;

use hickory_resolver::Resolver;
use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use hickory_resolver::net::runtime::TokioRuntimeProvider;
use hickory_resolver::net::{DnsError, NetError};
use hickory_resolver::proto::op::ResponseCode;
use hickory_resolver::proto::rr::RData;

use crate::support::dns::DnsServer;

/// A resolver asking only `server`, over UDP or TCP only.
fn resolver(server: SocketAddr, tcp: bool) -> hickory_resolver::TokioResolver {
    let mut conn = if tcp {
        ConnectionConfig::tcp()
    } else {
        ConnectionConfig::udp()
    };
    conn.port = server.port();
    let ns = NameServerConfig::new(server.ip(), true, vec![conn]);
    let mut opts = ResolverOpts::default();
    opts.attempts = 1;
    opts.timeout = Duration::from_secs(5);
    opts.cache_size = 0;
    Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![ns]),
        TokioRuntimeProvider::default(),
    )
    .with_options(opts)
    .build()
    .expect("build resolver")
}

fn no_records(err: NetError) -> (ResponseCode, bool) {
    match err {
        NetError::Dns(DnsError::NoRecordsFound(nr)) => (nr.response_code, nr.soa.is_some()),
        other => panic!("expected a negative answer, got {other:?}"),
    }
}

const LONG_TXT: &str = "v=DKIM1; k=rsa; p=MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEAx\
    aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa\
    bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb\
    cccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccccc\
    dddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddddd\
    eeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeeee\
    IDAQAB";

fn zone() -> DnsServer {
    let dns = DnsServer::start();
    dns.add_mx("example.test", 20, "mx2.example.test");
    dns.add_mx("Example.Test.", 10, "mx1.example.test.");
    dns.add_a("mx1.example.test", Ipv4Addr::new(127, 0, 0, 10));
    dns.add_aaaa("mx1.example.test", "::1".parse().expect("ipv6"));
    dns.add_txt("dkim._domainkey.example.test", LONG_TXT);
    dns.add_txt("_mta-sts.example.test", "v=STSv1; id=1");
    dns.add_null_mx("nomail.test");
    dns
}

#[tokio::test]
async fn dns_answers_hickory_over_udp_and_tcp() {
    let dns = zone();
    for tcp in [false, true] {
        let r = resolver(dns.addr, tcp);
        let mx = r.mx_lookup("example.test.").await.expect("MX");
        let mut mx: Vec<(u16, String)> = mx
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::MX(m) => Some((m.preference, m.exchange.to_ascii())),
                _ => None,
            })
            .collect();
        mx.sort();
        assert_eq!(
            mx,
            vec![
                (10, "mx1.example.test.".to_string()),
                (20, "mx2.example.test.".to_string())
            ],
            "tcp={tcp}"
        );
        let a = r.ipv4_lookup("MX1.example.TEST.").await.expect("A");
        assert!(
            a.answers()
                .iter()
                .any(|rec| rec.data == RData::A(Ipv4Addr::new(127, 0, 0, 10).into())),
            "tcp={tcp}: {a:?}"
        );
        let txt = r
            .txt_lookup("dkim._domainkey.example.test.")
            .await
            .expect("TXT");
        let joined: Vec<String> = txt
            .answers()
            .iter()
            .filter_map(|rec| match &rec.data {
                RData::TXT(t) => Some(
                    t.txt_data
                        .iter()
                        .map(|s| String::from_utf8_lossy(s).into_owned())
                        .collect::<String>(),
                ),
                _ => None,
            })
            .collect();
        assert_eq!(joined, vec![LONG_TXT.to_string()], "tcp={tcp}");
        let null = r.mx_lookup("nomail.test.").await.expect("null MX");
        assert!(
            matches!(&null.answers()[0].data, RData::MX(m) if m.preference == 0 && m.exchange.is_root())
        );

        let nx = r
            .mx_lookup("nowhere.example.test.")
            .await
            .expect_err("NXDOMAIN");
        assert_eq!(no_records(nx), (ResponseCode::NXDomain, true), "tcp={tcp}");
        let empty = r.txt_lookup("mx1.example.test.").await.expect_err("no TXT");
        assert_eq!(
            no_records(empty),
            (ResponseCode::NoError, true),
            "tcp={tcp}"
        );
    }
    assert!(dns.queries() >= 12, "queries counted: {}", dns.queries());
}

#[tokio::test]
async fn dns_records_change_at_run_time() {
    let dns = zone();
    dns.set_txt("_mta-sts.example.test", "v=STSv1; id=2");
    let txt = resolver(dns.addr, false)
        .txt_lookup("_mta-sts.example.test.")
        .await
        .expect("TXT");
    assert_eq!(txt.answers().len(), 1);
    assert!(matches!(&txt.answers()[0].data, RData::TXT(t) if &*t.txt_data[0] == b"v=STSv1; id=2"));
    dns.remove("_mta-sts.example.test.");
    let gone = resolver(dns.addr, false)
        .txt_lookup("_mta-sts.example.test.")
        .await
        .expect_err("removed");
    assert_eq!(no_records(gone).0, ResponseCode::NXDomain);
}

fn dig(dns: &DnsServer, args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("dig")
        .arg(format!("@{}", dns.addr.ip()))
        .arg("-p")
        .arg(dns.addr.port().to_string())
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

#[test]
fn dns_answers_dig() {
    let dns = zone();
    if dig(&dns, &["+short", "A", "mx1.example.test"]).is_none() {
        eprintln!("dig is not installed: skipping the dig cross-check");
        return;
    }
    for transport in ["+notcp", "+tcp"] {
        let mx = dig(&dns, &[transport, "+short", "MX", "example.test"]).expect("dig");
        let mut lines: Vec<&str> = mx.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec!["10 mx1.example.test.", "20 mx2.example.test."],
            "{transport}"
        );
        let nx = dig(&dns, &[transport, "MX", "nowhere.example.test"]).expect("dig");
        assert!(nx.contains("status: NXDOMAIN"), "{transport}: {nx}");
        let empty = dig(&dns, &[transport, "TXT", "mx1.example.test"]).expect("dig");
        assert!(
            empty.contains("status: NOERROR") && empty.contains("ANSWER: 0"),
            "{transport}: {empty}"
        );
        assert!(
            empty.contains("SOA"),
            "{transport}: negative answer carries an SOA: {empty}"
        );
        let null = dig(&dns, &[transport, "+short", "MX", "nomail.test"]).expect("dig");
        assert_eq!(null.trim(), "0 .", "{transport}");
    }
    // A TXT too big for a 512-byte UDP answer: truncated over UDP, dig retries over TCP.
    let big = "x".repeat(1500);
    dns.add_txt("big.example.test", &big);
    let udp = dig(&dns, &["+noedns", "+ignore", "TXT", "big.example.test"]).expect("dig");
    assert!(udp.contains(" tc"), "UDP answer is truncated: {udp}");
    let txt = dig(&dns, &["+noedns", "+short", "TXT", "big.example.test"]).expect("dig");
    let joined: String = txt
        .trim()
        .split("\" \"")
        .map(|s| s.trim_matches('"'))
        .collect();
    assert_eq!(joined, big, "TCP retry gives the whole record");
}
