//! End-to-end tests: submission.
