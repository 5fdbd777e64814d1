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
use crate::support::tools::require_tool;

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
    assert!(dns.was_asked("Example.TEST.", "mx"));
    assert!(!dns.was_asked("example.test", "TXT"));
}

#[tokio::test]
async fn dns_records_change_at_run_time() {
    let dns = zone();
    // One resolver with its cache on: TTL 0 answers must not be served from cache.
    let mut conn = ConnectionConfig::udp();
    conn.port = dns.addr.port();
    let r = Resolver::builder_with_config(
        ResolverConfig::from_name_servers(vec![NameServerConfig::new(
            dns.addr.ip(),
            true,
            vec![conn],
        )]),
        TokioRuntimeProvider::default(),
    )
    .build()
    .expect("caching resolver");
    let id = |lookup: hickory_resolver::lookup::Lookup| match &lookup.answers()[0].data {
        RData::TXT(t) => String::from_utf8_lossy(&t.txt_data[0]).into_owned(),
        other => panic!("not TXT: {other:?}"),
    };
    let name = "_mta-sts.example.test.";
    assert_eq!(id(r.txt_lookup(name).await.expect("TXT")), "v=STSv1; id=1");
    dns.set_txt("_mta-sts.example.test", "v=STSv1; id=2");
    let txt = r.txt_lookup(name).await.expect("TXT");
    assert_eq!(txt.answers().len(), 1, "set_txt replaces");
    assert_eq!(id(txt), "v=STSv1; id=2");
    dns.remove("_mta-sts.example.test.");
    let gone = r.txt_lookup(name).await.expect_err("removed");
    assert_eq!(no_records(gone).0, ResponseCode::NXDomain);
    // A temporary failure, then the record again.
    dns.add_txt("_mta-sts.example.test", "v=STSv1; id=3");
    dns.fail("_MTA-STS.example.test");
    let err = r.txt_lookup(name).await.expect_err("SERVFAIL");
    assert!(
        !matches!(err, NetError::Dns(DnsError::NoRecordsFound(_))),
        "SERVFAIL is not a negative answer: {err:?}"
    );
    dns.unfail("_mta-sts.example.test");
    assert_eq!(id(r.txt_lookup(name).await.expect("TXT")), "v=STSv1; id=3");
    // An empty non-terminal (names exist below it) is NOERROR, not NXDOMAIN.
    let ent = r
        .txt_lookup("_domainkey.example.test.")
        .await
        .expect_err("ENT");
    assert_eq!(no_records(ent).0, ResponseCode::NoError);
}

fn dig(dns: &DnsServer, args: &[&str]) -> String {
    let out = std::process::Command::new(require_tool("dig", "dnsutils"))
        .arg(format!("@{}", dns.addr.ip()))
        .arg("-p")
        .arg(dns.addr.port().to_string())
        .args(["+time=5", "+tries=1"])
        .args(args)
        .output()
        .expect("dig runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn dns_answers_dig() {
    let dns = zone();
    for transport in ["+notcp", "+tcp"] {
        let mx = dig(&dns, &[transport, "+short", "MX", "example.test"]);
        let mut lines: Vec<&str> = mx.lines().collect();
        lines.sort();
        assert_eq!(
            lines,
            vec!["10 mx1.example.test.", "20 mx2.example.test."],
            "{transport}"
        );
        let nx = dig(&dns, &[transport, "MX", "nowhere.example.test"]);
        assert!(nx.contains("status: NXDOMAIN"), "{transport}: {nx}");
        let empty = dig(&dns, &[transport, "TXT", "mx1.example.test"]);
        assert!(
            empty.contains("status: NOERROR") && empty.contains("ANSWER: 0"),
            "{transport}: {empty}"
        );
        assert!(
            empty.contains("SOA"),
            "{transport}: negative answer carries an SOA: {empty}"
        );
        let null = dig(&dns, &[transport, "+short", "MX", "nomail.test"]);
        assert_eq!(null.trim(), "0 .", "{transport}");
    }
    // A TXT too big for a 512-byte UDP answer: truncated over UDP, dig retries over TCP.
    let big = "x".repeat(1500);
    dns.add_txt("big.example.test", &big);
    let udp = dig(&dns, &["+noedns", "+ignore", "TXT", "big.example.test"]);
    assert!(udp.contains(" tc"), "UDP answer is truncated: {udp}");
    let txt = dig(&dns, &["+noedns", "+short", "TXT", "big.example.test"]);
    let joined: String = txt
        .trim()
        .split("\" \"")
        .map(|s| s.trim_matches('"'))
        .collect();
    assert_eq!(joined, big, "TCP retry gives the whole record");
}

#[tokio::test]
async fn dns_aaaa_and_remove_type() {
    let dns = zone();
    let r = resolver(dns.addr, false);
    let aaaa = r.ipv6_lookup("mx1.example.test.").await.expect("AAAA");
    assert!(matches!(&aaaa.answers()[0].data, RData::AAAA(a) if a.0.is_loopback()));
    dns.remove_type(
        "mx1.example.test",
        hickory_resolver::proto::rr::RecordType::AAAA,
    );
    let r = resolver(dns.addr, false);
    let gone = r
        .ipv6_lookup("mx1.example.test.")
        .await
        .expect_err("no AAAA");
    assert_eq!(no_records(gone).0, ResponseCode::NoError, "A still there");
    r.ipv4_lookup("mx1.example.test.").await.expect("A kept");
}

/// Herald's own resolver (mail-auth on `[dns] servers`) reads the test zone: the path every
/// herald look-up takes in the end-to-end tests.
#[tokio::test]
async fn herald_resolver_reads_the_test_zone() {
    use mail_auth::common::cache::NoCache;
    use mail_auth::mta_sts::MtaSts;
    use mail_auth::{MX, RecordSet, Txt};
    let dns = zone();
    let cfg: herald::config::DnsConfig =
        toml::from_str(&format!("servers = [\"{}\"]", dns.addr)).expect("[dns] section");
    let auth = herald::resolver::authenticator(&cfg).expect("authenticator");

    let raw = auth
        .txt_raw_lookup("dkim._domainkey.example.test.")
        .await
        .expect("TXT");
    assert_eq!(raw, LONG_TXT.as_bytes(), "255-byte strings are joined back");
    let mx = auth
        .mx_lookup("example.test.", None::<&NoCache<Box<str>, RecordSet<MX>>>)
        .await
        .expect("MX");
    let mut mx: Vec<(u16, String)> = mx
        .rrset
        .iter()
        .flat_map(|m| m.exchanges.iter().map(|e| (m.preference, e.to_string())))
        .collect();
    mx.sort();
    // mail-auth keeps the trailing dot of exchange names.
    assert_eq!(mx[0], (10, "mx1.example.test.".to_string()));
    assert_eq!(mx.len(), 2);
    let sts = auth
        .txt_lookup::<MtaSts>("_mta-sts.example.test.", None::<&NoCache<Box<str>, Txt>>)
        .await
        .expect("_mta-sts TXT parses");
    assert_eq!(sts.id, "1");
    assert!(
        auth.txt_raw_lookup("nowhere.example.test.").await.is_err(),
        "NXDOMAIN is an error for mail-auth"
    );
}

#[tokio::test]
async fn dns_idn_names_answer_in_punycode() {
    let dns = DnsServer::start();
    dns.add_mx_host(
        "bücher.test",
        10,
        "mx.bücher.test",
        "127.0.0.9".parse().expect("ip"),
    );
    let r = resolver(dns.addr, false);
    let mx = r.mx_lookup("xn--bcher-kva.test.").await.expect("MX");
    assert!(matches!(&mx.answers()[0].data,
        RData::MX(m) if m.exchange.to_ascii() == "mx.xn--bcher-kva.test."));
    let a = r.ipv4_lookup("mx.xn--bcher-kva.test.").await.expect("A");
    assert_eq!(
        a.answers()[0].data,
        RData::A(Ipv4Addr::new(127, 0, 0, 9).into())
    );
}
