//! The MTA-STS chain end to end, for a domain that announces a policy or whose policy herald
//! hosts (`[web.mta_sts]`): the `_mta-sts` record, the policy host's certificate (and when it
//! expires), the policy fetched exactly as a sender fetches it, and every live MX matching it.

use std::sync::Arc;
use std::time::Duration;

use super::{Ctx, Finding, Status};
use crate::mta_sts::discover::{Discovery, discover};
use crate::mta_sts::fetch;

/// Warn when the policy host's certificate expires sooner than this.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);

pub(super) async fn check(ctx: &Ctx<'_>, out: &mut Vec<Finding>) {
    let hosted = ctx
        .cfg
        .web
        .mta_sts
        .keys()
        .any(|d| d.trim_end_matches('.').eq_ignore_ascii_case(&ctx.domain));
    let id = match discover(ctx.auth, &ctx.domain).await {
        Discovery::Id(id) => id,
        Discovery::Failed(e) => {
            out.push(Finding::new("mta-sts.chain", Status::Error, e));
            return;
        }
        Discovery::NoPolicy(why) if hosted => {
            out.push(
                Finding::new(
                    "mta-sts.chain",
                    Status::Fail,
                    format!("herald hosts a policy for {} but {why}", ctx.domain),
                )
                .fix("publish the _mta-sts and mta-sts records `herald dns` prints"),
            );
            return;
        }
        Discovery::NoPolicy(_) => return,
    };
    let host = format!("mta-sts.{}", ctx.domain);
    let port = ctx.cfg.mta_sts.port;
    out.push(certificate(ctx, &host, port).await);
    let client = match crate::resolver::authenticator(&ctx.cfg.dns).and_then(|auth| {
        fetch::https_client(ctx.cfg, Arc::new(auth), ctx.cfg.mta_sts.fetch_timeout)
    }) {
        Ok(c) => c,
        Err(e) => {
            out.push(Finding::new(
                "mta-sts.policy",
                Status::Error,
                format!("{e:#}"),
            ));
            return;
        }
    };
    let policy = match fetch::fetch_policy(&client, &ctx.domain, port, &id).await {
        Ok(p) => p,
        Err(e) => {
            out.push(
                Finding::new("mta-sts.policy", Status::Fail, e.detail).fix(format!(
                    "serve the policy at {}",
                    fetch::policy_url(&ctx.domain, port)
                )),
            );
            return;
        }
    };
    out.push(Finding::new(
        "mta-sts.policy",
        Status::Pass,
        format!(
            "id {id}: mode {}, mx {}, max_age {} s",
            crate::mta_sts::policy::mode_name(policy.mode),
            policy.mx.join(" "),
            policy.max_age
        ),
    ));
    let mx = match crate::outbound::resolve::mx_hosts(ctx.auth, &ctx.domain).await {
        Ok(hosts) => hosts,
        Err(e) => {
            out.push(Finding::new("mta-sts.mx", Status::Error, e.to_string()));
            return;
        }
    };
    let unmatched: Vec<&String> = mx.iter().filter(|h| !policy.matches_mx(h)).collect();
    out.push(if unmatched.is_empty() {
        Finding::new(
            "mta-sts.mx",
            Status::Pass,
            format!("every MX host matches the policy: {}", mx.join(" ")),
        )
    } else {
        Finding::new(
            "mta-sts.mx",
            Status::Fail,
            format!(
                "MX hosts not in the policy: {} (senders in enforce mode will not deliver to them)",
                unmatched
                    .iter()
                    .map(|s| s.as_str())
                    .collect::<Vec<_>>()
                    .join(" ")
            ),
        )
        .fix("list every MX host in the policy's mx (or leave [web.mta_sts] mx empty to follow the live MX)")
    });
}

/// The policy host's certificate, verified as a sender verifies it, and its expiry.
async fn certificate(ctx: &Ctx<'_>, host: &str, port: u16) -> Finding {
    let id = "mta-sts.certificate";
    let addrs = match crate::outbound::resolve::addresses(ctx.auth, host).await {
        Ok(a) => a,
        Err(e) => {
            return Finding::new(id, Status::Fail, e.to_string())
                .fix(format!("publish an address record (or a CNAME) for {host}"));
        }
    };
    let roots = match crate::trust::root_store(&ctx.cfg.tls) {
        Ok(r) => r,
        Err(e) => return Finding::new(id, Status::Error, format!("{e:#}")),
    };
    let tls = match rustls::ClientConfig::builder_with_provider(crate::trust::provider())
        .with_safe_default_protocol_versions()
    {
        Ok(b) => b.with_root_certificates(roots).with_no_client_auth(),
        Err(e) => return Finding::new(id, Status::Error, e.to_string()),
    };
    let Ok(name) = rustls::pki_types::ServerName::try_from(host.to_string()) else {
        return Finding::new(id, Status::Fail, format!("{host} is not a valid host name"));
    };
    let connector = tokio_rustls::TlsConnector::from(Arc::new(tls));
    let mut last = String::from("no address");
    for ip in addrs {
        let attempt = async {
            let tcp = tokio::net::TcpStream::connect((ip, port)).await?;
            connector.connect(name.clone(), tcp).await
        };
        match tokio::time::timeout(Duration::from_secs(10), attempt).await {
            Ok(Ok(stream)) => {
                let Some(leaf) = stream
                    .get_ref()
                    .1
                    .peer_certificates()
                    .and_then(|c| c.first())
                else {
                    return Finding::new(id, Status::Fail, "no certificate presented");
                };
                return expiry_finding(host, leaf.as_ref());
            }
            Ok(Err(e)) => last = format!("{ip}:{port}: {e}"),
            Err(_) => last = format!("{ip}:{port}: timed out"),
        }
    }
    Finding::new(
        id,
        Status::Fail,
        format!("no verified TLS connection to {host}: {last}"),
    )
    .fix(format!(
        "serve {host} over HTTPS with a certificate a public CA issued for it (herald's [web] \
             listener obtains one by ACME once the name points at it)"
    ))
}

fn expiry_finding(host: &str, leaf: &[u8]) -> Finding {
    use x509_cert::der::Decode;
    let id = "mta-sts.certificate";
    let Ok(cert) = x509_cert::Certificate::from_der(leaf) else {
        return Finding::new(
            id,
            Status::Warn,
            format!("{host}: the certificate does not parse"),
        );
    };
    let not_after = cert
        .tbs_certificate
        .validity
        .not_after
        .to_unix_duration()
        .as_secs() as i64;
    let left = not_after - crate::clock::unix_now() as i64;
    let when = chrono::DateTime::from_timestamp(not_after, 0)
        .map(|t| t.to_rfc3339())
        .unwrap_or_else(|| not_after.to_string());
    let message = format!(
        "{host}: verified; expires {when} ({} left)",
        humantime::format_duration(Duration::from_secs(left.max(0) as u64))
    );
    if left < EXPIRY_WARNING.as_secs() as i64 {
        Finding::new(id, Status::Warn, message).fix(
            "renew it (herald's [web] listener renews by ACME; its log says why an order failed)",
        )
    } else {
        Finding::new(id, Status::Pass, message)
    }
}
