//! The header block of a message as herald stores it (RFC 5322, CRLF line endings): where it
//! ends, what it holds. Shared by inbound hygiene (adding missing fields) and the queue's
//! bounces (returning the original's headers).

/// Length of the header block including the blank line that ends it (or the whole message
/// when it has no body).
pub(crate) fn header_end(msg: &[u8]) -> usize {
    if msg.starts_with(b"\r\n") {
        return 2;
    }
    msg.windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| i + 4)
        .unwrap_or(msg.len())
}

/// The header fields alone, each with its CRLF, without the blank line that ends them.
pub(crate) fn header_block(msg: &[u8]) -> &[u8] {
    let block = &msg[..header_end(msg)];
    if block == b"\r\n" {
        return &[];
    }
    match block.strip_suffix(b"\r\n\r\n") {
        Some(fields) => &block[..fields.len() + 2],
        None => block,
    }
}

/// True when the header block holds a field named `name` (case-insensitive).
pub(crate) fn has_header(headers: &[u8], name: &str) -> bool {
    headers.split(|&b| b == b'\n').any(|line| {
        line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()..]
                .iter()
                .find(|b| **b != b' ' && **b != b'\t')
                .is_some_and(|b| *b == b':')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_block_stops_at_the_empty_line() {
        let msg = b"A: b\r\nC: d\r\n\r\nbody\r\n";
        assert_eq!(header_end(msg), 14);
        assert_eq!(header_block(msg), b"A: b\r\nC: d\r\n");
        assert_eq!(header_block(b"A: b\r\n"), b"A: b\r\n");
        assert_eq!(header_block(b"\r\nbody"), b"");
        assert!(has_header(b"a: 1\r\nMessage-ID : <x>\r\n", "message-id"));
        assert!(!has_header(b"Message-IDs: <x>\r\n", "Message-ID"));
    }
}
