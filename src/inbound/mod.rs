//! Inbound: the submission listeners, the SMTP session, authentication and sender policy.
