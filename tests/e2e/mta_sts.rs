//! End-to-end tests: mta_sts.
