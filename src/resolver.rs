//! One place that turns `[dns] servers` into a resolver, so that delivery, MTA-STS discovery,
//! `herald check` and the tests all ask the same name servers.

use hickory_resolver::config::{ConnectionConfig, NameServerConfig, ResolverConfig, ResolverOpts};
use mail_auth::MessageAuthenticator;

use crate::config::DnsConfig;

/// How many answers each of herald's resolvers keeps, each for its TTL. hickory's default
/// (8,192) is outgrown by one burst to 10,000 recipient domains — four names each (MX, the MX
/// host's address, `_mta-sts` TXT, TLSA) — which then evicts the answers it still needs and asks
/// again (issue 29: 2.6 DNS queries per message on the second burst instead of none). An entry
/// is a few hundred bytes, so a full cache stays in the tens of megabytes.
pub(crate) const CACHE_ENTRIES: u64 = 65_536;

/// Builds mail-auth's resolver on the configured servers, or the system's when none are set.
pub fn authenticator(dns: &DnsConfig) -> anyhow::Result<MessageAuthenticator> {
    if dns.servers.is_empty() {
        return MessageAuthenticator::new_system_conf()
            .map_err(|e| anyhow::anyhow!("cannot read the system resolver configuration: {e}"));
    }
    let mut opts = ResolverOpts::default();
    opts.attempts = 2;
    opts.timeout = std::time::Duration::from_secs(3);
    opts.cache_size = CACHE_ENTRIES;
    MessageAuthenticator::new(configured_servers(dns), opts)
        .map_err(|e| anyhow::anyhow!("cannot build a resolver for {:?}: {e}", dns.servers))
}

/// The `[dns] servers` as hickory's resolver configuration, UDP and TCP on each server's port
/// (for every resolver herald builds on them, the DNSSEC-aware one included).
pub fn configured_servers(dns: &DnsConfig) -> ResolverConfig {
    let servers = dns
        .servers
        .iter()
        .map(|addr| {
            let mut udp = ConnectionConfig::udp();
            udp.port = addr.port();
            let mut tcp = ConnectionConfig::tcp();
            tcp.port = addr.port();
            NameServerConfig::new(addr.ip(), true, vec![udp, tcp])
        })
        .collect();
    ResolverConfig::from_name_servers(servers)
}
