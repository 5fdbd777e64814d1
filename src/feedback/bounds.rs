//! What one report may claim and carry, checked on each record's bytes as the document is
//! read (DMARC, [`super::stream`]) or right after it is parsed (TLS-RPT): reports are hostile
//! input from the internet, and mail-auth's XML parser turns a count it cannot read (`three`,
//! `-1`, `1e3`, 2^64) into 0.
//!
//! The numbers are fixed, not configuration: they are far above what the largest receivers
//! send (a day's report for one domain from one receiver) and far below what hurts herald.

use mail_auth::report::tlsrpt::TlsReport;

use crate::store::ParsedItem;

/// Most `<record>` elements in one DMARC report: a larger one is refused (a policy on what one
/// report may add: records are read and stored one at a time, so memory does not depend on
/// it).
pub(crate) const MAX_RECORDS_PER_REPORT: usize = 10_000;
/// Most reports (DMARC or TLS-RPT) read from one mail; the parts after that are kept as
/// rejected.
pub(crate) const MAX_REPORTS_PER_MAIL: usize = 8;
/// Most DMARC records read from one mail, over all its reports.
pub(crate) const MAX_RECORDS_PER_MAIL: usize = 20_000;
/// Largest message count of one record (`<count>`): one source address, one day, one receiver.
pub(crate) const MAX_ROW_COUNT: u64 = 1_000_000_000;
/// Largest message count of one report (DMARC rows, or TLS-RPT sessions), summed.
pub(crate) const MAX_REPORT_MESSAGES: u64 = 10_000_000_000;
/// Reports dated before this (2012-01-01, DMARC's first year) make no sense.
pub(crate) const EARLIEST_REPORT: i64 = 1_325_376_000;
/// Longest reporting period of one report (receivers send daily; 31 days allows a monthly one).
pub(crate) const MAX_PERIOD_SECS: i64 = 31 * 86_400;
/// How far in the future a report's period may end (clock skew, time zones).
pub(crate) const MAX_FUTURE_SECS: i64 = 2 * 86_400;

/// Why a report's numbers or dates are refused (stored as the rejected part's reason).
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub(crate) enum OutOfBounds {
    /// More records than [`MAX_RECORDS_PER_REPORT`].
    #[error(
        "report with more than {MAX_RECORDS_PER_REPORT} records ({0} found); refused unread \
         (herald reads at most {MAX_RECORDS_PER_REPORT} records per report)"
    )]
    TooManyRecords(usize),
    /// A `<count>` that is not a whole number within bounds.
    #[error(
        "record count {0:?} is not a whole number from 0 to {MAX_ROW_COUNT}; the report is \
         refused rather than counted wrong"
    )]
    Count(String),
    /// The counts add up to more than [`MAX_REPORT_MESSAGES`].
    #[error("report claims {0} messages, more than {MAX_REPORT_MESSAGES}; refused as implausible")]
    Total(u64),
    /// A period that is not a plausible reporting period.
    #[error(
        "impossible date range: begin {0}, end {1} (unix seconds; a report covers at most 31 \
         days, from 2012 until now)"
    )]
    Dates(i64, i64),
}

/// A DMARC report's records as they are read, one at a time: how many, and every `<count>`
/// checked on its bytes (mail-auth would read a count it cannot parse as 0).
#[derive(Debug, Default)]
pub(crate) struct Tally {
    records: usize,
    total: u64,
    bad_count: Option<OutOfBounds>,
}

impl Tally {
    /// Counts one `<record>` element (its bytes). Past [`MAX_RECORDS_PER_REPORT`] records are
    /// only counted.
    pub(crate) fn add(&mut self, record: &[u8]) {
        self.records += 1;
        if self.records > MAX_RECORDS_PER_REPORT {
            return;
        }
        for text in elements(record, b"count") {
            match parse_count(text) {
                Ok(count) => self.total = self.total.saturating_add(count),
                Err(e) => {
                    self.bad_count.get_or_insert(e);
                }
            }
        }
    }

    /// Records counted so far.
    pub(crate) fn records(&self) -> usize {
        self.records
    }

    /// The number of records, or why the report is refused: too many records, then a bad
    /// count, then an implausible total.
    pub(crate) fn finish(self) -> Result<usize, OutOfBounds> {
        if self.records > MAX_RECORDS_PER_REPORT {
            return Err(OutOfBounds::TooManyRecords(self.records));
        }
        if let Some(e) = self.bad_count {
            return Err(e);
        }
        if self.total > MAX_REPORT_MESSAGES {
            return Err(OutOfBounds::Total(self.total));
        }
        Ok(self.records)
    }
}

/// Checks a whole DMARC XML document in memory, record by record.
#[cfg(test)]
fn check_dmarc_xml(xml: &[u8]) -> Result<usize, OutOfBounds> {
    let mut split = super::stream::Splitter::new(xml, usize::MAX);
    let mut tally = Tally::default();
    while let Ok(Some(record)) = split.next_record(None) {
        tally.add(&record);
    }
    tally.finish()
}

/// A record count: ASCII digits only (surrounding white space allowed), at most
/// [`MAX_ROW_COUNT`].
fn parse_count(text: &[u8]) -> Result<u64, OutOfBounds> {
    let trimmed = text.trim_ascii();
    let refused = || {
        OutOfBounds::Count(String::from_utf8_lossy(&trimmed[..trimmed.len().min(40)]).into_owned())
    };
    if trimmed.is_empty() || trimmed.len() > 19 || !trimmed.iter().all(u8::is_ascii_digit) {
        return Err(refused());
    }
    let value: u64 = std::str::from_utf8(trimmed)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(refused)?;
    if value > MAX_ROW_COUNT {
        return Err(refused());
    }
    Ok(value)
}

/// The text of every `<name>…</name>` (and `<name attr…>`, `<name/>`) element, in order, without
/// unescaping; an element left open yields the rest of the document.
fn elements<'a>(xml: &'a [u8], name: &'a [u8]) -> impl Iterator<Item = &'a [u8]> + 'a {
    let mut pos = 0;
    std::iter::from_fn(move || {
        loop {
            let at = pos + find(&xml[pos..], b"<")?;
            pos = at + 1;
            let rest = &xml[pos..];
            if !rest.starts_with(name) {
                continue;
            }
            let after = rest.get(name.len()).copied();
            match after {
                Some(b'>' | b'/') => {}
                Some(b) if b.is_ascii_whitespace() => {}
                _ => continue,
            }
            let open_end = pos + find(rest, b">").map(|i| i + 1).unwrap_or(rest.len());
            if xml.get(open_end.saturating_sub(2)) == Some(&b'/') {
                pos = open_end;
                return Some(&xml[open_end..open_end]);
            }
            let close = find(&xml[open_end..], b"</")
                .map(|i| open_end + i)
                .unwrap_or(xml.len());
            pos = open_end;
            return Some(&xml[open_end..close]);
        }
    })
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    if needle.len() == 1 {
        return hay.iter().position(|b| *b == needle[0]);
    }
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Checks a reporting period (unix seconds) against the bounds above and the clock.
pub(crate) fn check_period(begin: i64, end: i64) -> Result<(), OutOfBounds> {
    let now = crate::store::now();
    if begin < EARLIEST_REPORT
        || end < begin
        || end > now + MAX_FUTURE_SECS
        || end - begin > MAX_PERIOD_SECS
    {
        return Err(OutOfBounds::Dates(begin, end));
    }
    Ok(())
}

/// Checks a parsed TLS-RPT report's period and session counts.
pub(crate) fn check_tls(r: &TlsReport) -> Result<(), OutOfBounds> {
    check_period(
        r.date_range.start_datetime.to_timestamp(),
        r.date_range.end_datetime.to_timestamp(),
    )?;
    let total = r.policies.iter().fold(0u64, |t, p| {
        t.saturating_add(p.summary.total_success as u64)
            .saturating_add(p.summary.total_failure as u64)
    });
    if total > MAX_REPORT_MESSAGES {
        return Err(OutOfBounds::Total(total));
    }
    Ok(())
}

/// Keeps the DMARC reports of `items` that fit `allowance` rows (what the sender may still add
/// today, `feedback.max_rows_per_sender_per_day` minus what it added); the others become
/// unreadable parts with the reason.
pub(crate) fn within_sender_allowance(
    items: Vec<ParsedItem>,
    allowance: u64,
    limit: u64,
) -> Vec<ParsedItem> {
    let mut left = allowance;
    items
        .into_iter()
        .map(|item| match item {
            ParsedItem::Dmarc(r) if r.records as u64 > left => ParsedItem::Rejected {
                part: format!("report {}", r.head.report_metadata.report_id)
                    .chars()
                    .take(200)
                    .collect(),
                error: format!(
                    "this sender already sent {} DMARC rows in the last 24 hours; at most {limit} \
                     are stored per sending address and day \
                     (feedback.max_rows_per_sender_per_day)",
                    limit - left
                ),
            },
            ParsedItem::Dmarc(r) => {
                left -= r.records as u64;
                ParsedItem::Dmarc(r)
            }
            other => other,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn doc(counts: &[&str]) -> String {
        let mut x = String::from("<feedback>");
        for c in counts {
            x.push_str(&format!(
                "<record><row><source_ip>192.0.2.1</source_ip><count>{c}</count></row></record>"
            ));
        }
        x.push_str("</feedback>");
        x
    }

    #[test]
    fn sane_counts_pass() {
        assert_eq!(
            check_dmarc_xml(doc(&["3", " 1000000000 ", "0"]).as_bytes()),
            Ok(3)
        );
    }

    #[test]
    fn absurd_counts_are_refused() {
        for bad in [
            "9223372036854775808",
            "18446744073709551616",
            "-1",
            "1e3",
            "three",
            "4294967295000",
            "",
            "1000000001",
        ] {
            assert!(
                matches!(
                    check_dmarc_xml(doc(&[bad]).as_bytes()),
                    Err(OutOfBounds::Count(_))
                ),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn implausible_total_is_refused() {
        let many = vec!["1000000000"; 11];
        assert!(matches!(
            check_dmarc_xml(doc(&many).as_bytes()),
            Err(OutOfBounds::Total(11_000_000_000))
        ));
    }

    #[test]
    fn too_many_records_are_refused() {
        let many = vec!["1"; MAX_RECORDS_PER_REPORT + 1];
        assert!(matches!(
            check_dmarc_xml(doc(&many).as_bytes()),
            Err(OutOfBounds::TooManyRecords(_))
        ));
    }

    #[test]
    fn other_elements_are_not_counted() {
        let x = "<feedback><records/><recordx>1</recordx><record><count_x>z</count_x><count/>\
                 </record></feedback>";
        // `<count/>` is an empty count: refused.
        assert!(check_dmarc_xml(x.as_bytes()).is_err());
        let x = "<feedback><records/><recordx>1</recordx><count_x>z</count_x></feedback>";
        assert_eq!(check_dmarc_xml(x.as_bytes()), Ok(0));
        let x = "<feedback><record><count_x>z</count_x></record></feedback>";
        assert_eq!(check_dmarc_xml(x.as_bytes()), Ok(1));
    }

    #[test]
    fn periods() {
        let now = crate::store::now();
        assert_eq!(check_period(now - 86_400, now), Ok(()));
        assert!(check_period(253_402_214_400, 253_402_300_799).is_err()); // 9999-12-31
        assert!(check_period(0, 86_399).is_err());
        assert!(check_period(now - 40 * 86_400, now).is_err());
        assert!(check_period(now, now - 1).is_err());
    }
}
