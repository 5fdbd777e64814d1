//! [`FsBackend`]: the file spool ([`Disk`], layout and durability in [`super::fs`]) behind the
//! async [`SpoolBackend`]. Its blocking work stays on threads of its own: one group-commit
//! thread each for new messages, state changes and removals ([`Batcher::on_thread`]), tokio's
//! blocking pool for the rare whole-spool work (recovery, an operator's load or removal).
//! Two things run on the caller's thread, being a few microseconds with no flush: reading a
//! message (a small file read, or a large one mapped) and removing a delivered message that
//! is only a record appended to its segment.

use std::io;
use std::path::Path;
use std::sync::Arc;

use super::batch::Batcher;
use super::fs::Disk;
use super::handle::{NewMessage, Recovery, SpoolBackend};
use super::staged::{MessageBytes, StagedMessage};
use super::{BoxFuture, DeliveryState, QueueId, SpoolError, SpooledMessage};

/// How often removal records written since are flushed: a power cut undoes (delivers again)
/// at most the removals of this last interval.
const REMOVAL_FLUSH: std::time::Duration = std::time::Duration::from_secs(1);

/// The spool in one local directory, async at its boundary (module documentation).
pub struct FsBackend {
    disk: Arc<Disk>,
    committer: Batcher<NewMessage>,
    state_writer: Batcher<(QueueId, DeliveryState)>,
    remover: Batcher<QueueId>,
}

/// A group's results, in the spool's error type.
fn typed(results: Vec<io::Result<()>>) -> Vec<Result<(), SpoolError>> {
    results
        .into_iter()
        .map(|r| r.map_err(SpoolError::Io))
        .collect()
}

impl FsBackend {
    /// Opens (creating if needed) a spool directory and starts its group-commit threads
    /// (`spool-commit`, `spool-state`, `spool-remove`) and the thread that flushes removal
    /// records once a second (`spool-flush`).
    pub fn open(dir: &Path) -> io::Result<FsBackend> {
        let disk = Arc::new(Disk::open(dir)?);
        let d = disk.clone();
        let committer = Batcher::on_thread("spool-commit", move |group| {
            let results = d.write_batch(group);
            super::health::record(&results);
            typed(results)
        })?;
        let d = disk.clone();
        let state_writer = Batcher::on_thread("spool-state", move |group| {
            let results = d.write_state_batch(&group);
            super::health::record(&results);
            typed(results)
        })?;
        let d = disk.clone();
        let remover = Batcher::on_thread("spool-remove", move |ids| typed(d.remove_batch(&ids)))?;
        let d = Arc::downgrade(&disk);
        std::thread::Builder::new()
            .name("spool-flush".into())
            .spawn(move || {
                // Ends with the backend (the last strong reference to the disk).
                while let Some(disk) = {
                    std::thread::sleep(REMOVAL_FLUSH);
                    d.upgrade()
                } {
                    disk.flush_removals();
                }
            })?;
        Ok(FsBackend {
            disk,
            committer,
            state_writer,
            remover,
        })
    }

    /// Runs rare whole-spool work on tokio's blocking pool.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Disk) -> io::Result<T> + Send + 'static,
    ) -> Result<T, SpoolError> {
        let disk = self.disk.clone();
        tokio::task::spawn_blocking(move || f(&disk))
            .await
            .map_err(|_| SpoolError::Stopped("blocking task"))?
            .map_err(SpoolError::Io)
    }

    /// Removes delivered messages: in place where that is a segment record, the rest through
    /// the remover thread (grouped); results in the order of `ids`.
    async fn remove_delivered(&self, ids: &[QueueId]) -> Vec<Result<(), SpoolError>> {
        let in_place: Vec<Option<Result<(), SpoolError>>> = ids
            .iter()
            .map(|id| {
                self.disk
                    .remove_in_place(id)
                    .map(|r| r.map_err(SpoolError::Io))
            })
            .collect();
        let rest: Vec<QueueId> = ids
            .iter()
            .zip(&in_place)
            .filter(|(_, done)| done.is_none())
            .map(|(id, _)| id.clone())
            .collect();
        let mut removed = if rest.is_empty() {
            Vec::new()
        } else {
            self.remover.submit_all(rest).await
        }
        .into_iter();
        in_place
            .into_iter()
            .map(|done| {
                done.unwrap_or_else(|| {
                    removed
                        .next()
                        .unwrap_or(Err(SpoolError::Stopped("spool-remove")))
                })
            })
            .collect()
    }
}

impl SpoolBackend for FsBackend {
    fn stage(&self) -> io::Result<StagedMessage> {
        self.disk.stage()
    }

    fn commit(&self, message: NewMessage) -> BoxFuture<'_, Result<(), SpoolError>> {
        Box::pin(self.committer.submit(message))
    }

    fn recover(&self) -> BoxFuture<'_, Result<Vec<SpooledMessage>, SpoolError>> {
        Box::pin(self.blocking(|disk| disk.recover()))
    }

    fn recover_chunks(&self) -> BoxFuture<'_, Result<Recovery, SpoolError>> {
        Box::pin(async move {
            let started = self.blocking(|disk| disk.begin_recovery(true)).await?;
            let (tx, rx) = tokio::sync::mpsc::channel(4);
            let disk = self.disk.clone();
            std::thread::Builder::new()
                .name("spool-recover".into())
                .spawn(move || match disk.recovered_ids(started) {
                    Ok(ids) => disk.load_chunks(&ids, &|chunk| tx.blocking_send(Ok(chunk)).is_ok()),
                    Err(e) => {
                        let _ = tx.blocking_send(Err(SpoolError::Io(e)));
                    }
                })
                .map_err(SpoolError::Io)?;
            Ok(rx)
        })
    }

    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SpooledMessage, SpoolError>> {
        let id = id.to_string();
        Box::pin(self.blocking(move |disk| disk.load(&id)))
    }

    fn read_message<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<MessageBytes, SpoolError>> {
        // A local file read or mapped: a few microseconds, less than a hop to another thread.
        let read = self.disk.read_message(id).map_err(SpoolError::Io);
        Box::pin(std::future::ready(read))
    }

    fn write_state<'a>(
        &'a self,
        id: &'a str,
        state: DeliveryState,
    ) -> BoxFuture<'a, Result<(), SpoolError>> {
        Box::pin(self.state_writer.submit((id.to_string(), state)))
    }

    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SpoolError>> {
        let id = id.to_string();
        Box::pin(self.blocking(move |disk| disk.remove(&id)))
    }

    fn remove_finished<'a>(
        &'a self,
        ids: &'a [QueueId],
    ) -> BoxFuture<'a, Vec<Result<(), SpoolError>>> {
        Box::pin(self.remove_delivered(ids))
    }
}
