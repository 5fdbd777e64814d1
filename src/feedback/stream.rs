//! DMARC documents read as a stream of records: the document (plain, gzip or a zip entry) is
//! decompressed as it is read and cut into `<record>` elements, each parsed alone with
//! mail-auth; the rest (metadata, policy) is the report's head. Parsing reads a document once
//! to check it and count its records (`super::parse`); storing reads it again from the bytes of
//! the mail ([`Document`], a [`RecordSource`]), so neither holds more than one record at a time.

use std::io::Read;
use std::ops::Range;
use std::sync::Arc;

use flate2::read::{DeflateDecoder, MultiGzDecoder};
use mail_auth::report::{Record, Report};

use crate::store::RecordSource;

/// Largest `<record>` element: far above a real one (a source's results, a few hundred bytes).
pub(crate) const MAX_RECORD_BYTES: usize = 64 * 1024;
/// Largest head (everything outside the records: metadata, policy, extensions).
pub(crate) const MAX_HEAD_BYTES: usize = 1024 * 1024;
/// Bytes read from the decompressor at a time.
const READ_CHUNK: usize = 64 * 1024;

/// How a document's bytes are encoded in the mail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Encoding {
    /// As is.
    Plain,
    /// gzip (one or more members).
    Gzip,
    /// Raw deflate (a zip entry).
    Deflate,
}

/// A DMARC document in the mail's bytes, read again, decompressing, whenever its records are
/// wanted.
#[derive(Debug)]
pub(crate) struct Document {
    /// The attachment (or file) the document is in.
    pub(crate) bytes: Arc<[u8]>,
    /// Where in `bytes` (a zip entry's data; all of a plain or gzip part).
    pub(crate) range: Range<usize>,
    /// How those bytes are encoded.
    pub(crate) encoding: Encoding,
    /// Decompressed bytes read at most (`feedback.max_report_size`).
    pub(crate) max: usize,
}

impl Document {
    /// The decompressed document, bounded to `max` + 1 bytes.
    pub(crate) fn open(&self) -> Box<dyn Read + Send + '_> {
        let raw = self.bytes.get(self.range.clone()).unwrap_or_default();
        let limit = self.max as u64 + 1;
        match self.encoding {
            Encoding::Plain => Box::new(raw.take(limit)),
            Encoding::Gzip => Box::new(MultiGzDecoder::new(raw).take(limit)),
            Encoding::Deflate => Box::new(DeflateDecoder::new(raw).take(limit)),
        }
    }
}

impl RecordSource for Document {
    fn records(&self) -> Box<dyn Iterator<Item = Record> + Send + '_> {
        let mut split = Splitter::new(self.open(), self.max);
        // The document was read whole and checked once already, when the mail was parsed: a
        // failure now (it cannot happen to the same bytes) ends the records, and says so.
        Box::new(std::iter::from_fn(move || {
            let failed = |e: String| {
                tracing::warn!(error = %e, "feedback: a stored DMARC report's records ended early");
            };
            let bytes = match split.next_record(None) {
                Ok(next) => next?,
                Err(e) => {
                    failed(e.to_string());
                    return None;
                }
            };
            parse_record(&bytes).map_err(|e| failed(e.to_string())).ok()
        }))
    }
}

/// Why a document could not be read as a stream of records.
#[derive(Debug, thiserror::Error)]
pub(crate) enum StreamError {
    /// The decompressor failed.
    #[error("cannot decompress: {0}")]
    Corrupt(std::io::Error),
    /// More than `feedback.max_report_size` decompressed bytes.
    #[error(
        "decompresses to more than {0} bytes (feedback.max_report_size); refused as a possible \
         compression bomb"
    )]
    TooLarge(usize),
    /// A record beyond [`MAX_RECORD_BYTES`].
    #[error("a <record> larger than {MAX_RECORD_BYTES} bytes; refused unread")]
    RecordTooLarge,
    /// A head beyond [`MAX_HEAD_BYTES`].
    #[error("more than {MAX_HEAD_BYTES} bytes outside the records; refused unread")]
    HeadTooLarge,
    /// A `<record>` left open at the end of the document.
    #[error("not a DMARC aggregate report: a <record> is not closed")]
    Unclosed,
}

/// Cuts a document into its `<record>` elements, reading as it goes.
pub(crate) struct Splitter<R> {
    reader: R,
    buf: Vec<u8>,
    /// What of `buf` is handled already.
    start: usize,
    eof: bool,
    read: usize,
    max: usize,
}

impl<R: Read> Splitter<R> {
    /// A splitter over `reader`, refusing more than `max` bytes.
    pub(crate) fn new(reader: R, max: usize) -> Splitter<R> {
        Splitter {
            reader,
            buf: Vec::new(),
            start: 0,
            eof: false,
            read: 0,
            max,
        }
    }

    /// Decompressed bytes read so far.
    pub(crate) fn bytes_read(&self) -> usize {
        self.read
    }

    /// Reads more; false at the end.
    fn fill(&mut self) -> Result<bool, StreamError> {
        if self.eof {
            return Ok(false);
        }
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let at = self.buf.len();
        self.buf.resize(at + READ_CHUNK, 0);
        let n = loop {
            match self.reader.read(&mut self.buf[at..]) {
                Ok(n) => break n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    self.buf.truncate(at);
                    return Err(StreamError::Corrupt(e));
                }
            }
        };
        self.buf.truncate(at + n);
        self.read += n;
        if self.read > self.max {
            return Err(StreamError::TooLarge(self.max));
        }
        if n == 0 {
            self.eof = true;
        }
        Ok(n > 0)
    }

    /// The next `<record>…</record>` element; what comes before it goes to `head` (when
    /// given). `None` at the end of the document.
    pub(crate) fn next_record(
        &mut self,
        mut head: Option<&mut Vec<u8>>,
    ) -> Result<Option<Vec<u8>>, StreamError> {
        loop {
            match find_open(&self.buf[self.start..], self.eof) {
                Found::At(i) => {
                    let open = self.start + i;
                    if let Some(h) = head.as_deref_mut() {
                        keep(h, &self.buf[self.start..open])?;
                    }
                    self.start = open;
                    return self.take_record().map(Some);
                }
                Found::Before(i) => {
                    // Nothing before `i` starts a record: it is head.
                    if let Some(h) = head.as_deref_mut() {
                        keep(h, &self.buf[self.start..self.start + i])?;
                    }
                    self.start += i;
                    if !self.fill()? {
                        if let Some(h) = head.as_deref_mut() {
                            keep(h, &self.buf[self.start..])?;
                        }
                        self.start = self.buf.len();
                        return Ok(None);
                    }
                }
            }
        }
    }

    /// The record starting at `start`, read to its end tag.
    fn take_record(&mut self) -> Result<Vec<u8>, StreamError> {
        loop {
            let rest = &self.buf[self.start..];
            if let Some(end) = record_end(rest) {
                let record = rest[..end].to_vec();
                self.start += end;
                return Ok(record);
            }
            if rest.len() > MAX_RECORD_BYTES {
                return Err(StreamError::RecordTooLarge);
            }
            if !self.fill()? {
                return Err(StreamError::Unclosed);
            }
        }
    }
}

fn keep(head: &mut Vec<u8>, bytes: &[u8]) -> Result<(), StreamError> {
    if head.len() + bytes.len() > MAX_HEAD_BYTES {
        return Err(StreamError::HeadTooLarge);
    }
    head.extend_from_slice(bytes);
    Ok(())
}

enum Found {
    /// A `<record` tag starts here.
    At(usize),
    /// None starts before here (the rest may be the start of one, cut by the read).
    Before(usize),
}

/// Where the next `<record` start tag begins (`<record>`, `<record …>`, `<record/>`).
fn find_open(hay: &[u8], eof: bool) -> Found {
    const TAG: &[u8] = b"<record";
    let mut from = 0;
    while let Some(i) = hay[from..].iter().position(|b| *b == b'<') {
        let at = from + i;
        let rest = &hay[at..];
        if rest.len() <= TAG.len() {
            // Too short to tell: wait for more, unless there is no more.
            return if eof {
                Found::Before(hay.len())
            } else {
                Found::Before(at)
            };
        }
        if rest.starts_with(TAG) {
            let next = rest[TAG.len()];
            if next == b'>' || next == b'/' || next.is_ascii_whitespace() {
                return Found::At(at);
            }
        }
        from = at + 1;
    }
    Found::Before(hay.len())
}

/// The length of the record element at the start of `rest`, when its end is in `rest`.
fn record_end(rest: &[u8]) -> Option<usize> {
    let gt = rest.iter().position(|b| *b == b'>')?;
    if gt > 0 && rest[gt - 1] == b'/' {
        return Some(gt + 1);
    }
    const CLOSE: &[u8] = b"</record";
    let mut from = gt + 1;
    while let Some(i) = rest[from..].windows(CLOSE.len()).position(|w| w == CLOSE) {
        let at = from + i + CLOSE.len();
        let tail = &rest[at..];
        let spaces = tail.iter().take_while(|b| b.is_ascii_whitespace()).count();
        match tail.get(spaces) {
            Some(b'>') => return Some(at + spaces + 1),
            Some(_) => from = at,
            None => return None,
        }
    }
    None
}

/// Why one `<record>` element could not be read.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RecordError {
    /// mail-auth's parser refused it, in its words.
    #[error("{0}")]
    Unreadable(String),
    /// The element held nothing.
    #[error("a <record> without content")]
    Empty,
}

/// One `<record>` element, parsed by mail-auth inside an otherwise empty report.
pub(crate) fn parse_record(record: &[u8]) -> Result<Record, RecordError> {
    const OPEN: &[u8] =
        b"<feedback><report_metadata></report_metadata><policy_published></policy_published>";
    const CLOSE: &[u8] = b"</feedback>";
    let mut doc = Vec::with_capacity(OPEN.len() + record.len() + CLOSE.len());
    doc.extend_from_slice(OPEN);
    doc.extend_from_slice(record);
    doc.extend_from_slice(CLOSE);
    Report::parse_xml(&doc)
        .map_err(RecordError::Unreadable)?
        .record
        .pop()
        .ok_or(RecordError::Empty)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split_all(doc: &[u8], chunk_reader: bool) -> (Vec<Vec<u8>>, Vec<u8>) {
        // A reader that hands out 3 bytes at a time cuts tags at every place.
        struct Drip<'a>(&'a [u8]);
        impl Read for Drip<'_> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                let n = self.0.len().min(3).min(buf.len());
                buf[..n].copy_from_slice(&self.0[..n]);
                self.0 = &self.0[n..];
                Ok(n)
            }
        }
        let reader: Box<dyn Read> = if chunk_reader {
            Box::new(Drip(doc))
        } else {
            Box::new(doc)
        };
        let mut s = Splitter::new(reader, 1 << 20);
        let mut head = Vec::new();
        let mut records = Vec::new();
        while let Some(r) = s.next_record(Some(&mut head)).unwrap() {
            records.push(r);
        }
        (records, head)
    }

    #[test]
    fn records_are_cut_out_however_the_reads_fall() {
        let doc = b"<feedback><report_metadata><org_name>a</org_name></report_metadata>\
            <record><row><count>1</count></row></record><records>x</records>\
            <record attr=\"1\"><row/></record ><record/></feedback>";
        for drip in [false, true] {
            let (records, head) = split_all(doc, drip);
            assert_eq!(
                records,
                vec![
                    b"<record><row><count>1</count></row></record>".to_vec(),
                    b"<record attr=\"1\"><row/></record >".to_vec(),
                    b"<record/>".to_vec()
                ]
            );
            assert_eq!(
                head,
                b"<feedback><report_metadata><org_name>a</org_name></report_metadata>\
                  <records>x</records></feedback>"
                    .to_vec()
            );
        }
    }

    #[test]
    fn a_record_is_parsed_alone() {
        let r = parse_record(
            b"<record><row><source_ip>192.0.2.1</source_ip><count>3</count></row>\
              <identifiers><header_from>example.com</header_from></identifiers></record>",
        )
        .unwrap();
        assert_eq!(r.row.count, 3);
        assert_eq!(r.identifiers.header_from, "example.com");
    }

    #[test]
    fn too_much_is_refused() {
        let mut s = Splitter::new(&b"<feedback>          </feedback>"[..], 10);
        assert!(matches!(
            s.next_record(None),
            Err(StreamError::TooLarge(10))
        ));
        let big = format!("<record>{}", "x".repeat(MAX_RECORD_BYTES + 10));
        let mut s = Splitter::new(big.as_bytes(), 1 << 20);
        assert!(matches!(
            s.next_record(None),
            Err(StreamError::RecordTooLarge)
        ));
        let mut s = Splitter::new(&b"<feedback><record><row>"[..], 1 << 20);
        assert!(matches!(s.next_record(None), Err(StreamError::Unclosed)));
    }
}
