//! End-to-end tests: DANE for SMTP (RFC 7672) against the fake internet with a DNSSEC-signed
//! test namespace (a root key made at test time, handed to herald as `[dane] trust_anchor`),
//! or a test DNS server acting as a validating resolver for the trust-AD mode. Delivery runs
//! in-process with the same wiring as `herald serve`; `herald tls show` runs as a child process.

mod deliver;
mod failures;
mod requiretls;
mod show;
pub(crate) mod world;
