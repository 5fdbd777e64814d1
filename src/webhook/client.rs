//! The HTTPS client webhooks are POSTed with: herald's trust roots (with `[tls] extra_roots`),
//! names resolved through `[dns] servers`, every resolved address checked against the
//! server-side request forgery rules ([`crate::config::webhook_address_allowed`]), no
//! redirects, no proxies, a timeout on the whole exchange and a bounded read of the answer.

use std::net::SocketAddr;
use std::sync::Arc;

use ipnet::IpNet;
use mail_auth::MessageAuthenticator;

use crate::config::Config;

/// A client for webhook POSTs.
#[derive(Clone)]
pub(crate) struct Client {
    http: reqwest::Client,
    allowed: Arc<Vec<IpNet>>,
    max_response: usize,
}

/// What one POST came to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// `2xx`.
    Accepted(u16),
    /// Anything else; the text says what, for logs and `herald webhook test`.
    Failed(String),
}

impl Client {
    /// The client of this configuration.
    pub(crate) fn new(cfg: &Config) -> anyhow::Result<Client> {
        crate::trust::install_default_provider();
        let mut tls = rustls::ClientConfig::builder_with_provider(crate::trust::provider())
            .with_safe_default_protocol_versions()?
            .with_root_certificates(crate::trust::root_store(&cfg.tls)?)
            .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        let allowed = Arc::new(cfg.webhooks.allow_networks.clone());
        let auth = Arc::new(crate::resolver::authenticator(&cfg.dns)?);
        let timeout = cfg.webhooks.timeout;
        let http = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .https_only(true)
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .dns_resolver(Arc::new(CheckedResolver {
                auth,
                allowed: allowed.clone(),
            }))
            .timeout(timeout)
            .connect_timeout(timeout)
            .user_agent(concat!("herald/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| anyhow::anyhow!("cannot build the webhook HTTPS client: {e}"))?;
        Ok(Client {
            http,
            allowed,
            max_response: cfg.webhooks.max_response_bytes,
        })
    }

    /// POSTs `body` to `url` with the Standard Webhooks headers, signed with `key`.
    pub(crate) async fn post(
        &self,
        url: &str,
        key: &[u8],
        webhook_id: &str,
        body: &[u8],
    ) -> Outcome {
        if let Err(why) = crate::config::check_webhook_url(url, &self.allowed) {
            return Outcome::Failed(why.to_string());
        }
        let timestamp = crate::clock::unix_now();
        let signature = super::sign::signature(key, webhook_id, timestamp, body);
        let sent = self
            .http
            .post(url)
            .header(reqwest::header::CONTENT_TYPE, "application/json")
            .header("webhook-id", webhook_id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body.to_vec())
            .send()
            .await;
        let mut response = match sent {
            Ok(r) => r,
            Err(e) => return Outcome::Failed(describe(&e)),
        };
        let status = response.status();
        // Read a little of the answer (for the log), never more than the limit.
        let mut text = Vec::new();
        while text.len() < self.max_response {
            match response.chunk().await {
                Ok(Some(c)) => {
                    text.extend_from_slice(&c[..c.len().min(self.max_response - text.len())])
                }
                _ => break,
            }
        }
        if status.is_success() {
            Outcome::Accepted(status.as_u16())
        } else {
            let text = String::from_utf8_lossy(&text);
            let text: String = text.chars().take(200).collect();
            Outcome::Failed(format!(
                "the endpoint answered {status}{}",
                if text.trim().is_empty() {
                    String::new()
                } else {
                    format!(": {}", text.trim())
                }
            ))
        }
    }
}

/// reqwest's error with its causes, on one line.
fn describe(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// Resolves through `[dns] servers` and keeps only addresses a webhook may reach.
struct CheckedResolver {
    auth: Arc<MessageAuthenticator>,
    allowed: Arc<Vec<IpNet>>,
}

impl reqwest::dns::Resolve for CheckedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let auth = self.auth.clone();
        let allowed = self.allowed.clone();
        let host = format!("{}.", name.as_str().trim_end_matches('.'));
        Box::pin(async move {
            let ips = auth
                .resolver()
                .lookup_ip(host.as_str())
                .await
                .map_err(|e| Box::new(e) as Box<dyn std::error::Error + Send + Sync>)?;
            let all: Vec<std::net::IpAddr> = ips.iter().collect();
            let addrs: Vec<SocketAddr> = all
                .iter()
                .filter(|ip| crate::config::webhook_address_allowed(**ip, &allowed))
                .map(|ip| SocketAddr::new(*ip, 0))
                .collect();
            if addrs.is_empty() {
                return Err(format!(
                    "{host} resolves only to loopback, link-local, private or reserved \
                     addresses ({all:?}): refused (server-side request forgery) unless \
                     [webhooks] allow_networks includes them"
                )
                .into());
            }
            Ok(Box::new(addrs.into_iter()) as reqwest::dns::Addrs)
        })
    }
}
