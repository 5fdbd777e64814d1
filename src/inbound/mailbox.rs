//! Strict reading of the `From:` and `Sender:` header fields (RFC 5322 §3.4 mailbox and
//! mailbox-list, with RFC 6532 UTF-8). Sender policy and DKIM alignment act on these
//! addresses, so herald must read them exactly as a mail client or a DMARC verifier would:
//! anything a lenient parser might read one way and a client another
//! (`evil@bad.test@example.test`, `evil\@bad.test@example.test`) is refused instead.

/// The unfolded values of every header field called `name` (case-insensitive) in the header
/// block `headers` (bytes up to and including the blank line).
pub(crate) fn field_values(headers: &[u8], name: &str) -> Vec<Vec<u8>> {
    let mut out: Vec<Vec<u8>> = Vec::new();
    let mut current: Option<Vec<u8>> = None;
    for line in headers.split(|&b| b == b'\n') {
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if line.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            if let Some(v) = current.as_mut() {
                v.extend_from_slice(line);
            }
            continue;
        }
        if let Some(v) = current.take() {
            out.push(v);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            continue;
        };
        let field = &line[..colon];
        let field = field
            .strip_suffix(b" ")
            .or_else(|| field.strip_suffix(b"\t"))
            .unwrap_or(field);
        if field.eq_ignore_ascii_case(name.as_bytes()) {
            current = Some(line[colon + 1..].to_vec());
        }
    }
    if let Some(v) = current {
        out.push(v);
    }
    out
}

/// What is wrong with an address field's syntax, in words for the sender's refusal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(crate) struct AddressSyntax(pub String);

impl From<&str> for AddressSyntax {
    fn from(s: &str) -> AddressSyntax {
        AddressSyntax(s.to_string())
    }
}

/// Parses a mailbox-list (the `From:` field body): one or more mailboxes separated by
/// commas. Returns each mailbox's address as `local@domain` (a quoted local part keeps its
/// quotes), or what is wrong.
pub(crate) fn mailbox_list(value: &[u8]) -> Result<Vec<String>, AddressSyntax> {
    let text =
        std::str::from_utf8(value).map_err(|_| AddressSyntax::from("it is not valid UTF-8"))?;
    let mut p = Parser {
        s: text.as_bytes(),
        i: 0,
    };
    let mut out = vec![p.mailbox()?];
    loop {
        p.cfws()?;
        match p.peek() {
            None => return Ok(out),
            Some(b',') => {
                p.i += 1;
                out.push(p.mailbox()?);
            }
            Some(c) => {
                return Err(AddressSyntax(format!(
                    "unexpected {:?} after the address {}",
                    c as char,
                    out.last().map(String::as_str).unwrap_or("")
                )));
            }
        }
    }
}

struct Parser<'a> {
    s: &'a [u8],
    i: usize,
}

/// RFC 5322 atext, plus any UTF-8 byte (RFC 6532).
fn is_atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b) || b >= 0x80
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.s.get(self.i).copied()
    }

    /// Skips folding white space and (nested) comments.
    fn cfws(&mut self) -> Result<(), AddressSyntax> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\r' | b'\n') => self.i += 1,
                Some(b'(') => self.comment()?,
                _ => return Ok(()),
            }
        }
    }

    fn comment(&mut self) -> Result<(), AddressSyntax> {
        let mut depth = 0usize;
        while let Some(b) = self.peek() {
            self.i += 1;
            match b {
                b'(' => depth += 1,
                b')' => {
                    depth -= 1;
                    if depth == 0 {
                        return Ok(());
                    }
                }
                b'\\' => self.i += 1,
                _ => {}
            }
        }
        Err("a comment is not closed".into())
    }

    fn atom(&mut self) -> Option<&str> {
        let start = self.i;
        while self.peek().is_some_and(is_atext) {
            self.i += 1;
        }
        (self.i > start).then(|| std::str::from_utf8(&self.s[start..self.i]).unwrap_or(""))
    }

    fn dot_atom(&mut self) -> Option<String> {
        let mut out = self.atom()?.to_string();
        while self.peek() == Some(b'.') && self.s.get(self.i + 1).is_some_and(|b| is_atext(*b)) {
            self.i += 1;
            out.push('.');
            out.push_str(self.atom()?);
        }
        Some(out)
    }

    /// A quoted string, returned with its quotes and escapes as written.
    fn quoted(&mut self) -> Result<String, AddressSyntax> {
        let start = self.i;
        self.i += 1;
        loop {
            match self.peek() {
                None => return Err("a quoted string is not closed".into()),
                Some(b'"') => {
                    self.i += 1;
                    return Ok(String::from_utf8_lossy(&self.s[start..self.i]).into_owned());
                }
                Some(b'\\') => {
                    if self
                        .s
                        .get(self.i + 1)
                        .is_none_or(|b| *b < 0x20 && *b != b'\t')
                    {
                        return Err("a quoted string has a bad escape".into());
                    }
                    self.i += 2;
                }
                Some(b) if b < 0x20 && b != b'\t' => {
                    return Err("a quoted string holds a control character".into());
                }
                Some(_) => self.i += 1,
            }
        }
    }

    /// One word of a display name or local part: an atom or a quoted string.
    fn word(&mut self) -> Result<Option<String>, AddressSyntax> {
        self.cfws()?;
        match self.peek() {
            Some(b'"') => Ok(Some(self.quoted()?)),
            _ => Ok(self.atom().map(str::to_string)),
        }
    }

    /// `name-addr / addr-spec`.
    fn mailbox(&mut self) -> Result<String, AddressSyntax> {
        self.cfws()?;
        let start = self.i;
        // Try name-addr: a phrase (possibly empty) then `<addr-spec>`.
        let mut words = 0;
        loop {
            self.cfws()?;
            // Dots between words are obsolete phrase syntax (RFC 5322 §4.1), still common.
            if words > 0 && self.peek() == Some(b'.') {
                self.i += 1;
                continue;
            }
            if self.word()?.is_none() {
                break;
            }
            words += 1;
        }
        self.cfws()?;
        if self.peek() == Some(b'<') {
            self.i += 1;
            let addr = self.addr_spec()?;
            self.cfws()?;
            if self.peek() != Some(b'>') {
                return Err(AddressSyntax(format!("<{addr} is not closed with '>'")));
            }
            self.i += 1;
            return Ok(addr);
        }
        // Otherwise it must be a bare addr-spec.
        self.i = start;
        self.addr_spec()
    }

    /// `local-part "@" domain`: exactly one `@` outside quotes.
    fn addr_spec(&mut self) -> Result<String, AddressSyntax> {
        self.cfws()?;
        let local = match self.peek() {
            Some(b'"') => self.quoted()?,
            _ => self
                .dot_atom()
                .ok_or_else(|| AddressSyntax(self.unexpected("an address")))?,
        };
        self.cfws()?;
        if self.peek() != Some(b'@') {
            return Err(AddressSyntax(
                self.unexpected(&format!("'@' after {local}")),
            ));
        }
        self.i += 1;
        self.cfws()?;
        let domain = if self.peek() == Some(b'[') {
            let start = self.i;
            while let Some(b) = self.peek() {
                self.i += 1;
                if b == b']' {
                    break;
                }
                if b == b'[' && self.i - 1 != start || b == b'\\' {
                    return Err("a domain literal is malformed".into());
                }
            }
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned()
        } else {
            let d = self.dot_atom().ok_or_else(|| {
                AddressSyntax(self.unexpected(&format!("a domain after {local}@")))
            })?;
            if !d
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.' || b >= 0x80)
            {
                return Err(AddressSyntax(format!("{d} is not a domain name")));
            }
            d
        };
        Ok(format!("{local}@{domain}"))
    }

    fn unexpected(&self, wanted: &str) -> String {
        match self.peek() {
            None => format!("expected {wanted} but the field ends"),
            Some(c) => format!("expected {wanted}, found {:?}", c as char),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(s: &str) -> Result<Vec<String>, AddressSyntax> {
        mailbox_list(s.as_bytes())
    }

    #[test]
    fn ordinary_from_fields_parse() {
        assert_eq!(list(" a@example.test").unwrap(), vec!["a@example.test"]);
        assert_eq!(
            list(" \"Billing, Inc\" <billing@shop.test>").unwrap(),
            vec!["billing@shop.test"]
        );
        assert_eq!(
            list(" App (the app) <app@example.test>, b@x.test").unwrap(),
            vec!["app@example.test", "b@x.test"]
        );
        assert_eq!(
            list(" =?utf-8?q?J=C3=B6rg?= <j@example.test>").unwrap(),
            vec!["j@example.test"]
        );
        assert_eq!(
            list(" Jörg <jörg@exämple.test>").unwrap(),
            vec!["jörg@exämple.test"]
        );
        assert_eq!(
            list(" \"a b\"@example.test").unwrap(),
            vec!["\"a b\"@example.test"]
        );
        assert_eq!(
            list(" J. Smith <j@example.test>").unwrap(),
            vec!["j@example.test"]
        );
    }

    #[test]
    fn ambiguous_from_fields_are_refused() {
        for bad in [
            " evil@bad.test@example.test",
            " evil\\@bad.test@example.test",
            " <evil@bad.test@example.test>",
            " evil@bad.test <a@example.test",
            " a@example.test b@bad.test",
            " <a@example.test> b@bad.test",
            " a@example.test,",
            " ",
            " @example.test",
            " a@",
            " a@exa_mple.test",
            " \"unterminated@example.test",
        ] {
            assert!(list(bad).is_err(), "{bad:?} was accepted: {:?}", list(bad));
        }
    }

    #[test]
    fn fields_are_found_and_unfolded() {
        let h = b"From: App\r\n <app@example.test>\r\nsender : s@example.test\r\nX: y\r\n\r\n";
        assert_eq!(
            field_values(h, "From"),
            vec![b" App <app@example.test>".to_vec()]
        );
        assert_eq!(field_values(h, "Sender"), vec![b" s@example.test".to_vec()]);
        assert!(field_values(h, "Reply-To").is_empty());
    }
}
