//! The message data of an SMTP transaction, framed the same way on every listener: DATA
//! (dot-unstuffing, only CRLF `.` CRLF ends it) and BDAT chunks, checked as the bytes arrive
//! (size, line length, line endings) and streamed to a [`DataSink`], never collected first.
//!
//! A bare CR or bare LF anywhere in the data is refused (`550 5.6.0`) rather than normalised,
//! and `\n.\n`, `\r\n.\n`, `\n.\r\n` or `\r.\r\n` never end the data: they make it refused.
//! Such a message was produced by a broken or hostile client, and relaying it — even
//! "repaired" — is what lets a sender smuggle a second message past the next hop
//! (SMTP smuggling, CVE-2023-51764).

use std::io;

use tokio::time::Instant;

use super::conn::{Conn, Line};
use crate::reply::Reply;

/// Where the bytes of a message go while they stream in.
pub(crate) trait DataSink {
    /// Takes the next bytes of the message (dot-unstuffed, line endings as sent).
    fn write(&mut self, bytes: &[u8]) -> io::Result<()>;
}

impl DataSink for Vec<u8> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.extend_from_slice(bytes);
        Ok(())
    }
}

impl DataSink for crate::spool::StagedMessage {
    fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        crate::spool::StagedMessage::write(self, bytes)
    }
}

/// The limits data is read under.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DataLimits {
    /// Largest message, in bytes (after dot-unstuffing).
    pub max_size: usize,
    /// Longest line, terminator included.
    pub max_line: usize,
}

/// Why data was refused while it streamed in. Once refused, nothing more goes to the sink;
/// the data is still read to its end so the session stays in step.
#[derive(Debug)]
pub(crate) enum Fault {
    /// Larger than [`DataLimits::max_size`].
    TooBig,
    /// A bare CR or bare LF.
    Bare,
    /// A line longer than [`DataLimits::max_line`].
    LongLine,
    /// The sink failed (e.g. the spool's disk is full).
    Sink(io::Error),
}

impl Fault {
    /// The reply to a message refused for a framing fault (`None` for [`Fault::Sink`]: the
    /// listener says what its storage failure means).
    pub(crate) fn reply(&self, limits: &DataLimits) -> Option<Reply> {
        Some(match self {
            Fault::TooBig => Reply::new(
                552,
                "5.3.4",
                format!("message too big: the limit is {} bytes", limits.max_size),
            ),
            Fault::Bare => Reply::new(
                550,
                "5.6.0",
                "message contains a bare CR or bare LF: every line must end with CRLF \
                 (refused to prevent SMTP smuggling)",
            ),
            Fault::LongLine => Reply::new(
                550,
                "5.6.0",
                format!(
                    "message has a line longer than {} bytes; wrap or encode it",
                    limits.max_line
                ),
            ),
            Fault::Sink(_) => return None,
        })
    }
}

/// Reads DATA after the `354` up to CRLF `.` CRLF, all of it within `deadline`, into `sink`.
/// `Ok(Ok(size))`: the message is complete in the sink; `Ok(Err(fault))`: refused (the data
/// was read to its end); `Err`: the connection failed or timed out (end the session).
pub(crate) async fn read_data<S: DataSink + ?Sized>(
    conn: &mut Conn,
    limits: DataLimits,
    deadline: Instant,
    sink: &mut S,
) -> io::Result<Result<usize, Fault>> {
    let mut fault = None;
    let mut size = 0usize;
    let mut prev_crlf = true;
    loop {
        let line = match conn.read_line_until(limits.max_line, deadline).await? {
            Line::Full(l) => l,
            Line::TooLong { crlf } => {
                fault.get_or_insert(Fault::LongLine);
                prev_crlf = crlf;
                continue;
            }
        };
        if prev_crlf && line == b".\r\n" {
            break;
        }
        let crlf = line.ends_with(b"\r\n");
        let text = &line[..line.len() - if crlf { 2 } else { 1 }];
        if !crlf || text.contains(&b'\r') {
            fault.get_or_insert(Fault::Bare);
        }
        let content = match line.split_first() {
            Some((b'.', rest)) if prev_crlf => rest,
            _ => line,
        };
        size += content.len();
        if size > limits.max_size {
            fault = Some(Fault::TooBig);
        }
        if fault.is_none()
            && let Err(e) = sink.write(content)
        {
            fault = Some(Fault::Sink(e));
        }
        prev_crlf = crlf;
    }
    Ok(match fault {
        Some(f) => Err(f),
        None => Ok(size),
    })
}

/// A message arriving in BDAT chunks: each chunk's bytes are checked and passed on as they
/// arrive ([`Chunked::feed`]); [`Chunked::finish`] at `BDAT … LAST` gives the verdict.
#[derive(Debug, Default)]
pub(crate) struct Chunked {
    /// Bytes received so far.
    pub size: usize,
    check: LineCheck,
    fault: Option<Fault>,
}

impl Chunked {
    /// Checks `bytes` and hands them to `sink` (nothing more once the message is refused).
    pub(crate) fn feed(
        &mut self,
        bytes: &[u8],
        limits: &DataLimits,
        sink: Option<&mut dyn DataSink>,
    ) {
        self.check.feed(bytes);
        self.size += bytes.len();
        if self.size > limits.max_size {
            self.fault = Some(Fault::TooBig);
        }
        if self.fault.is_none()
            && let Some(sink) = sink
            && let Err(e) = sink.write(bytes)
        {
            self.fault = Some(Fault::Sink(e));
        }
    }

    /// A fault found so far that refuses the message at once, at the end of this chunk
    /// (too big, a line too long, the sink failed); a bare line ending waits for LAST.
    pub(crate) fn refused(&mut self, limits: &DataLimits) -> Option<Fault> {
        if self.size > limits.max_size {
            return Some(Fault::TooBig);
        }
        if self.check.longest > limits.max_line {
            return Some(Fault::LongLine);
        }
        self.fault.take()
    }

    /// The data is complete (`LAST`): `Err` when it holds a bare CR or bare LF.
    pub(crate) fn finish(mut self) -> Result<usize, Fault> {
        self.check.finish();
        if self.check.bare {
            return Err(Fault::Bare);
        }
        Ok(self.size)
    }
}

/// Tracks line endings across arbitrary slices (BDAT chunks): every CR must be followed by
/// LF and every LF preceded by CR; also measures line lengths.
#[derive(Debug, Default)]
pub(crate) struct LineCheck {
    prev_cr: bool,
    line_len: usize,
    /// A bare CR or bare LF was seen.
    pub bare: bool,
    /// The longest line seen, terminator included.
    pub longest: usize,
}

impl LineCheck {
    /// Feeds the next bytes.
    pub(crate) fn feed(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.line_len += 1;
            match b {
                b'\n' => {
                    if !self.prev_cr {
                        self.bare = true;
                    }
                    self.longest = self.longest.max(self.line_len);
                    self.line_len = 0;
                }
                _ if self.prev_cr => self.bare = true,
                _ => {}
            }
            self.prev_cr = b == b'\r';
        }
        self.longest = self.longest.max(self.line_len);
    }

    /// Ends the data: a trailing CR is bare too.
    pub(crate) fn finish(&mut self) {
        if self.prev_cr {
            self.bare = true;
        }
    }
}

#[cfg(test)]
mod tests;
