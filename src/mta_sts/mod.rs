//! MTA-STS (RFC 8461): TXT discovery, policy fetch over HTTPS, parsing, on-disk cache and MX
//! matching. Outbound asks [`StsResolver::directive_for`] what a recipient domain demands.
//!
//! Interface used by outbound (keep it stable): [`StsResolver::new`],
//! [`StsResolver::directive_for`], which answers with a [`crate::tls_policy::TlsDirective`]. The
//! policy itself ([`Policy`], [`Mode`]) is a value of [`crate::tls_policy`], so that delivery
//! and the reports read it without depending on how it was found. A policy that could not be
//! loaded is emitted as a [`crate::tls_policy::TlsEvent`] into a
//! [`crate::tls_policy::TlsSink`] (the TLS-RPT reporter implements it).
//!
//! The path of one decision: [`discover`] the `_mta-sts` TXT id, compare it with the [`cache`],
//! [`fetch`] and [`policy::parse`] the policy file when needed, then turn the policy (or the
//! `[delivery] require_tls` settings) into a directive.

pub mod cache;
pub mod discover;
pub mod fetch;
pub mod policy;
mod resolve;

pub use crate::tls_policy::{Mode, Policy};
pub use resolve::{Resolution, Source, StsResolver};
