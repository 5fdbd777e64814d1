//! herald: an outbound SMTP relay. Apps submit over authenticated SMTP; herald checks their
//! senders, DKIM-signs with aligned keys, spools durably, and delivers to each recipient's MX
//! with MTA-STS enforcement and TLS-RPT reporting.
//!
//! Modules follow the mail's path: [`inbound`] → [`signing`] → [`spool`] → [`queue`] →
//! [`outbound`] (with [`mta_sts`] and [`report`]); [`dns`] and [`admin`] serve the operator.
//! What a route demands of TLS, and how TLS went, are plain values of [`tls_policy`].
//!
//! Layers, bottom up (an import only ever points down): [`config`], [`reply`], [`providers`], [`clock`], [`events`],
//! [`fsutil`], [`headers`], [`html`], [`trust`], [`resolver`], [`tls_policy`] → [`cluster`] → [`spool`], [`shaping`] → [`suppress`], [`guard`] → [`bounce`] → [`signing`], [`mta_sts`], [`dns`] →
//! [`history`] → [`outbound`] → [`own_mail`] → [`queue`] → [`report`], [`webhook`] → [`smtp_server`] → [`feedback`] → [`web`] → [`inbound`] →
//! [`admin`] → [`node`] → [`commands`].

#![warn(missing_docs, unreachable_pub)]

pub(crate) mod admin;
pub(crate) mod bounce;
pub mod clock;
pub(crate) mod cluster;
pub mod commands;
pub mod config;
pub(crate) mod dns;
pub mod events;
pub(crate) mod feedback;
pub(crate) mod fsutil;
pub(crate) mod guard;
pub(crate) mod headers;
pub mod history;
pub(crate) mod html;
pub(crate) mod inbound;
pub(crate) mod metrics;
pub mod mta_sts;
pub mod node;
pub(crate) mod outbound;
pub(crate) mod own_mail;
pub(crate) mod providers;
pub mod queue;
pub(crate) mod ratelimit;
pub(crate) mod reload;
pub(crate) mod reply;
pub mod report;
pub mod resolver;
pub(crate) mod service;
pub(crate) mod shaping;
pub mod signing;
pub(crate) mod smtp_server;
pub mod spool;
pub(crate) mod store;
pub mod suppress;
pub mod tls_policy;
pub(crate) mod trust;
pub(crate) mod web;
pub(crate) mod webhook;
