//! End-to-end tests: signing. Every signature herald makes is checked by two verifiers that
//! share no code: mail-auth (over real DNS packets from the test DNS server) and dkimpy (the
//! Python implementation, fed the published TXT records directly).

mod cli;
mod helpers;
mod key_files;
mod messages;
mod smtp;
