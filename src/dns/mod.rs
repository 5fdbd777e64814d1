//! DNS: the records an operator must publish ([`records`], printed by [`zone`] or as JSON), the
//! optional authoritative listener for the SPF include ([`authority`]), and `herald check
//! DOMAIN` ([`check`]); [`host`] finds this machine's public addresses when none are configured.

pub(crate) mod authority;
pub(crate) mod check;
pub(crate) mod host;
pub(crate) mod records;
pub(crate) mod return_path;
pub(crate) mod zone;
