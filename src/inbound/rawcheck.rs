//! Checks on the raw bytes of a command line, before smtp-proto parses it: the parser drops
//! characters it does not expect (`RCPT TO:<a\rb@x>` became `ab@x`), replaces invalid UTF-8
//! and takes any number as a BDAT size. Input that would be silently rewritten is refused.

use crate::reply::Reply;

/// What the raw line says about a command that must not reach the parser.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum RawVerdict {
    /// Parse the line normally.
    Parse,
    /// Refuse the command with this reply; the session goes on.
    Refuse(Reply),
    /// A BDAT size that cannot be honoured: refuse at once (then skip the chunk, or close
    /// when it cannot be framed).
    BdatSize(BdatSize),
}

/// Why a BDAT size is refused.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum BdatSize {
    /// Not a decimal number.
    Unparsable,
    /// A number larger than the message size limit: the size when it fits in 64 bits (the
    /// chunk can be skipped), `None` beyond.
    TooBig(Option<u64>),
}

/// Looks at `line` (terminator included) before it is parsed; `max_size` is the message
/// size limit in force.
pub(crate) fn check(line: &[u8], max_size: usize) -> RawVerdict {
    let body = line
        .strip_suffix(b"\r\n")
        .or_else(|| line.strip_suffix(b"\n"))
        .unwrap_or(line);
    let verb: Vec<u8> = body
        .iter()
        .take_while(|b| b.is_ascii_alphabetic())
        .map(u8::to_ascii_uppercase)
        .collect();
    match verb.as_slice() {
        b"MAIL" => address_line(body, "5.1.7", "sender"),
        b"RCPT" => address_line(body, "5.1.3", "recipient"),
        b"BDAT" => bdat_size(&body[4..], max_size),
        _ => RawVerdict::Parse,
    }
}

fn address_line(body: &[u8], code: &'static str, what: &str) -> RawVerdict {
    if body.iter().any(|&b| b < 0x20 || b == 0x7f) {
        return RawVerdict::Refuse(Reply::new(
            501,
            code,
            format!("the {what} address contains a control character (CR, LF, TAB, NUL ...)"),
        ));
    }
    if std::str::from_utf8(body).is_err() {
        return RawVerdict::Refuse(Reply::new(
            501,
            code,
            format!("the {what} address is not valid UTF-8"),
        ));
    }
    RawVerdict::Parse
}

fn bdat_size(args: &[u8], max_size: usize) -> RawVerdict {
    let Ok(args) = std::str::from_utf8(args) else {
        return RawVerdict::BdatSize(BdatSize::Unparsable);
    };
    let mut words = args.split_ascii_whitespace();
    let size = words.next().unwrap_or("");
    let last_ok = match words.next() {
        None => true,
        Some(w) => w.eq_ignore_ascii_case("LAST") && words.next().is_none(),
    };
    if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || !last_ok {
        return RawVerdict::BdatSize(BdatSize::Unparsable);
    }
    match size.parse::<u64>() {
        Ok(n) if n <= max_size as u64 => RawVerdict::Parse,
        Ok(n) => RawVerdict::BdatSize(BdatSize::TooBig(Some(n))),
        Err(_) => RawVerdict::BdatSize(BdatSize::TooBig(None)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(v: RawVerdict) -> Option<String> {
        match v {
            RawVerdict::Refuse(r) => Some(r.to_string()),
            _ => None,
        }
    }

    #[test]
    fn control_characters_and_bad_utf8_in_paths_are_refused() {
        let r = refused(check(b"RCPT TO:<a\rb@dest.test>\r\n", 100)).unwrap();
        assert!(r.starts_with("501 5.1.3"), "{r}");
        let r = refused(check(b"mail from:<\xff\xfe@x.test>\r\n", 100)).unwrap();
        assert!(r.starts_with("501 5.1.7"), "{r}");
        assert_eq!(check(b"RCPT TO:<a@dest.test>\r\n", 100), RawVerdict::Parse);
        assert_eq!(
            check("RCPT TO:<jörg@dest.test>\r\n".as_bytes(), 100),
            RawVerdict::Parse
        );
    }

    #[test]
    fn bdat_sizes_are_checked_before_parsing() {
        assert_eq!(check(b"BDAT 100 LAST\r\n", 100), RawVerdict::Parse);
        assert_eq!(check(b"bdat 0\r\n", 100), RawVerdict::Parse);
        assert_eq!(
            check(b"BDAT 101\r\n", 100),
            RawVerdict::BdatSize(BdatSize::TooBig(Some(101)))
        );
        assert_eq!(
            check(b"BDAT 99999999999999999999999\r\n", 100),
            RawVerdict::BdatSize(BdatSize::TooBig(None))
        );
        for bad in [
            &b"BDAT\r\n"[..],
            b"BDAT -1\r\n",
            b"BDAT 1x\r\n",
            b"BDAT 1 LAST x\r\n",
        ] {
            assert_eq!(
                check(bad, 100),
                RawVerdict::BdatSize(BdatSize::Unparsable),
                "{bad:?}"
            );
        }
    }
}
