//! Transport security of a route as plain values, shared by the layers above: what a recipient
//! domain (or herald's own configuration) demands of TLS ([`TlsDirective`]: opportunistic,
//! `[delivery] require_tls`, an MTA-STS [`Policy`], DANE's [`DaneTarget`]), and how TLS went
//! with an MX ([`TlsOutcome`], emitted as a [`TlsEvent`] into a [`TlsSink`]).
//!
//! Nothing here looks anything up: `mta_sts` finds and caches policies, `outbound` finds DANE
//! records, plans the route and connects, `report` counts the events. Keeping the values at the
//! bottom lets each of them speak the same words without importing one another.

mod dane;
mod directive;
mod outcome;
mod sts;

pub use dane::DaneTarget;
pub use directive::TlsDirective;
pub use outcome::{NoTlsReports, TlsEvent, TlsOutcome, TlsSink};
pub use sts::{Mode, Policy};
