//! End-to-end tests: MTA-STS enforcement (RFC 8461) and TLS-RPT (RFC 8460) against the fake
//! internet: loopback DNS, HTTPS policy hosts signed by a test CA, receiving MX hosts with
//! certificate variants. Delivery runs in-process with the same wiring as `herald serve`; the
//! `herald sts` and `herald report` commands run as child processes.

mod enforce;
mod policy;
mod report;
mod serve;
pub(crate) mod world;
