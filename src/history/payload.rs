//! The webhook body and its id: one JSON object per batch, in the Standard Webhooks shape
//! (`type`, `timestamp`, `data`), made once and POSTed unchanged on every retry.
//!
//! ```json
//! {"type":"message.events","timestamp":"2026-12-07T10:00:00Z",
//!  "data":{"events":[{"id":42,"time":1796637600,"kind":"delivered","recipient":"…",…}]}}
//! ```

use rand::RngCore;

/// The body for `events` (each already JSON), made at `now`.
pub fn body(events: &[String], now: u64) -> Vec<u8> {
    let mut out = begin(now);
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(e.as_bytes());
    }
    finish(&mut out);
    out
}

/// The start of a body made at `now`, up to its first event: the writer appends the events'
/// JSON (comma-separated) straight after it, then [`finish`]es it.
pub fn begin(now: u64) -> Vec<u8> {
    let timestamp = chrono::DateTime::from_timestamp(now as i64, 0)
        .map(|t| t.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .unwrap_or_default();
    let mut out = Vec::with_capacity(16 * 1024);
    out.extend_from_slice(
        format!(
            "{{\"type\":\"message.events\",\"timestamp\":\"{timestamp}\",\"data\":{{\"events\":["
        )
        .as_bytes(),
    );
    out
}

/// Closes a body [`begin`] started.
pub fn finish(body: &mut Vec<u8>) {
    body.extend_from_slice(b"]}}");
}

/// A fresh `webhook-id`: `msg_` and 128 random bits in hex.
pub fn new_webhook_id() -> String {
    let mut bytes = [0u8; 16];
    rand::thread_rng().fill_bytes(&mut bytes);
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("msg_{hex}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_body_is_json_with_every_event() {
        let b = body(&["{\"id\":1}".into(), "{\"id\":2}".into()], 0);
        let v: serde_json::Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["type"], "message.events");
        assert_eq!(v["timestamp"], "1970-01-01T00:00:00Z");
        assert_eq!(v["data"]["events"][1]["id"], 2);
        assert_ne!(new_webhook_id(), new_webhook_id());
    }
}
