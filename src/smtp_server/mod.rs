//! The SMTP server core every listener runs on (submission, plain, feedback, and the next
//! ones: bounces, unsubscribe mailto), so that a framing or admission rule is written and
//! tested once:
//! - [`accept`]: the accept loop, one task per connection, and shutdown ([`Sessions`]);
//! - [`admission`]: connection slots, in total and per client address, and the `421`s;
//! - [`conn`]: the buffered connection: bounded lines with a whole-line deadline, replies
//!   batched for pipelining, exact BDAT chunks, STARTTLS;
//! - [`data`]: DATA and BDAT framing (dot-unstuffing, CRLF rules, size and line limits),
//!   streaming to a [`data::DataSink`].
//!
//! A listener keeps only its own command set and what it does with a complete message.
//! Layer: above [`crate::spool`] (a staged message is a sink), below [`crate::feedback`] and
//! [`crate::inbound`].

pub(crate) mod accept;
pub(crate) mod admission;
pub(crate) mod conn;
pub(crate) mod data;

pub(crate) use accept::Sessions;
pub(crate) use admission::{Admission, Limit, Slot};
pub(crate) use conn::{Conn, Line, Stream};
pub(crate) use data::Chunked;
