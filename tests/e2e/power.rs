//! End-to-end tests of what survives a power cut, a failing disk and a misbehaving resolver
//! (issue 28). The spool lives on the lazy file system of `support::lazyfs`, which keeps every
//! write in memory until it is made durable and drops the rest on command.

mod cut;
mod disk;
mod lazyfs;
mod resolver;
mod rig;
