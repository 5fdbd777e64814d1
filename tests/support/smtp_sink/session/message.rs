//! The message itself: DATA (dot-unstuffed up to CRLF.CRLF) or BDAT chunks (RFC 3030, read
//! exactly, always, even when refused), then the scripted answer and the record of it.

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, BufReader};

use super::{ReceivedMessage, Session, next_scripted, read_line};

impl Session {
    /// Reads the message up to CRLF.CRLF and answers it. `None` on EOF.
    pub(super) async fn data<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        r: &mut BufReader<S>,
    ) -> Option<String> {
        let mut data = Vec::new();
        let mut after_crlf = true;
        loop {
            let line = read_line(r).await?;
            if after_crlf && line == b".\r\n" {
                break;
            }
            let body = if after_crlf && line.starts_with(b".") {
                &line[1..]
            } else {
                &line[..]
            };
            data.extend_from_slice(body);
            after_crlf = line.ends_with(b"\r\n");
        }
        Some(self.end_of_message(data, false).await)
    }

    /// `BDAT <size> [LAST]`: reads the chunk, then answers it (the last one as a message).
    /// `None` on EOF.
    pub(super) async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
        &mut self,
        arg: &str,
        r: &mut BufReader<S>,
    ) -> Option<String> {
        let mut words = arg.split_whitespace();
        let size = words.next().and_then(|n| n.parse::<usize>().ok());
        let last = words.next();
        let (Some(size), true, None) = (
            size,
            last.is_none_or(|w| w.eq_ignore_ascii_case("LAST")),
            words.next(),
        ) else {
            return Some("501 5.5.4 syntax: BDAT <size> [LAST]".into());
        };
        let mut chunk = vec![0; size];
        r.read_exact(&mut chunk).await.ok()?;
        if self.mail.is_none() {
            self.chunks = None;
            return Some("503 5.5.1 MAIL first".into());
        }
        if self.rcpts.is_empty() {
            self.chunks = None;
            return Some("554 5.5.1 no valid recipients".into());
        }
        self.chunks
            .get_or_insert_default()
            .extend_from_slice(&chunk);
        if last.is_none() {
            return Some(format!("250 2.0.0 {size} octets received"));
        }
        let data = self.chunks.take().unwrap_or_default();
        Some(self.end_of_message(data, true).await)
    }

    /// The end of a message: waits while paused, answers with the next scripted reply and
    /// records the message (accepted only with a 2xx actually sent; a DROP is rejected).
    async fn end_of_message(&mut self, data: Vec<u8>, chunked: bool) -> String {
        let mut pause = self.shared.pause_data.subscribe();
        if *pause.borrow_and_update() {
            self.shared
                .held
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            {
                let _log = self.shared.log.lock().expect("log");
                self.shared.changed.notify_all();
            }
            let _ = pause.wait_for(|paused| !*paused).await;
            self.shared
                .held
                .fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
        }
        let reply = next_scripted(&self.shared.data_replies, "250 2.0.0 queued");
        let (mail_from, mail_params) = self.mail.take().unwrap_or_default();
        let message = ReceivedMessage {
            mail_from,
            mail_params,
            rcpts: std::mem::take(&mut self.rcpts),
            data,
            chunked,
            tls: self.tls.clone(),
            sni: self.sni.clone(),
            connection: self.connection,
            authenticated: self.authenticated.clone(),
            helo: self.helo.clone().unwrap_or_default(),
            reply: reply.clone(),
        };
        let mut log = self.shared.log.lock().expect("log");
        if reply.starts_with('2') {
            log.accepted.push(message);
        } else {
            log.rejected.push(message);
        }
        self.shared.changed.notify_all();
        reply
    }
}
