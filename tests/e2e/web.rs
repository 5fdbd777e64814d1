//! End-to-end tests: herald's public HTTPS face. A real ACME server (Pebble) issues herald's
//! certificate by TLS-ALPN-01 on the listener itself; curl and herald's own MTA-STS client
//! fetch the hosted policy with it; renewal swaps it without a restart; one-click unsubscribe
//! headers are signed (dkimpy checks `h=`), the POST is recorded and refuses the next mail.

mod acme;
mod cluster;
mod rig;
mod unsubscribe;
