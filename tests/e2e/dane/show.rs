//! `herald tls show`.
