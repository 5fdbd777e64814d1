//! Bounces and complaints (issue 24): every remote refusal gets a class ([`rules`]); herald's
//! own return path signs a token into each message's MAIL FROM ([`verp`]); DSNs and ARF
//! complaints mailed back to it are parsed ([`dsn`], [`arf`]) and taken in by the running
//! subsystem ([`service::AfterDelivery`]), which also keeps the suppression list
//! ([`crate::suppress`]) and the per-app guard ([`crate::guard`]) fed from the event hub.

pub mod arf;
pub mod dsn;
pub mod rules;
pub mod service;
pub mod verp;

pub use rules::classify;
pub use service::AfterDelivery;
