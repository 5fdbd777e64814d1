//! MTA-STS (RFC 8461): TXT discovery, policy fetch over HTTPS, parsing, on-disk cache and MX
//! matching. Outbound asks this module which policy applies to a recipient domain.
