//! Deserializers for the config's list values (durations, addresses and networks, name
//! servers), each refusing a bad entry with an example of a right one.

use std::net::SocketAddr;
use std::time::Duration;

use ipnet::IpNet;
use serde::Deserialize;

/// Reads a list of human durations (`["1m", "5m"]`) or one comma-separated string (from the
/// environment).
pub(super) fn duration_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<Duration>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        List(Vec<String>),
        One(String),
    }
    let items = match Raw::deserialize(d)? {
        Raw::List(v) => v,
        Raw::One(s) => s.split(',').map(|p| p.trim().to_string()).collect(),
    };
    items
        .iter()
        .filter(|s| !s.is_empty())
        .map(|s| {
            humantime::parse_duration(s).map_err(|e| {
                serde::de::Error::custom(format!(
                    "{s:?} is not a duration ({e}); e.g. [\"1m\", \"5m\", \"1h\"]"
                ))
            })
        })
        .collect()
}

/// Reads addresses and networks: `203.0.113.10` (a single host) or `203.0.113.0/24`.
pub(super) fn ip_or_net_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<IpNet>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| {
            let s = s.trim();
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not an IP address or network; e.g. \"203.0.113.10\" or \
                         \"203.0.113.0/24\""
                    ))
                })
        })
        .collect()
}

/// Reads name servers: `192.0.2.53`, `192.0.2.53:5353`, `2001:db8::53` or `[2001:db8::53]:53`
/// (port 53 when left out).
pub(super) fn name_server_list<'de, D: serde::Deserializer<'de>>(
    d: D,
) -> Result<Vec<SocketAddr>, D::Error> {
    Vec::<String>::deserialize(d)?
        .iter()
        .map(|s| s.trim())
        .filter(|s| !s.is_empty())
        .map(|s| {
            s.parse::<SocketAddr>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(|ip| SocketAddr::new(ip, 53)))
                .map_err(|_| {
                    serde::de::Error::custom(format!(
                        "{s:?} is not a name server address (e.g. \"192.0.2.53\" or \"192.0.2.53:53\")"
                    ))
                })
        })
        .collect()
}
