//! Outbound: MX resolution, the route plan (which hosts, with which TLS: opportunistic /
//! MTA-STS / DANE / required, and why), connecting, and the SMTP transaction with the
//! recipient's MX. Delivery is resolve → [`plan`] → try hosts ([`deliver`]); each attempt ends
//! in a typed [`outcome::RecipientResult`] per recipient; how TLS went is emitted as a
//! [`crate::tls_policy::TlsEvent`].

mod attempt;
pub mod capture;
pub mod client;
pub mod dane;
pub mod deliver;
pub mod job;
pub mod outcome;
pub mod plan;
pub mod pool;
pub mod requiretls;
pub mod resolve;
pub mod stream;
pub mod tls;
mod transaction;
