//! `[delivery] capture_dir`: delivery into files instead of MX hosts, for development and
//! staging. Each message is written exactly as the receiving MX would get it — signed, with
//! herald's `Received:` — behind a `Return-Path:` and one `Delivered-To:` per recipient, as a
//! mailbox delivery would add them. The file is fsynced before the recipients count as
//! delivered, so a capture is as durable as a real delivery. Nothing leaves the machine.

use std::path::{Path, PathBuf};

use super::job::Job;
use super::outcome::{Answer, Failure, RecipientResult};

/// Where captured messages go.
#[derive(Debug, Clone)]
pub(crate) struct Capture {
    dir: PathBuf,
}

impl Capture {
    /// Captures into `dir` (created on first use).
    pub(crate) fn new(dir: &Path) -> Capture {
        Capture {
            dir: dir.to_path_buf(),
        }
    }

    /// The file a job is written to: `<queue id>.<recipient domain>.eml`, one per domain, as
    /// one SMTP transaction per domain would be.
    pub(crate) fn path_for(&self, job: &Job) -> PathBuf {
        let domain: String = job
            .domain
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '.' || c == '-' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        self.dir.join(format!("{}.{domain}.eml", job.queue_id))
    }

    /// Writes `job` to its file; every recipient is delivered (`250`) once the file is durable,
    /// or deferred with the I/O error.
    pub(crate) async fn deliver(&self, job: &Job) -> Vec<RecipientResult> {
        let path = self.path_for(job);
        let dir = self.dir.clone();
        let bytes = render(job);
        let written = tokio::task::spawn_blocking(move || {
            crate::fsutil::write_atomic(&dir, &path, &bytes).map(|()| path)
        })
        .await;
        let outcome = match written {
            Ok(Ok(path)) => {
                tracing::info!(queue_id = %job.queue_id, domain = %job.domain,
                    file = %path.display(), "captured instead of delivered ([delivery] capture_dir)");
                Ok(Answer::new(
                    250,
                    None,
                    format!("captured in {}", path.display()),
                ))
            }
            Ok(Err(e)) => Err(Failure::Local(format!(
                "cannot write to [delivery] capture_dir {}: {e}",
                self.dir.display()
            ))),
            Err(e) => Err(Failure::Local(format!("capture task failed: {e}"))),
        };
        job.recipients
            .iter()
            .map(|_| RecipientResult {
                outcome: outcome.clone(),
                host: Some(format!("capture_dir {}", self.dir.display())),
                tls: None,
                tls_policy: None,
            })
            .collect()
    }
}

/// The captured file's bytes: the delivery headers, then the message as sent.
fn render(job: &Job) -> Vec<u8> {
    let message: &[u8] = job.message.as_ref().as_ref();
    let mut out = Vec::with_capacity(message.len() + 64 * (job.recipients.len() + 1));
    out.extend_from_slice(format!("Return-Path: <{}>\r\n", job.mail_from).as_bytes());
    for r in &job.recipients {
        out.extend_from_slice(format!("Delivered-To: {r}\r\n").as_bytes());
    }
    out.extend_from_slice(message);
    out
}
