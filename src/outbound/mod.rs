//! Outbound: MX resolution, connecting, TLS policy (opportunistic / MTA-STS / DANE / required) and
//! the SMTP transaction with the recipient's MX. Each attempt ends in a typed
//! [`outcome::RecipientResult`] per recipient; how TLS went is emitted as an
//! [`crate::mta_sts::TlsEvent`].

pub mod capture;
pub mod client;
pub mod dane;
pub mod deliver;
pub mod dnssec;
pub mod outcome;
pub mod pool;
pub mod requiretls;
pub mod resolve;
pub mod stream;
pub mod tls;
mod transaction;
