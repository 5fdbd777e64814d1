//! Turns report mail (and files saved elsewhere) into reports, with hard limits: reports are
//! hostile input from the internet.
//!
//! mail-auth's `parse_rfc5322` stops at the first report of a mail, so herald walks the MIME
//! parts itself (mail-parser), finds the gzip, zip, XML and JSON attachments with their bounds
//! (decompressed bytes per document, files per zip, reports per mail), and reads each
//! document as it decompresses ([`super::document`]): DMARC record by record, XML with a DTD
//! (the only way to declare the entities of an "XML bomb") refused.

use std::io::{Cursor, Read};
use std::sync::Arc;

use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::bounds::MAX_REPORTS_PER_MAIL;
use super::document::document;
use super::stream::{Document, Encoding, StreamError};
use crate::store::ParsedItem;

/// Bounds applied to every document.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest decompressed document, in bytes.
    pub max_report_size: usize,
    /// Most files read from one zip archive.
    pub max_zip_entries: usize,
}

impl Limits {
    /// The limits of `[feedback]`.
    pub(crate) fn from_config(cfg: &crate::config::FeedbackConfig) -> Limits {
        Limits {
            max_report_size: cfg.max_report_size,
            max_zip_entries: cfg.max_zip_entries,
        }
    }
}

/// How deep forwarded messages (message/rfc822 inside a mail) are followed.
const MAX_NESTING: usize = 3;
/// Report attachments read from one mail at most.
const MAX_PARTS: usize = 32;

/// Every report in one mail; parts that should have been reports and are not become
/// [`ParsedItem::Rejected`]. A mail without any report part yields one rejection.
pub(crate) fn parse_mail(raw: &[u8], limits: &Limits) -> Vec<ParsedItem> {
    let mut out = Vec::new();
    walk_mail(raw, limits, 0, &mut out);
    if out.is_empty() {
        out.push(rejected(
            "(message)",
            "no report found: no XML, gzip, zip or JSON attachment",
        ));
    }
    out
}

fn walk_mail(raw: &[u8], limits: &Limits, depth: usize, out: &mut Vec<ParsedItem>) {
    let Some(message) = MessageParser::new().parse(raw) else {
        out.push(rejected("(message)", "not a readable mail message"));
        return;
    };
    let mut seen = 0;
    for (i, part) in message.parts.iter().enumerate() {
        if seen >= MAX_PARTS {
            out.push(rejected(
                "(message)",
                &format!("more than {MAX_PARTS} report attachments; the rest were not read"),
            ));
            break;
        }
        let name = part
            .attachment_name()
            .map(str::to_string)
            .unwrap_or_else(|| format!("part {i}"));
        let (ctype, subtype) = part
            .content_type()
            .map(|ct| {
                (
                    ct.ctype().to_ascii_lowercase(),
                    ct.subtype().unwrap_or("").to_ascii_lowercase(),
                )
            })
            .unwrap_or_default();
        let body: &[u8] = match &part.body {
            PartType::Binary(b) | PartType::InlineBinary(b) => b.as_ref(),
            PartType::Text(t) => t.as_bytes(),
            PartType::Message(m) => {
                if depth < MAX_NESTING {
                    walk_mail(m.raw_message(), limits, depth + 1, out);
                }
                continue;
            }
            _ => continue,
        };
        let Some(kind) = kind_of(&ctype, &subtype, &name) else {
            continue;
        };
        seen += 1;
        read_payload(&name, kind, body, limits, out);
    }
}

/// What a part or file holds, from its content type or name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Payload {
    /// A plain XML or JSON document.
    Document,
    /// gzip-compressed document.
    Gzip,
    /// A zip archive of documents.
    Zip,
}

fn kind_of(ctype: &str, subtype: &str, name: &str) -> Option<Payload> {
    let lower = name.to_ascii_lowercase();
    let by_name = if lower.ends_with(".gz") || lower.ends_with(".gzip") {
        Some(Payload::Gzip)
    } else if lower.ends_with(".zip") {
        Some(Payload::Zip)
    } else if lower.ends_with(".xml") || lower.ends_with(".json") {
        Some(Payload::Document)
    } else {
        None
    };
    let by_type = match subtype {
        "gzip" | "x-gzip" | "tlsrpt+gzip" => Some(Payload::Gzip),
        "zip" | "x-zip" | "x-zip-compressed" | "tlsrpt+zip" => Some(Payload::Zip),
        "xml" | "tlsrpt+json" | "json" => Some(Payload::Document),
        _ => None,
    };
    // The type wins over the name, except for the catch-all octet-stream.
    if ctype == "multipart" {
        return None;
    }
    by_type.or(by_name)
}

/// Reads one attachment or file of a known kind.
pub(crate) fn read_payload(
    name: &str,
    kind: Payload,
    bytes: &[u8],
    limits: &Limits,
    out: &mut Vec<ParsedItem>,
) {
    if let Err(full) = room_for_report(out) {
        return out.push(rejected(name, &full.to_string()));
    }
    let whole = |encoding| Document {
        bytes: Arc::from(bytes),
        range: 0..bytes.len(),
        encoding,
        max: limits.max_report_size,
    };
    match kind {
        Payload::Document if bytes.len() > limits.max_report_size => {
            out.push(too_large(name, limits));
        }
        Payload::Document => {
            let item = document(name, whole(Encoding::Plain), out).map_or_else(|e| e, |(i, _)| i);
            out.push(item);
        }
        Payload::Gzip => {
            let item = document(name, whole(Encoding::Gzip), out).map_or_else(|e| e, |(i, _)| i);
            out.push(item);
        }
        Payload::Zip => read_zip(name, bytes, limits, out),
    }
}

fn read_zip(name: &str, bytes: &[u8], limits: &Limits, out: &mut Vec<ParsedItem>) {
    let mut archive = match zip::ZipArchive::new(Cursor::new(bytes)) {
        Ok(a) => a,
        Err(e) => return out.push(rejected(name, &format!("not a readable zip archive: {e}"))),
    };
    if archive.len() > limits.max_zip_entries {
        return out.push(rejected(
            name,
            &format!(
                "zip archive with {} files; at most {} are read (feedback.max_zip_entries)",
                archive.len(),
                limits.max_zip_entries
            ),
        ));
    }
    let shared: Arc<[u8]> = Arc::from(bytes);
    let mut budget = limits.max_report_size;
    for i in 0..archive.len() {
        let mut file = match archive.by_index(i) {
            Ok(f) => f,
            Err(e) => {
                out.push(rejected(name, &format!("zip entry {i} unreadable: {e}")));
                continue;
            }
        };
        if file.is_dir() {
            continue;
        }
        let entry = format!("{name}/{}", file.name());
        if let Err(full) = room_for_report(out) {
            return out.push(rejected(&entry, &full.to_string()));
        }
        // The entry's data in the archive, read again (inflating) when its records are
        // stored; an entry that cannot be located so is read into memory, bounded.
        let start = file.data_start().map(|s| s as usize);
        let end = start.map(|s| s.saturating_add(file.compressed_size() as usize));
        let located = match (file.compression(), start, end) {
            (zip::CompressionMethod::Deflated, Some(s), Some(e)) if e <= bytes.len() => {
                Some((s..e, Encoding::Deflate))
            }
            (zip::CompressionMethod::Stored, Some(s), Some(e)) if e <= bytes.len() => {
                Some((s..e, Encoding::Plain))
            }
            _ => None,
        };
        let doc = match located {
            Some((range, encoding)) => Document {
                bytes: shared.clone(),
                range,
                encoding,
                max: budget,
            },
            None => {
                let bounded = Limits {
                    max_report_size: budget,
                    ..*limits
                };
                match read_bounded(&mut file, &bounded) {
                    Ok(doc) => Document {
                        range: 0..doc.len(),
                        bytes: Arc::from(doc),
                        encoding: Encoding::Plain,
                        max: budget,
                    },
                    Err(e) => return out.push(rejected(&entry, &e.to_string())),
                }
            }
        };
        drop(file);
        match document(&entry, doc, out) {
            Ok((item, used)) => {
                budget = budget.saturating_sub(used);
                out.push(item);
            }
            Err(item) => return out.push(item),
        }
    }
}

/// Reads at most `max_report_size` bytes; more is refused (a bomb or a runaway report).
pub(super) fn read_bounded(reader: impl Read, limits: &Limits) -> Result<Vec<u8>, StreamError> {
    let cap = limits.max_report_size;
    let mut buf = Vec::with_capacity(cap.min(64 * 1024));
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(StreamError::Corrupt)?;
    if buf.len() > cap {
        return Err(StreamError::TooLarge(cap));
    }
    Ok(buf)
}

fn too_large(name: &str, limits: &Limits) -> ParsedItem {
    rejected(
        name,
        &format!(
            "larger than {} bytes (feedback.max_report_size)",
            limits.max_report_size
        ),
    )
}

/// Reports and DMARC records already read from this mail.
pub(super) fn read_so_far(out: &[ParsedItem]) -> (usize, usize) {
    out.iter()
        .fold((0, 0), |(reports, records), item| match item {
            ParsedItem::Dmarc(r) => (reports + 1, records + r.records),
            ParsedItem::Tls(_) => (reports + 1, records),
            ParsedItem::Rejected { .. } => (reports, records),
        })
}

/// `Err` (the reason a further part is not read) once the mail has given
/// [`MAX_REPORTS_PER_MAIL`] reports.
fn room_for_report(out: &[ParsedItem]) -> Result<(), MailFull> {
    if read_so_far(out).0 >= MAX_REPORTS_PER_MAIL {
        return Err(MailFull);
    }
    Ok(())
}

/// One mail already gave [`MAX_REPORTS_PER_MAIL`] reports: the rest are not read.
#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REPORTS_PER_MAIL} reports in one mail; this part was not read")]
struct MailFull;

/// A part that is not a readable report, with the reason.
pub(super) fn rejected(part: &str, error: &str) -> ParsedItem {
    ParsedItem::Rejected {
        part: part.chars().take(200).collect(),
        error: error.to_string(),
    }
}

/// Reads a file saved elsewhere (`herald dmarc import`): `.xml`, `.json`, `.gz`, `.zip`, a
/// single mail (`.eml`) or a mailbox (mbox: messages separated by `From ` lines). Returns each
/// message (or the file itself) with what was found in it.
pub(crate) fn parse_file<'a>(
    name: &str,
    bytes: &'a [u8],
    limits: &Limits,
) -> Vec<(&'a [u8], Vec<ParsedItem>)> {
    let lower = name.to_ascii_lowercase();
    if let Some(kind) = kind_of("", "", &lower) {
        let mut out = Vec::new();
        read_payload(name, kind, bytes, limits, &mut out);
        return vec![(bytes, out)];
    }
    if bytes.starts_with(b"From ") {
        return split_mbox(bytes)
            .into_iter()
            .map(|m| (m, parse_mail(m, limits)))
            .collect();
    }
    vec![(bytes, parse_mail(bytes, limits))]
}

/// The messages of an mbox file (lines starting `From ` separate them).
pub(crate) fn split_mbox(bytes: &[u8]) -> Vec<&[u8]> {
    let mut starts = vec![0];
    let mut i = 0;
    while let Some(p) = bytes[i..].windows(6).position(|w| w == b"\nFrom ") {
        starts.push(i + p + 1);
        i += p + 1;
    }
    starts.push(bytes.len());
    starts
        .windows(2)
        .map(|w| {
            let m = &bytes[w[0]..w[1]];
            // Drop the separator line itself.
            match m.iter().position(|b| *b == b'\n') {
                Some(nl) => &m[nl + 1..],
                None => &m[m.len()..],
            }
        })
        .filter(|m| !m.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const LIMITS: Limits = Limits {
        max_report_size: 1024 * 1024,
        max_zip_entries: 4,
    };

    fn sample() -> String {
        let begin = crate::store::now() - 86_400;
        format!(
            r#"<?xml version="1.0" encoding="UTF-8" ?>
<feedback>
  <report_metadata><org_name>acme.test</org_name><email>noreply@acme.test</email>
    <report_id>r1</report_id><date_range><begin>{begin}</begin><end>{end}</end></date_range>
  </report_metadata>
  <policy_published><domain>example.com</domain><adkim>r</adkim><aspf>r</aspf><p>none</p>
    <sp>none</sp><pct>100</pct></policy_published>
  <record><row><source_ip>192.0.2.1</source_ip><count>3</count><policy_evaluated>
    <disposition>none</disposition><dkim>pass</dkim><spf>fail</spf></policy_evaluated></row>
    <identifiers><header_from>example.com</header_from></identifiers>
    <auth_results><dkim><domain>example.com</domain><selector>s1</selector><result>pass</result></dkim>
    <spf><domain>other.test</domain><result>pass</result></spf></auth_results></record>
</feedback>"#,
            end = begin + 86_399
        )
    }

    #[test]
    fn plain_xml_parses() {
        let mut out = Vec::new();
        read_payload(
            "r.xml",
            Payload::Document,
            sample().as_bytes(),
            &LIMITS,
            &mut out,
        );
        assert!(matches!(&out[..], [ParsedItem::Dmarc(r)] if r.records == 1));
        let ParsedItem::Dmarc(r) = &out[0] else {
            return;
        };
        let records: Vec<_> = r.source.records().collect();
        assert_eq!(records.len(), 1);
        assert_eq!(records[0].row.count, 3);
    }

    #[test]
    fn gzip_bomb_is_refused() {
        use flate2::{Compression, write::GzEncoder};
        use std::io::Write;
        let mut gz = GzEncoder::new(Vec::new(), Compression::best());
        let zeros = vec![b' '; 1024 * 1024];
        for _ in 0..4 {
            gz.write_all(&zeros).unwrap();
        }
        let bomb = gz.finish().unwrap();
        let mut out = Vec::new();
        read_payload("b.xml.gz", Payload::Gzip, &bomb, &LIMITS, &mut out);
        assert!(matches!(&out[..], [ParsedItem::Rejected { error, .. }] if error.contains("bomb")));
    }

    #[test]
    fn dtd_is_refused() {
        let bomb = "<?xml version=\"1.0\"?><!DOCTYPE lolz [<!ENTITY lol \"lol\">]><feedback>&lol;</feedback>";
        let mut out = Vec::new();
        read_payload(
            "b.xml",
            Payload::Document,
            bomb.as_bytes(),
            &LIMITS,
            &mut out,
        );
        assert!(matches!(&out[..], [ParsedItem::Rejected { error, .. }] if error.contains("DTD")));
    }

    #[test]
    fn mbox_splits() {
        let m = b"From a@b Mon\nSubject: 1\n\nx\nFrom c@d Tue\nSubject: 2\n\ny\n";
        assert_eq!(split_mbox(m).len(), 2);
    }
}
