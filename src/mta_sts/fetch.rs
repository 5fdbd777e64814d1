//! Policy fetch (RFC 8461 §3.3): `https://mta-sts.<domain>/.well-known/mta-sts.txt` with
//! certificate validation against the web PKI roots plus `[tls] extra_roots`, no redirects, a
//! 64 KiB limit enforced while reading, a timeout, and `text/plain` expected.
//!
//! The HTTPS client also resolves host names through herald's configured name servers (so
//! `mta-sts.<domain>` is looked up where MX and TXT records are), and it is reused to POST
//! TLS-RPT reports to `https:` addresses.

use std::error::Error as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use mail_auth::MessageAuthenticator;
use mail_auth::report::tlsrpt::ResultType;

use super::policy;
use crate::config::Config;
use crate::tls_policy::Policy;
use crate::trust::root_store;

/// The largest policy file accepted (RFC 8461 §3.3 suggests 64 KiB).
pub const MAX_POLICY_SIZE: usize = 64 * 1024;

/// Why a policy could not be fetched, with the TLS-RPT result type to report.
#[derive(Debug, Clone)]
pub struct FetchError {
    /// `sts-policy-fetch-error`, `sts-policy-invalid` or `sts-webpki-invalid`.
    pub result_type: ResultType,
    /// What went wrong, for logs and reports.
    pub detail: String,
}

impl FetchError {
    fn fetch(detail: String) -> FetchError {
        FetchError {
            result_type: ResultType::StsPolicyFetchError,
            detail,
        }
    }

    fn invalid(detail: String) -> FetchError {
        FetchError {
            result_type: ResultType::StsPolicyInvalid,
            detail,
        }
    }
}

/// An HTTPS-only client on rustls with herald's trust roots and name servers, no redirects,
/// no proxies, and `timeout` for each whole request.
pub fn https_client(
    cfg: &Config,
    auth: Arc<MessageAuthenticator>,
    timeout: Duration,
) -> anyhow::Result<reqwest::Client> {
    crate::trust::install_default_provider();
    let mut tls = rustls::ClientConfig::builder_with_provider(crate::trust::provider())
        .with_safe_default_protocol_versions()?
        .with_root_certificates(root_store(&cfg.tls)?)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    reqwest::Client::builder()
        .use_preconfigured_tls(tls)
        .https_only(true)
        .redirect(reqwest::redirect::Policy::none())
        .no_proxy()
        .dns_resolver(Arc::new(DnsThroughConfig(auth)))
        .timeout(timeout)
        .connect_timeout(timeout)
        .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
        .build()
        .map_err(|e| anyhow::anyhow!("cannot build the HTTPS client: {e}"))
}

/// Fetches and parses the policy of `domain` announced with TXT id `id`.
pub async fn fetch_policy(
    client: &reqwest::Client,
    domain: &str,
    port: u16,
    id: &str,
) -> Result<Policy, FetchError> {
    let url = policy_url(domain, port);
    let mut response = client
        .get(&url)
        .send()
        .await
        .map_err(|e| classify(&url, &e))?;
    let status = response.status();
    if status.is_redirection() {
        return Err(FetchError::fetch(format!(
            "{url}: answered {status} (a redirect, which MTA-STS forbids following)"
        )));
    }
    if status != reqwest::StatusCode::OK {
        return Err(FetchError::fetch(format!("{url}: answered {status}")));
    }
    let content_type = response
        .headers()
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    if content_type.split(';').next().map(str::trim) != Some("text/plain") {
        return Err(FetchError::invalid(format!(
            "{url}: media type is {content_type:?}, not text/plain"
        )));
    }
    if response
        .content_length()
        .is_some_and(|n| n > MAX_POLICY_SIZE as u64)
    {
        return Err(FetchError::fetch(format!(
            "{url}: the policy is larger than {MAX_POLICY_SIZE} bytes"
        )));
    }
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| classify(&url, &e))? {
        if body.len() + chunk.len() > MAX_POLICY_SIZE {
            return Err(FetchError::fetch(format!(
                "{url}: the policy is larger than {MAX_POLICY_SIZE} bytes"
            )));
        }
        body.extend_from_slice(&chunk);
    }
    let text = String::from_utf8(body)
        .map_err(|_| FetchError::invalid(format!("{url}: the policy is not UTF-8 text")))?;
    policy::parse(&text, id).map_err(|e| FetchError::invalid(format!("{url}: {e}")))
}

/// Where the policy of `domain` lives.
pub fn policy_url(domain: &str, port: u16) -> String {
    let host = format!("mta-sts.{}", domain.trim_end_matches('.'));
    if port == 443 {
        format!("https://{host}/.well-known/mta-sts.txt")
    } else {
        format!("https://{host}:{port}/.well-known/mta-sts.txt")
    }
}

/// A certificate problem anywhere in the chain is `sts-webpki-invalid`; the rest is a fetch
/// error.
fn classify(url: &str, e: &reqwest::Error) -> FetchError {
    let mut detail = e.to_string();
    let mut webpki = false;
    let mut next: Option<&(dyn std::error::Error + 'static)> = e.source();
    while let Some(err) = next {
        if let Some(tls) = err.downcast_ref::<rustls::Error>() {
            webpki |= matches!(
                tls,
                rustls::Error::InvalidCertificate(_) | rustls::Error::NoCertificatesPresented
            );
        }
        // io::Error hides the error it wraps from `source()`: step into it explicitly.
        next = match err
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => {
                detail.push_str(": ");
                detail.push_str(&err.to_string());
                err.source()
            }
        };
    }
    let detail = format!("{url}: {detail}");
    if webpki {
        FetchError {
            result_type: ResultType::StsWebpkiInvalid,
            detail,
        }
    } else if e.is_timeout() {
        FetchError::fetch(format!("{detail} (timed out)"))
    } else {
        FetchError::fetch(detail)
    }
}

/// reqwest's DNS hook: resolve through `[dns] servers` like every other look-up herald makes.
struct DnsThroughConfig(Arc<MessageAuthenticator>);

impl reqwest::dns::Resolve for DnsThroughConfig {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let auth = self.0.clone();
        let host = format!("{}.", name.as_str().trim_end_matches('.'));
        Box::pin(async move {
            let ips = auth
                .resolver()
                .lookup_ip(host.as_str())
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let addrs: Vec<SocketAddr> = ips.iter().map(|ip| SocketAddr::new(ip, 0)).collect();
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_names_the_port_only_when_not_443() {
        assert_eq!(
            policy_url("example.test", 443),
            "https://mta-sts.example.test/.well-known/mta-sts.txt"
        );
        assert_eq!(
            policy_url("example.test.", 8443),
            "https://mta-sts.example.test:8443/.well-known/mta-sts.txt"
        );
    }
}
