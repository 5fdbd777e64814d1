//! End-to-end tests: herald driven the way the world drives it, over real sockets on loopback.
//! One test binary (one link) with a module per area of the mail's path.

#[path = "../support/mod.rs"]
mod support;

mod bounce;
mod cluster;
mod dane;
mod delivery;
mod dmarc;
mod dns_check;
mod hardening;
mod history;
mod mta_sts;
mod power;
mod production;
mod requiretls;
mod shaping;
mod signing;
mod submission;
mod support_selftest;
mod web;
