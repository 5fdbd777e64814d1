//! One report document, decompressed as it is read: XML is a DMARC aggregate report, read as
//! a stream of records ([`super::stream`]) with every bound checked on the way, JSON a TLS-RPT
//! report. What [`super::parse`] does with each document it finds in a mail or a file.

use std::io::Read;
use std::sync::Arc;

use mail_auth::report::Report;
use mail_auth::report::tlsrpt::TlsReport;

use super::bounds::{self, MAX_RECORDS_PER_MAIL, MAX_RECORDS_PER_REPORT};
use super::parse::{Limits, read_bounded, read_so_far, rejected};
use super::stream::{Document, Splitter, StreamError, parse_record};
use crate::store::{DmarcReport, ParsedItem};

/// Parses a document: XML is a DMARC aggregate report (read as a stream of records), JSON a
/// TLS-RPT report. `before` is what the mail gave so far (its records count toward
/// [`MAX_RECORDS_PER_MAIL`]). Returns the item and the decompressed bytes read, or, when the
/// document could not be decompressed, the rejected item (a zip is not read further).
pub(super) fn document(
    name: &str,
    doc: Document,
    before: &[ParsedItem],
) -> Result<(ParsedItem, usize), ParsedItem> {
    let decompressing = |e: StreamError| rejected(name, &e.to_string());
    match first_byte(&doc).map_err(decompressing)? {
        Some(b'<') => dmarc_xml(name, doc, read_so_far(before).1),
        Some(b'{') => {
            let bytes = read_bounded(
                doc.open(),
                &Limits {
                    max_report_size: doc.max,
                    max_zip_entries: 0,
                },
            )
            .map_err(decompressing)?;
            let item = match TlsReport::parse_json(&bytes) {
                Ok(r) => match bounds::check_tls(&r) {
                    Ok(()) => ParsedItem::Tls(Box::new(r)),
                    Err(e) => rejected(name, &e.to_string()),
                },
                Err(e) => rejected(name, &format!("not a TLS-RPT report: {e:?}")),
            };
            Ok((item, bytes.len()))
        }
        _ => Ok((rejected(name, "neither XML nor JSON"), 0)),
    }
}

/// The document's first byte that is not white space or a byte order mark, reading no more
/// than its bound.
fn first_byte(doc: &Document) -> Result<Option<u8>, StreamError> {
    let mut reader = doc.open();
    let mut chunk = [0u8; 4096];
    let mut seen = 0;
    loop {
        let n = match reader.read(&mut chunk) {
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(StreamError::Corrupt(e)),
        };
        if n == 0 {
            return Ok(None);
        }
        seen += n;
        if seen > doc.max {
            return Err(StreamError::TooLarge(doc.max));
        }
        if let Some(b) = chunk[..n]
            .iter()
            .find(|b| !b.is_ascii_whitespace() && **b != 0xEF && **b != 0xBB && **b != 0xBF)
        {
            return Ok(Some(*b));
        }
    }
}

/// A DMARC XML document, read once here as a stream of records: each record's counts checked
/// and the record parsed (then dropped), the head parsed; its records are read again when
/// stored. `records_before` are the records this mail gave already.
fn dmarc_xml(
    name: &str,
    doc: Document,
    records_before: usize,
) -> Result<(ParsedItem, usize), ParsedItem> {
    let refuse = |why: String| rejected(name, &why);
    let mut split = Splitter::new(doc.open(), doc.max);
    let mut head = Vec::new();
    let mut tally = bounds::Tally::default();
    let (mut dtd, mut unparsable) = (false, None);
    loop {
        match split.next_record(Some(&mut head)) {
            Ok(Some(record)) => {
                dtd |= has_dtd(&record);
                tally.add(&record);
                if unparsable.is_none() && tally.records() <= MAX_RECORDS_PER_REPORT {
                    unparsable = parse_record(&record).err().map(|e| e.to_string());
                }
            }
            Ok(None) => break,
            Err(e @ (StreamError::Corrupt(_) | StreamError::TooLarge(_))) => {
                return Err(refuse(e.to_string()));
            }
            Err(e) => return Ok((refuse(e.to_string()), split.bytes_read())),
        }
    }
    let used = split.bytes_read();
    drop(split);
    let item = |i: ParsedItem| Ok((i, used));
    if dtd || has_dtd(&head) {
        return item(refuse(
            "XML with a DTD or entity declarations is refused (DMARC reports have none; this is \
             how XML bombs are built)"
                .into(),
        ));
    }
    let records = match tally.finish() {
        Err(e) => return item(refuse(e.to_string())),
        Ok(records) if records_before + records > MAX_RECORDS_PER_MAIL => {
            return item(refuse(format!(
                "more than {MAX_RECORDS_PER_MAIL} records in one mail ({records_before} read \
                 before this report of {records}); this report was not read"
            )));
        }
        Ok(records) => records,
    };
    if let Some(e) = unparsable {
        return item(refuse(format!("not a DMARC aggregate report: {e}")));
    }
    let head = match Report::parse_xml(&head) {
        Ok(r) => r,
        Err(e) => return item(refuse(format!("not a DMARC aggregate report: {e}"))),
    };
    if let Err(e) = sane(&head, records) {
        return item(refuse(e.to_string()));
    }
    item(ParsedItem::Dmarc(Box::new(DmarcReport {
        head,
        records,
        source: Arc::new(doc),
    })))
}

fn has_dtd(bytes: &[u8]) -> bool {
    contains_ci(bytes, b"<!DOCTYPE") || contains_ci(bytes, b"<!ENTITY")
}

/// What makes a well-formed DMARC report unusable (stored as the rejected part's reason).
#[derive(Debug, thiserror::Error)]
enum Insane {
    #[error("report without org_name or report_id")]
    NoIdentity,
    #[error("report without policy_published/domain")]
    NoDomain,
    #[error("{0}")]
    Bounds(#[from] bounds::OutOfBounds),
    #[error("report without any record")]
    NoRecord,
}

/// Checks what the XML parser cannot: identity and dates that make sense, and a record.
fn sane(r: &Report, records: usize) -> Result<(), Insane> {
    let m = &r.report_metadata;
    if m.org_name.trim().is_empty() || m.report_id.trim().is_empty() {
        return Err(Insane::NoIdentity);
    }
    if r.policy_published.domain.trim().is_empty() {
        return Err(Insane::NoDomain);
    }
    let as_secs = |t: u64| t.min(i64::MAX as u64) as i64;
    bounds::check_period(as_secs(m.date_range.begin), as_secs(m.date_range.end))?;
    if records == 0 {
        return Err(Insane::NoRecord);
    }
    Ok(())
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}
