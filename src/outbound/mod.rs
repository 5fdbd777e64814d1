//! Outbound: MX resolution, the route plan (which hosts, with which TLS: opportunistic /
//! MTA-STS / DANE / required, and why), connecting, and the SMTP transaction with the
//! recipient's MX. Delivery is resolve → [`plan`] → try hosts ([`deliver`]); each attempt ends
//! in a typed [`outcome::RecipientResult`] per recipient; how TLS went is emitted as a
//! [`crate::tls_policy::TlsEvent`].

mod attempt;
pub(crate) mod capture;
pub(crate) mod client;
pub(crate) mod dane;
pub(crate) mod deliver;
mod dns_cache;
pub(crate) mod job;
pub(crate) mod outcome;
pub(crate) mod plan;
pub(crate) mod pool;
pub(crate) mod requiretls;
pub(crate) mod resolve;
pub(crate) mod stream;
pub(crate) mod tls;
mod transaction;
