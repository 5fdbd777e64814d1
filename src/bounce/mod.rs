//! Bounces and complaints (issue 24): every remote refusal gets a class ([`rules`]); herald's
//! own return path signs a token into each message's MAIL FROM ([`verp`]); DSNs and ARF
//! complaints mailed back to it are parsed ([`dsn`], [`arf`]) and taken in by the running
//! subsystem ([`service::AfterDelivery`]), which also keeps the suppression list
//! ([`crate::suppress`]) and the per-app guard ([`crate::guard`]) fed from the event hub.

pub(crate) mod arf;
pub(crate) mod dsn;
pub(crate) mod rules;
pub(crate) mod service;
pub(crate) mod verp;

pub(crate) use rules::classify;
pub(crate) use service::AfterDelivery;
