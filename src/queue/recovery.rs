//! The queue's side of recovery at start (issue 29): the spool's recovered messages taken
//! into the table chunk by chunk as the spool reads them ([`crate::spool::Recovery`]), in the
//! foreground for the first second, then in the background while herald already works.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::manager::Inner;
use crate::spool::Recovery;

/// How long a start waits for recovery before going on with it in the background.
pub(super) const RECOVERY_IN_FOREGROUND: Duration = Duration::from_secs(1);

/// The spool's recovered messages on their way into the table.
pub(super) struct Recovered {
    chunks: Recovery,
    /// Messages taken into the schedule so far.
    pub(super) waiting: u64,
    /// When recovery began.
    pub(super) started: Instant,
}

impl Recovered {
    /// Recovery of the chunks `chunks`, from now.
    pub(super) fn new(chunks: Recovery) -> Recovered {
        Recovered {
            chunks,
            waiting: 0,
            started: Instant::now(),
        }
    }

    /// Takes recovered messages into the table until recovery is done (true) or `deadline`
    /// passes (false). Finished messages (a crash after their last state was recorded) are
    /// removed from the spool.
    pub(super) async fn take_until(
        &mut self,
        inner: &Arc<Inner>,
        deadline: Option<tokio::time::Instant>,
    ) -> bool {
        loop {
            let next = match deadline {
                Some(at) => match tokio::time::timeout_at(at, self.chunks.recv()).await {
                    Ok(next) => next,
                    Err(_) => return false,
                },
                None => self.chunks.recv().await,
            };
            let chunk = match next {
                None => return true,
                Some(Ok(chunk)) => chunk,
                Some(Err(e)) => {
                    tracing::error!(error = %e,
                        "cannot read part of the spool; what was not read waits for the next start");
                    continue;
                }
            };
            let mut finished = Vec::new();
            {
                let mut table = inner.table();
                for msg in chunk {
                    // Already there: adopted by the lease keeper meanwhile (a cluster).
                    if table.contains(&msg.id) {
                        continue;
                    }
                    if msg.state.is_finished() {
                        finished.push(msg.id);
                    } else {
                        self.waiting += 1;
                        table.insert(msg, false);
                    }
                }
            }
            for (id, removed) in finished
                .iter()
                .zip(inner.spool.remove_batch(&finished).await)
            {
                if let Err(e) = removed {
                    tracing::error!(queue_id = %id, error = %e, "cannot remove a finished message");
                }
            }
            inner.wake.notify_one();
        }
    }
}
