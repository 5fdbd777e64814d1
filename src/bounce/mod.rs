//! Bounces and complaints (issue 24): every remote refusal gets a class ([`rules`]); herald's
//! own return path signs a token into each message's MAIL FROM ([`verp`]); DSNs and ARF
//! complaints mailed back to it are parsed ([`dsn`], [`arf`]).

pub mod metrics;
pub mod rules;
pub mod verp;

pub use rules::classify;
