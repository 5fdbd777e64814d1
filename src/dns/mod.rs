//! DNS: the records an operator must publish ([`records`], printed by [`zone`] or as JSON), the
//! optional authoritative listener for the SPF include ([`authority`]), and `herald check
//! DOMAIN` ([`check`]); [`host`] finds this machine's public addresses when none are configured.

pub mod authority;
pub mod check;
pub mod host;
pub mod records;
pub mod return_path;
pub mod zone;
