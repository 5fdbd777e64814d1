//! End-to-end tests: several herald nodes on one real PostgreSQL (`[cluster]`), started from
//! Debian's packages by `support::postgres`.

pub mod common;
mod limits;
mod queue;
mod reports;
mod schema;
mod spool;
mod status;
pub mod terminated;
mod tlsrpt;
