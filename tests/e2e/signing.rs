//! End-to-end tests: signing.
