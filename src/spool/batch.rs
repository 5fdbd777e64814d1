//! [`Batcher`]: the group commit shared by arrivals, state changes and removals. A worker
//! takes every request waiting, hands the group to the backend at once (one flush, or one
//! transaction, for all) and answers each request with its own result. Callers wait on a
//! oneshot, never on tokio's blocking pool.
//!
//! The file spool's worker is a thread of its own ([`Batcher::on_thread`]: its work blocks on
//! the disk); the PostgreSQL spool's is a tokio task ([`Batcher::on_task`]: its work is async).

use tokio::sync::{mpsc, oneshot};

use super::{BoxFuture, SpoolError};

/// One answer per request of a group, in order.
pub(super) type Results = Vec<Result<(), SpoolError>>;

/// A handle on a group-commit worker; cheap to clone. The worker ends with the last handle.
pub(super) struct Batcher<T> {
    requests: mpsc::UnboundedSender<(T, oneshot::Sender<Result<(), SpoolError>>)>,
    /// The worker's name, for [`SpoolError::Stopped`].
    name: &'static str,
}

impl<T> Clone for Batcher<T> {
    fn clone(&self) -> Self {
        Batcher {
            requests: self.requests.clone(),
            name: self.name,
        }
    }
}

type Queue<T> = mpsc::UnboundedReceiver<(T, oneshot::Sender<Result<(), SpoolError>>)>;

/// Everything waiting, starting with `first`: the items and where to answer each.
fn group<T>(
    first: (T, oneshot::Sender<Result<(), SpoolError>>),
    waiting: &mut Queue<T>,
) -> (Vec<T>, Vec<oneshot::Sender<Result<(), SpoolError>>>) {
    let mut group = vec![first];
    while let Ok(more) = waiting.try_recv() {
        group.push(more);
    }
    group.into_iter().unzip()
}

fn answer(waiters: Vec<oneshot::Sender<Result<(), SpoolError>>>, results: Results) {
    let mut results = results.into_iter();
    for done in waiters {
        let result = results
            .next()
            .unwrap_or(Err(SpoolError::Stopped("group commit")));
        let _ = done.send(result);
    }
}

impl<T: Send + 'static> Batcher<T> {
    /// Starts the thread `name`, which runs `run` for each group (blocking work).
    pub(super) fn on_thread(
        name: &'static str,
        run: impl Fn(Vec<T>) -> Results + Send + 'static,
    ) -> std::io::Result<Batcher<T>> {
        let (requests, mut waiting) = mpsc::unbounded_channel();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(first) = waiting.blocking_recv() {
                    let (items, waiters) = group(first, &mut waiting);
                    answer(waiters, run(items));
                }
            })?;
        Ok(Batcher { requests, name })
    }

    /// Starts a tokio task that awaits `run` for each group (async work); needs a runtime.
    pub(super) fn on_task(
        name: &'static str,
        run: impl Fn(Vec<T>) -> BoxFuture<'static, Results> + Send + Sync + 'static,
    ) -> Result<Batcher<T>, SpoolError> {
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| SpoolError::NoRuntime(e.to_string()))?;
        let (requests, mut waiting) = mpsc::unbounded_channel();
        runtime.spawn(async move {
            while let Some(first) = waiting.recv().await {
                let (items, waiters) = group(first, &mut waiting);
                answer(waiters, run(items).await);
            }
        });
        Ok(Batcher { requests, name })
    }

    /// Hands `item` to the worker; returns once its group is done (durable).
    pub(super) async fn submit(&self, item: T) -> Result<(), SpoolError> {
        let (done, wait) = oneshot::channel();
        self.requests
            .send((item, done))
            .map_err(|_| SpoolError::Stopped(self.name))?;
        wait.await.map_err(|_| SpoolError::Stopped(self.name))?
    }

    /// Hands every item over at once (so they can share a group); one result per item.
    pub(super) async fn submit_all(&self, items: Vec<T>) -> Results {
        let mut waits = Vec::with_capacity(items.len());
        for item in items {
            let (done, wait) = oneshot::channel();
            let sent = self.requests.send((item, done)).is_ok();
            waits.push((sent, wait));
        }
        let mut out = Vec::with_capacity(waits.len());
        for (sent, wait) in waits {
            out.push(match (sent, wait.await) {
                (true, Ok(result)) => result,
                _ => Err(SpoolError::Stopped(self.name)),
            });
        }
        out
    }
}
