//! DNS: the records an operator must publish, the optional authoritative listener for the SPF
//! include, and `herald check DOMAIN`.

pub mod authority;
pub mod check;
pub mod records;
