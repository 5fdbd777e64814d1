//! End-to-end tests: REQUIRETLS and `TLS-Required: No` (RFC 8689). herald runs as a child
//! process; apps submit over SMTP with the raw client; recipients' MX hosts are sinks with
//! certificates from a test CA, authenticated by an MTA-STS policy served over HTTPS; bounces
//! land at the sender domain's MX.

mod delivery;
mod rig;
mod submission;
