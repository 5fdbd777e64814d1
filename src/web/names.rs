//! The names the public listener serves, and which of them point at herald: a certificate is
//! ordered only for names whose A/AAAA records name one of herald's public addresses, since
//! the CA validates by connecting to those addresses (an order for any other name fails, and
//! repeated failures count against the CA's rate limits).

use std::net::IpAddr;

use crate::config::Config;

/// The host name in unsubscribe links: `[web] host`, else `[server] hostname`.
pub(crate) fn web_host(cfg: &Config) -> String {
    cfg.web
        .host
        .clone()
        .unwrap_or_else(|| cfg.server.hostname.clone())
        .trim_end_matches('.')
        .to_ascii_lowercase()
}

/// Every name on the certificate: the web host, then `mta-sts.<domain>` per hosted policy.
pub(crate) fn wanted(cfg: &Config) -> Vec<String> {
    let mut names = vec![web_host(cfg)];
    for domain in cfg.web.mta_sts.keys() {
        let name = format!(
            "mta-sts.{}",
            domain.trim_end_matches('.').to_ascii_lowercase()
        );
        if !names.contains(&name) {
            names.push(name);
        }
    }
    names
}

/// The addresses the world reaches the listener at: `[web] public_ips`, else the listen
/// address when it is a specific one, else this host's global addresses.
pub(crate) fn public_ips(cfg: &Config) -> Vec<IpAddr> {
    if !cfg.web.public_ips.is_empty() {
        return cfg.web.public_ips.clone();
    }
    match cfg.web.listen {
        Some(addr) if !addr.ip().is_unspecified() => vec![addr.ip()],
        _ => crate::dns::host::global_addresses(),
    }
}

/// Whether `name` points at herald: `Ok(())`, or `Err(why not)` in words for the log.
pub(crate) async fn points_at_herald(
    resolver: &mail_auth::MessageAuthenticator,
    name: &str,
    ours: &[IpAddr],
) -> Result<(), NotPointingHere> {
    let found = crate::outbound::resolve::addresses(resolver, name)
        .await
        .map_err(|e| NotPointingHere::Lookup {
            name: name.to_string(),
            why: e.to_string(),
        })?;
    if found.iter().any(|ip| ours.contains(ip)) {
        return Ok(());
    }
    Err(NotPointingHere::Elsewhere {
        name: name.to_string(),
        found: list(&found),
        ours: list(ours),
    })
}

/// Why a name gets no certificate order: its DNS does not lead to herald.
#[derive(Debug, thiserror::Error)]
pub(crate) enum NotPointingHere {
    /// The look-up failed.
    #[error("{name}: {why}")]
    Lookup {
        /// The name.
        name: String,
        /// The resolver's answer.
        why: String,
    },
    /// It resolves to other addresses.
    #[error(
        "{name} resolves to {found} but herald's public addresses are {ours} (set [web] \
         public_ips when herald is behind NAT); publish an A/AAAA record (or a CNAME to \
         herald's host name) for {name}"
    )]
    Elsewhere {
        /// The name.
        name: String,
        /// Where it points.
        found: String,
        /// herald's addresses.
        ours: String,
    },
}

/// The names of `wanted` that point at herald; each other one is logged with the reason.
pub(crate) async fn reachable(cfg: &Config, wanted: &[String]) -> Vec<String> {
    let resolver = match crate::resolver::authenticator(&cfg.dns) {
        Ok(r) => r,
        Err(e) => {
            tracing::warn!("web: cannot build a resolver to check the names served: {e:#}");
            return Vec::new();
        }
    };
    let ours = public_ips(cfg);
    let mut out = Vec::new();
    for name in wanted {
        match points_at_herald(&resolver, name, &ours).await {
            Ok(()) => out.push(name.clone()),
            Err(why) => tracing::warn!(name = %name,
                "web: no certificate ordered for this name: {why}"),
        }
    }
    out
}

fn list(ips: &[IpAddr]) -> String {
    if ips.is_empty() {
        return "nothing".into();
    }
    ips.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}
