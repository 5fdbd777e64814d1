//! Recovering the file spool ([`super::Disk`]) at start, in two parts: the quick one under the
//! spool's lock before anything new is stored (torn segment tails cut, empty segments and
//! partial files in `tmp/` removed), and the slow one that may run while herald already
//! works (the `msg/` directory listed, each message's envelope and state read, on a few
//! threads, chunk by chunk). The slow part only touches messages older than the start
//! ([`Started`]), which nothing else touches until the queue has them.

use std::fs;
use std::io;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::Disk;
use crate::spool::{QueueId, SpooledMessage};

/// Messages handed over at a time by [`Disk::load_chunks`].
#[cfg(not(test))]
const CHUNK: usize = 1024;
#[cfg(test)]
const CHUNK: usize = 32;

/// What the quick part of recovery leaves to the slow part.
pub(in crate::spool) struct Started {
    /// The messages held in segments when recovery began, sorted.
    in_segments: Vec<QueueId>,
    /// Only ids sorting before this are recovered (those stored before the start); `None`
    /// when nothing else runs on the spool meanwhile.
    before: Option<String>,
}

impl Started {
    fn is_recovered(&self, id: &str) -> bool {
        self.before.as_deref().is_none_or(|b| id < b)
    }
}

impl Disk {
    /// The quick part, under the spool's lock; with `live`, messages stored from now on are
    /// left out of the slow part (the queue gets them as they arrive).
    pub(in crate::spool) fn begin_recovery(&self, live: bool) -> io::Result<Started> {
        self.segments.clean()?;
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove partial spool file");
            }
        }
        let mut in_segments = self.segments.ids();
        in_segments.sort_unstable();
        let before = live.then(|| format!("{:012x}", crate::clock::now_micros()));
        Ok(Started {
            in_segments,
            before,
        })
    }

    /// The ids of every message to recover, sorted: the files in `msg/` and the messages in
    /// segments. A message moved out of its segment whose segment copy was not removed yet
    /// keeps its file (the copy goes); a state without its message (a crash in a removal)
    /// is deleted.
    pub(in crate::spool) fn recovered_ids(&self, started: Started) -> io::Result<Vec<QueueId>> {
        let mut ids = Vec::new();
        let mut states = Vec::new();
        for entry in fs::read_dir(&self.msg)? {
            let name = entry?.file_name();
            let Some((stem, ext)) = name.to_str().and_then(|n| n.rsplit_once('.')) else {
                continue;
            };
            if stem.is_empty() || !started.is_recovered(stem) {
                continue;
            }
            match ext {
                "msg" => ids.push(stem.to_string()),
                "state" => states.push(stem.to_string()),
                _ => {}
            }
        }
        let in_segments = &started.in_segments;
        let moved: Vec<&str> = ids
            .iter()
            .filter(|id| in_segments.binary_search(id).is_ok())
            .map(String::as_str)
            .collect();
        self.segments.remove(&moved, true)?;
        ids.extend(
            started
                .in_segments
                .iter()
                .filter(|id| started.is_recovered(id))
                .cloned(),
        );
        ids.sort_unstable();
        ids.dedup();
        for orphan in states.iter().filter(|s| ids.binary_search(s).is_err()) {
            let _ = fs::remove_file(self.state_path(orphan)?);
        }
        Ok(ids)
    }

    /// Reads the messages `ids` on a few threads, [`CHUNK`] at a time, handing each chunk to
    /// `each` (which answers false to stop). An unreadable message is logged and left in
    /// place for the operator.
    pub(in crate::spool) fn load_chunks(
        &self,
        ids: &[QueueId],
        each: &(dyn Fn(Vec<SpooledMessage>) -> bool + Sync),
    ) {
        let threads = std::thread::available_parallelism()
            .map_or(2, |n| n.get())
            .clamp(1, 4);
        let next = AtomicUsize::new(0);
        let work = || {
            loop {
                let start = next.fetch_add(CHUNK, Ordering::Relaxed);
                let Some(chunk) = ids.get(start..(start + CHUNK).min(ids.len())) else {
                    return;
                };
                if chunk.is_empty() {
                    return;
                }
                let mut out = Vec::with_capacity(chunk.len());
                for id in chunk {
                    match self.load(id) {
                        Ok(m) => out.push(m),
                        Err(e) => tracing::error!(queue_id = %id, error = %e,
                            "unreadable spool entry left in place for the operator"),
                    }
                }
                if !each(out) {
                    // Stop the other threads too.
                    next.store(ids.len(), Ordering::Relaxed);
                    return;
                }
            }
        };
        std::thread::scope(|s| {
            for _ in 1..threads {
                s.spawn(work);
            }
            work();
        });
    }

    /// Recovery all at once (`herald queue` offline, tests): every message, sorted by id.
    pub(in crate::spool) fn recover(&self) -> io::Result<Vec<SpooledMessage>> {
        let started = self.begin_recovery(false)?;
        let ids = self.recovered_ids(started)?;
        let out = Mutex::new(Vec::with_capacity(ids.len()));
        self.load_chunks(&ids, &|chunk| {
            out.lock().unwrap_or_else(|p| p.into_inner()).extend(chunk);
            true
        });
        let mut out = out.into_inner().unwrap_or_else(|p| p.into_inner());
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }
}
