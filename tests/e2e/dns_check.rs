//! End-to-end tests: `herald dns`, `herald check` and the authoritative listener.
