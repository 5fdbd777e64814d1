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

pub mod admin;
pub mod bounce;
pub mod clock;
pub mod cluster;
pub mod commands;
pub mod config;
pub mod dns;
pub mod events;
pub mod feedback;
pub mod fsutil;
pub mod guard;
pub mod headers;
pub mod history;
pub mod html;
pub mod inbound;
pub mod metrics;
pub mod mta_sts;
pub mod node;
pub mod outbound;
pub mod own_mail;
pub mod providers;
pub mod queue;
pub mod ratelimit;
pub mod reload;
pub mod reply;
pub mod report;
pub mod resolver;
pub mod service;
pub mod shaping;
pub mod signing;
pub mod smtp_server;
pub mod spool;
pub mod store;
pub mod suppress;
pub mod tls_policy;
pub mod trust;
pub mod web;
pub mod webhook;
