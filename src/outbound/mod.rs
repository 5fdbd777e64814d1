//! Outbound: MX resolution, connecting, TLS policy (opportunistic / MTA-STS / required), the SMTP
//! transaction with the recipient's MX, and DSN bounces.
