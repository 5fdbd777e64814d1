//! End-to-end tests: the message history and the webhooks (issue 25). Apps submit over SMTP,
//! herald delivers to sinks on the fake internet, and the events are looked for where users
//! look: `herald log search`, a test HTTPS endpoint that verifies every signature itself, and
//! the `/messages/page` in headless Chromium.

mod browser;
mod cluster;
mod lifecycle;
mod rig;
mod webhooks;
