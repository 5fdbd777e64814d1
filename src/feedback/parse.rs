//! Turns report mail (and files saved elsewhere) into reports, with hard limits: reports are
//! hostile input from the internet.
//!
//! mail-auth's `parse_rfc5322` stops at the first report of a mail, so herald walks the MIME
//! parts itself (mail-parser), decompresses gzip and zip attachments with its own bounds
//! (decompressed bytes per document, files per zip), refuses XML with a DTD (the only way to
//! declare the entities of an "XML bomb"), and hands each bounded document to mail-auth's
//! `Report::parse_xml` / `TlsReport::parse_json`.

use std::io::{Cursor, Read};

use flate2::read::MultiGzDecoder;
use mail_auth::report::Report;
use mail_auth::report::tlsrpt::TlsReport;
use mail_parser::{MessageParser, MimeHeaders, PartType};

use super::bounds::{self, MAX_RECORDS_PER_MAIL, MAX_REPORTS_PER_MAIL};
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
    match kind {
        Payload::Document => {
            if bytes.len() > limits.max_report_size {
                out.push(too_large(name, limits));
            } else {
                let item = document(name, bytes, out);
                out.push(item);
            }
        }
        Payload::Gzip => match read_bounded(MultiGzDecoder::new(bytes), limits) {
            Ok(doc) => {
                let item = document(name, &doc, out);
                out.push(item);
            }
            Err(e) => out.push(rejected(name, &e.to_string())),
        },
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
        let bounded = Limits {
            max_report_size: budget,
            ..*limits
        };
        match read_bounded(&mut file, &bounded) {
            Ok(doc) => {
                budget = budget.saturating_sub(doc.len());
                let item = document(&entry, &doc, out);
                out.push(item);
            }
            Err(e) => {
                out.push(rejected(&entry, &e.to_string()));
                return;
            }
        }
    }
}

/// Reads at most `max_report_size` bytes; more is refused (a bomb or a runaway report).
fn read_bounded(reader: impl Read, limits: &Limits) -> Result<Vec<u8>, Unpacking> {
    let cap = limits.max_report_size;
    let mut buf = Vec::with_capacity(cap.min(64 * 1024));
    reader
        .take(cap as u64 + 1)
        .read_to_end(&mut buf)
        .map_err(Unpacking::Corrupt)?;
    if buf.len() > cap {
        return Err(Unpacking::TooLarge(cap));
    }
    Ok(buf)
}

/// Why a compressed report part was not read.
#[derive(Debug, thiserror::Error)]
enum Unpacking {
    #[error("cannot decompress: {0}")]
    Corrupt(std::io::Error),
    #[error(
        "decompresses to more than {0} bytes (feedback.max_report_size); refused as a possible \
         compression bomb"
    )]
    TooLarge(usize),
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
fn read_so_far(out: &[ParsedItem]) -> (usize, usize) {
    out.iter()
        .fold((0, 0), |(reports, records), item| match item {
            ParsedItem::Dmarc(r) => (reports + 1, records + r.record.len()),
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

/// Parses a decompressed document: XML is a DMARC aggregate report, JSON a TLS-RPT report.
/// `before` is what the mail gave so far (its records count toward
/// [`MAX_RECORDS_PER_MAIL`]).
fn document(name: &str, bytes: &[u8], before: &[ParsedItem]) -> ParsedItem {
    let start = bytes
        .iter()
        .position(|b| !b.is_ascii_whitespace() && *b != 0xEF && *b != 0xBB && *b != 0xBF);
    match start.map(|i| bytes[i]) {
        Some(b'<') => dmarc_xml(name, bytes, read_so_far(before).1),
        Some(b'{') => match TlsReport::parse_json(bytes) {
            Ok(r) => match bounds::check_tls(&r) {
                Ok(()) => ParsedItem::Tls(Box::new(r)),
                Err(e) => rejected(name, &e.to_string()),
            },
            Err(e) => rejected(name, &format!("not a TLS-RPT report: {e:?}")),
        },
        _ => rejected(name, "neither XML nor JSON"),
    }
}

/// A DMARC XML document; `records_before` are the records this mail gave already.
fn dmarc_xml(name: &str, bytes: &[u8], records_before: usize) -> ParsedItem {
    if contains_ci(bytes, b"<!DOCTYPE") || contains_ci(bytes, b"<!ENTITY") {
        return rejected(
            name,
            "XML with a DTD or entity declarations is refused (DMARC reports have none; this is \
             how XML bombs are built)",
        );
    }
    match bounds::check_dmarc_xml(bytes) {
        Err(e) => return rejected(name, &e.to_string()),
        Ok(records) if records_before + records > MAX_RECORDS_PER_MAIL => {
            return rejected(
                name,
                &format!(
                    "more than {MAX_RECORDS_PER_MAIL} records in one mail ({records_before} read \
                     before this report of {records}); this report was not read"
                ),
            );
        }
        Ok(_) => {}
    }
    let report = match Report::parse_xml(bytes) {
        Ok(r) => r,
        Err(e) => return rejected(name, &format!("not a DMARC aggregate report: {e}")),
    };
    if let Err(e) = sane(&report) {
        return rejected(name, &e.to_string());
    }
    ParsedItem::Dmarc(Box::new(report))
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

/// Checks what the XML parser cannot: identity and dates that make sense.
fn sane(r: &Report) -> Result<(), Insane> {
    let m = &r.report_metadata;
    if m.org_name.trim().is_empty() || m.report_id.trim().is_empty() {
        return Err(Insane::NoIdentity);
    }
    if r.policy_published.domain.trim().is_empty() {
        return Err(Insane::NoDomain);
    }
    let as_secs = |t: u64| t.min(i64::MAX as u64) as i64;
    bounds::check_period(as_secs(m.date_range.begin), as_secs(m.date_range.end))?;
    if r.record.is_empty() {
        return Err(Insane::NoRecord);
    }
    Ok(())
}

fn contains_ci(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len())
        .any(|w| w.eq_ignore_ascii_case(needle))
}

fn rejected(part: &str, error: &str) -> ParsedItem {
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
        assert!(matches!(&out[..], [ParsedItem::Dmarc(r)] if r.record.len() == 1));
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
