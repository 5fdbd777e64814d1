//! A client connection with its own read buffer: SMTP is line-oriented and pipelined, so the
//! session reads whole lines (bounded in length) and exact BDAT chunks from one buffer, and
//! queues replies that go out together before the next read (RFC 2920 batching, in order).

use std::io;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_rustls::server::TlsStream;

/// The transport under the session: plain TCP until STARTTLS, or TLS.
pub(crate) enum Stream {
    /// Plain TCP.
    Plain(TcpStream),
    /// TLS over TCP (implicit or after STARTTLS).
    Tls(Box<TlsStream<TcpStream>>),
}

/// What [`Conn::read_line`] found.
pub(crate) enum Line<'a> {
    /// A complete line, terminator (LF, usually CRLF) included.
    Full(&'a [u8]),
    /// A line longer than allowed; it has been read and thrown away up to its LF.
    /// `crlf` tells whether it ended with CRLF (false: a bare LF).
    TooLong {
        /// The line ended with CRLF.
        crlf: bool,
    },
}

/// A buffered client connection.
pub(crate) struct Conn {
    stream: Option<Stream>,
    rbuf: Vec<u8>,
    rpos: usize,
    wbuf: Vec<u8>,
}

const READ_CHUNK: usize = 16 * 1024;

impl Conn {
    /// Wraps an accepted stream.
    pub(crate) fn new(stream: Stream) -> Conn {
        Conn {
            stream: Some(stream),
            rbuf: Vec::with_capacity(READ_CHUNK),
            rpos: 0,
            wbuf: Vec::with_capacity(512),
        }
    }

    /// True when the client has sent bytes the session has not consumed yet.
    pub(crate) fn has_buffered_input(&self) -> bool {
        self.rpos < self.rbuf.len()
    }

    /// Queues bytes to send; they go out before the next read or on [`Conn::flush`].
    pub(crate) fn queue(&mut self, bytes: &[u8]) {
        self.wbuf.extend_from_slice(bytes);
    }

    /// Sends every queued byte.
    pub(crate) async fn flush(&mut self) -> io::Result<()> {
        if self.wbuf.is_empty() {
            return Ok(());
        }
        let out = std::mem::take(&mut self.wbuf);
        let res = match self.stream.as_mut() {
            Some(Stream::Plain(s)) => write_all(s, &out).await,
            Some(Stream::Tls(s)) => write_all(s.as_mut(), &out).await,
            None => Err(io::Error::from(io::ErrorKind::NotConnected)),
        };
        self.wbuf = out;
        self.wbuf.clear();
        res
    }

    /// Flushes replies, then reads more input until `deadline`; `Ok(0)` at end of stream.
    async fn fill(&mut self, deadline: Instant) -> io::Result<usize> {
        self.flush().await?;
        if self.rpos > 0 {
            self.rbuf.drain(..self.rpos);
            self.rpos = 0;
        }
        // Read into the buffer's spare room (no zeroing of a fresh chunk on every read).
        let spare = self.rbuf.capacity() - self.rbuf.len();
        self.rbuf.reserve(READ_CHUNK.saturating_sub(spare));
        let read = async {
            match self.stream.as_mut() {
                Some(Stream::Plain(s)) => s.read_buf(&mut self.rbuf).await,
                Some(Stream::Tls(s)) => s.read_buf(&mut self.rbuf).await,
                None => Err(io::Error::from(io::ErrorKind::NotConnected)),
            }
        };
        match tokio::time::timeout_at(deadline, read).await {
            Ok(res) => res,
            Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "client timed out")),
        }
    }

    /// Reads one line of at most `max` bytes (terminator included), which must be complete
    /// within `timeout` of the moment the replies queued so far were sent: a deadline for
    /// the whole line, not per read, so a client dripping a byte at a time cannot hold the
    /// connection (slowloris). Lines longer than `max` are consumed and reported as
    /// [`Line::TooLong`] without being buffered whole.
    pub(crate) async fn read_line(
        &mut self,
        max: usize,
        timeout: Duration,
    ) -> io::Result<Line<'_>> {
        // A pipelined command already here is answered together with the ones before it
        // (RFC 2920): replies go out when the session would otherwise wait for input.
        if memchr_lf(&self.rbuf[self.rpos..]).is_none() {
            self.flush().await?;
        }
        self.read_line_until(max, Instant::now() + timeout).await
    }

    /// Like [`Conn::read_line`], with a deadline shared by several lines (the whole of DATA).
    pub(crate) async fn read_line_until(
        &mut self,
        max: usize,
        deadline: Instant,
    ) -> io::Result<Line<'_>> {
        let mut too_long = false;
        let mut last_discarded = 0u8;
        loop {
            let avail = &self.rbuf[self.rpos..];
            if let Some(i) = memchr_lf(avail) {
                let start = self.rpos;
                self.rpos += i + 1;
                if too_long || i + 1 > max {
                    let before = if i > 0 { avail[i - 1] } else { last_discarded };
                    return Ok(Line::TooLong {
                        crlf: before == b'\r',
                    });
                }
                return Ok(Line::Full(&self.rbuf[start..self.rpos]));
            }
            if avail.len() >= max {
                // Throw the partial line away; keep reading until its end.
                too_long = true;
                last_discarded = avail.last().copied().unwrap_or(0);
                self.rpos = self.rbuf.len();
            }
            if self.fill(deadline).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection",
                ));
            }
        }
    }

    /// Reads exactly `n` bytes, handing them to `sink` piece by piece (never all buffered).
    /// The whole chunk must arrive within `timeout` of the moment replies so far were sent.
    pub(crate) async fn read_chunk(
        &mut self,
        mut n: usize,
        timeout: Duration,
        mut sink: impl FnMut(&[u8]),
    ) -> io::Result<()> {
        self.flush().await?;
        let deadline = Instant::now() + timeout;
        while n > 0 {
            if !self.has_buffered_input() && self.fill(deadline).await? == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "client closed the connection inside a BDAT chunk",
                ));
            }
            let avail = &self.rbuf[self.rpos..];
            let take = avail.len().min(n);
            sink(&avail[..take]);
            self.rpos += take;
            n -= take;
        }
        Ok(())
    }

    /// Performs the TLS handshake on a plain connection. Input the client pipelined after
    /// STARTTLS is discarded: it was sent in the clear and must not be acted on (CVE-2011-0411).
    pub(crate) async fn start_tls(
        &mut self,
        acceptor: &TlsAcceptor,
        timeout: Duration,
    ) -> io::Result<()> {
        self.flush().await?;
        self.rbuf.clear();
        self.rpos = 0;
        let Some(Stream::Plain(tcp)) = self.stream.take() else {
            return Err(io::Error::other("TLS is already active"));
        };
        let tls = tokio::time::timeout(timeout, acceptor.accept(tcp))
            .await
            .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "TLS handshake timed out"))??;
        self.stream = Some(Stream::Tls(Box::new(tls)));
        Ok(())
    }

    /// True once TLS is active.
    pub(crate) fn is_tls(&self) -> bool {
        matches!(self.stream, Some(Stream::Tls(_)))
    }

    /// TLS protocol version and cipher suite, e.g. `TLSv1.3 TLS13_AES_256_GCM_SHA384`.
    pub(crate) fn tls_info(&self) -> Option<String> {
        match &self.stream {
            Some(Stream::Tls(s)) => {
                let (_, conn) = s.get_ref();
                let version = match conn.protocol_version() {
                    Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3".to_string(),
                    Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2".to_string(),
                    Some(v) => format!("{v:?}"),
                    None => "TLS".to_string(),
                };
                let cipher = conn
                    .negotiated_cipher_suite()
                    .map(|c| format!("{:?}", c.suite()))
                    .unwrap_or_default();
                Some(format!("{version} {cipher}").trim().to_string())
            }
            _ => None,
        }
    }

    /// Flushes and closes the connection (TLS close_notify included).
    pub(crate) async fn close(&mut self) {
        let _ = self.flush().await;
        match self.stream.as_mut() {
            Some(Stream::Plain(s)) => {
                let _ = s.shutdown().await;
            }
            Some(Stream::Tls(s)) => {
                let _ = tokio::time::timeout(Duration::from_secs(2), s.shutdown()).await;
            }
            None => {}
        }
        self.stream = None;
    }
}

async fn write_all<W: AsyncWriteExt + Unpin>(w: &mut W, bytes: &[u8]) -> io::Result<()> {
    let res = tokio::time::timeout(Duration::from_secs(60), async {
        w.write_all(bytes).await?;
        w.flush().await
    })
    .await;
    res.map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "client does not read replies"))?
}

fn memchr_lf(bytes: &[u8]) -> Option<usize> {
    bytes.iter().position(|&b| b == b'\n')
}
