//! The spool in one local directory: [`Disk`], the blocking file work behind
//! [`super::FsBackend`] (which runs it on its own threads).
//!
//! Layout: `tmp/` holds files being written (large messages being received included;
//! discarded on recovery); `seg/` holds small messages, many to a file (see
//! [`super::segment`]); `msg/ID.msg` is a message of its own: the envelope as one JSON line
//! followed by the message bytes; `msg/ID.state` is the delivery state as JSON, replaced
//! atomically (absent until the first attempt).
//!
//! Which message goes where: one received in memory (it never outgrew the staging buffer,
//! 64 KB) is appended to a segment at commit, so it costs no file of its own; a larger one
//! was received into `tmp/` with [`HEAD_ROOM`] bytes left free in front of it; at commit the
//! envelope line (padded with spaces, which JSON ignores) and herald's headers are written
//! into that room, so the file becomes the spooled message by a rename. When they do not fit
//! (very many recipients), a new file is written and the body copied after them. A segment
//! message whose delivery has to wait for a later attempt moves to `msg/` when its first
//! state is written; recovery prefers the file should both exist.
//!
//! Durability of a group of new messages: the segment records are written with one write;
//! then one `fdatasync` of the segment flushes them (or, when the group also has files, one
//! syncfs(2) flushes everything — only on file systems known to pass it on, see
//! [`crate::fsutil::syncfs_flushes`]; elsewhere the segment and each file get their own
//! `fdatasync`), the files are renamed into `msg/`, and the directory is fsynced once for the
//! whole group.
//!
//! State changes are grouped the same way ([`SpoolBackend::write_state_batch`]): each state,
//! and each message moving out of its segment, is written to `tmp/` unflushed; one syncfs(2)
//! flushes them all (or each is flushed on its own, as above), they are renamed into `msg/`,
//! and the directory is fsynced once.
//!
//! Removals are grouped too ([`SpoolBackend::remove_batch`]): a segment message gets a
//! removal record (written, not flushed at once: the `spool-flush` thread flushes them once a
//! second, so a power failure may bring back the last second's, delivered twice, never lost),
//! a file is unlinked and the directory fsynced once. The backend remembers which messages
//! have a `.state` file (written here, or found when loading), so removing a message
//! delivered at its first attempt touches no state file; should it ever miss one, recovery
//! removes the orphaned state at the next start.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use super::handle::NewMessage;
use super::segment::Segments;
use super::staged::{MessageBytes, StagedMessage};
use super::{DeliveryState, Envelope, IdKey, QueueId, SpooledMessage, id_key};
use crate::fsutil::{sync_dir, sync_filesystem, syncfs_flushes};

/// Room kept in front of a message being received, for its envelope line and herald's
/// headers (DKIM signatures, `Received:`); enough for a few dozen recipients.
const HEAD_ROOM: u64 = 8 * 1024;

/// Spool files up to this size are read into memory for delivery rather than mapped.
const READ_WHOLE: u64 = 64 * 1024;

/// A spool in one local directory (layout in the module documentation); its methods block
/// on the disk.
pub(super) struct Disk {
    tmp: PathBuf,
    msg: PathBuf,
    /// `tmp/` and `msg/` kept open for syncfs(2) and the directory fsyncs (no open and close
    /// per group).
    tmp_dir: File,
    msg_dir: File,
    /// Messages held in a segment that have a `.state` file all the same: those whose own
    /// file and state were just renamed into `msg/` while their segment copy is not removed
    /// yet (inside [`Disk::write_state_batch`]), and any whose state another process wrote
    /// (found on loading). Any other message in a segment has no `.state` (writing the first
    /// state moves it out), and one outside may have one: so no set of every deferred message
    /// is kept (36 bytes each at a million deferred), only this one of a few.
    segment_states: Mutex<HashSet<IdKey>>,
    /// Small messages, many to a file.
    segments: Segments,
    /// Whether one syncfs(2) flushes a group's files (ext4, xfs, btrfs); elsewhere (FUSE, NFS,
    /// anything not known to pass it on) each file is flushed on its own before it is renamed.
    syncfs: bool,
}

impl Disk {
    /// One directory fsync for a group of entries made or removed in `msg/`; if it fails, every
    /// entry that had succeeded fails with it (its durability is not known).
    fn sync_msg_dir(&self, results: &mut [io::Result<()>]) {
        if results.iter().any(|r| r.is_ok())
            && let Err(e) = self.msg_dir.sync_all()
        {
            let kind = e.kind();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io::Error::new(
                    kind,
                    format!("syncing spool directory: {e}"),
                ));
            }
        }
    }

    /// Opens (creating if needed) a spool directory.
    pub(super) fn open(dir: &Path) -> io::Result<Disk> {
        let tmp = dir.join("tmp");
        let msg = dir.join("msg");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&msg)?;
        let segments = Segments::open(dir)?;
        sync_dir(dir)?;
        let tmp_dir = File::open(&tmp)?;
        let syncfs = syncfs_flushes(&tmp_dir);
        if !syncfs {
            tracing::info!(spool = %dir.display(),
                "the spool's file system is not known to flush on syncfs(2): each file is fsynced on its own");
        }
        Ok(Disk {
            tmp_dir,
            syncfs,
            msg_dir: File::open(&msg)?,
            tmp,
            msg,
            segment_states: Mutex::new(HashSet::new()),
            segments,
        })
    }

    fn segment_states(&self) -> MutexGuard<'_, HashSet<IdKey>> {
        self.segment_states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Whether `id`, held in a segment, may have a `.state` file (true for an id that has
    /// no key).
    fn segment_message_has_state(&self, id: &str) -> bool {
        id_key(id).is_none_or(|key| self.segment_states().contains(&key))
    }

    /// Forgets that segment message `id` has a `.state` file (it left the segment).
    fn forget_segment_state(&self, id: &str) {
        if let Some(key) = id_key(id) {
            let mut set = self.segment_states();
            if set.remove(&key) && set.is_empty() {
                // A burst of deferrals moves thousands at once: not kept for the next.
                set.shrink_to(64);
            }
        }
    }

    /// Unlinks a message's file (when it has one: a segment message has none) and its state
    /// (one already gone is fine: most messages delivered at once never had one); no
    /// directory flush.
    fn unlink(&self, id: &str) -> io::Result<()> {
        let path = self.msg_path(id)?;
        if !self.segments.contains(id) {
            ignore_missing(fs::remove_file(path))?;
        }
        ignore_missing(fs::remove_file(self.state_path(id)?))
    }

    fn msg_path(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{id:?} is not a queue id"),
            ));
        }
        Ok(self.msg.join(format!("{id}.msg")))
    }

    fn state_path(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.msg_path(id)?.with_extension("state"))
    }
}

impl Disk {
    /// A new temporary file in `tmp/`, with room for the head in front.
    pub(super) fn stage(&self) -> io::Result<StagedMessage> {
        StagedMessage::create_in(&self.tmp, HEAD_ROOM)
    }

    pub(super) fn write_batch(&self, batch: Vec<NewMessage>) -> Vec<io::Result<()>> {
        // Append the small messages to the segment with one write; complete every file;
        // flush it all at once (the segment alone: fdatasync; with files: one syncfs(2));
        // then rename the files into place and sync the directory once.
        let prepared: Vec<(String, io::Result<Prepared>)> = batch
            .into_iter()
            .map(|m| (m.id.clone(), prepare(self, m)))
            .collect();
        let has_files = prepared
            .iter()
            .any(|(_, p)| matches!(p, Ok(Prepared::File(_))));
        let records: Vec<(&str, [&[u8]; 3])> = prepared
            .iter()
            .filter_map(|(id, p)| match p {
                Ok(Prepared::Record(line, head, body)) => {
                    Some((id.as_str(), [&line[..], &head[..], &body[..]]))
                }
                _ => None,
            })
            .collect();
        let appended = if records.is_empty() {
            Ok(())
        } else {
            self.segments.append(&records, !has_files || !self.syncfs)
        };
        let flushed = match appended {
            Ok(()) if has_files && self.syncfs => sync_filesystem(&self.tmp_dir),
            Ok(()) if has_files => prepared
                .iter()
                .filter_map(|(_, p)| match p {
                    Ok(Prepared::File(tmp)) => Some(tmp.as_file().sync_data()),
                    _ => None,
                })
                .collect(),
            other => other,
        };
        if let Err(e) = flushed {
            // Every message of the group gets 451 and its client sends it again: its segment
            // record must not come back at recovery (a second copy) nor keep the segment
            // alive, so it gets a removal record now (best effort: the disk is failing).
            let ids: Vec<&str> = records.iter().map(|(id, _)| *id).collect();
            if let Err(e) = self.segments.remove(&ids, false) {
                tracing::warn!(error = %e, "cannot mark an unflushed group removed in its spool segment");
            }
            return prepared
                .iter()
                .map(|_| Err(io::Error::new(e.kind(), format!("syncing spool: {e}"))))
                .collect();
        }
        let mut results: Vec<io::Result<()>> = prepared
            .into_iter()
            .map(|(id, p)| match p? {
                Prepared::Record(..) => Ok(()),
                Prepared::File(tmp) => tmp
                    .persist(self.msg_path(&id)?)
                    .map(drop)
                    .map_err(|e| e.error),
            })
            .collect();
        if has_files {
            self.sync_msg_dir(&mut results);
        }
        results
    }

    pub(super) fn load(&self, id: &str) -> io::Result<SpooledMessage> {
        let path = self.msg_path(id)?;
        let (envelope, size) = match self.segments.read(id)? {
            Some(payload) => {
                let line = after_first_line(&payload);
                (
                    parse_envelope(&payload[..line], &path)?,
                    (payload.len() - line) as u64,
                )
            }
            None => {
                let file = File::open(&path)?;
                let total = file.metadata()?.len();
                let mut reader = BufReader::new(file);
                let mut header = Vec::new();
                reader.read_until(b'\n', &mut header)?;
                let size = total.saturating_sub(header.len() as u64);
                (parse_envelope(&header, &path)?, size)
            }
        };
        let state = match fs::read(self.state_path(id)?) {
            Ok(bytes) => {
                if self.segments.contains(id)
                    && let Some(key) = id_key(id)
                {
                    // Written by another process: the segment copy is stale.
                    self.segment_states().insert(key);
                }
                serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{id}.state: bad delivery state: {e}"),
                    )
                })?
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => DeliveryState::new(&envelope),
            Err(e) => return Err(e),
        };
        Ok(SpooledMessage {
            id: id.to_string(),
            envelope,
            size,
            state,
        })
    }

    pub(super) fn read_message(&self, id: &str) -> io::Result<MessageBytes> {
        if let Some(mut payload) = self.segments.read(id)? {
            payload.drain(..after_first_line(&payload));
            return Ok(MessageBytes::from(payload));
        }
        let mut file = File::open(self.msg_path(id)?)?;
        let total = file.metadata()?.len();
        if total <= READ_WHOLE {
            // One read for the whole file: cheaper than mapping it (mmap, page faults, and a
            // munmap that interrupts the other cores running herald's threads).
            // Exactly the size known from fstat: one read (read_to_end would stat and seek
            // again, then read once more to see the end).
            let mut bytes = vec![0; total as usize];
            file.read_exact(&mut bytes)?;
            bytes.drain(..after_first_line(&bytes));
            return Ok(MessageBytes::from(bytes));
        }
        let mut reader = BufReader::new(&file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let start = header.len() as u64;
        MessageBytes::map(&file, start, total.saturating_sub(start))
    }

    /// One state, written as a group of one (tests: another process writing).
    #[cfg(test)]
    pub(super) fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        let batch = [(id.to_string(), state.clone())];
        self.write_state_batch(&batch)
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("no result for the state written")))
    }

    pub(super) fn write_state_batch(
        &self,
        batch: &[(QueueId, DeliveryState)],
    ) -> Vec<io::Result<()>> {
        // Every file of the group (the state, and for a message still in a segment its own
        // message file) is written to tmp/ unflushed, then one syncfs(2) makes them all
        // durable, then they are renamed into msg/ and the directory is synced once: two
        // flushes for the group instead of one per file (an outage defers thousands at once).
        let mut written: Vec<io::Result<StateFiles>> = batch
            .iter()
            .map(|(id, state)| self.write_state_files(id, state))
            .collect();
        if self.syncfs
            && written.iter().any(|w| w.is_ok())
            && let Err(e) = sync_filesystem(&self.tmp_dir)
        {
            for w in written.iter_mut().filter(|w| w.is_ok()) {
                *w = Err(io::Error::new(e.kind(), format!("syncing spool: {e}")));
            }
        }
        let mut moved = Vec::new();
        let mut results: Vec<io::Result<()>> = batch
            .iter()
            .zip(written)
            .map(|((id, _), files)| {
                let files = files?;
                if let Some((tmp, target)) = files.message {
                    fs::rename(tmp, target)?;
                    moved.push(id.as_str());
                }
                let (tmp, target) = files.state;
                fs::rename(tmp, target)?;
                if moved.last() == Some(&id.as_str())
                    && let Some(key) = id_key(id)
                {
                    self.segment_states().insert(key);
                }
                Ok(())
            })
            .collect();
        self.sync_msg_dir(&mut results);
        // Only once the moved messages' files are durable may their segment copies go (no
        // flush needed: should the removal be lost, recovery keeps the file).
        if let Err(e) = self.segments.remove(&moved, false) {
            tracing::warn!(error = %e, "cannot record moved messages in their spool segment");
        }
        for id in moved {
            self.forget_segment_state(id);
        }
        results
    }

    pub(super) fn remove(&self, id: &str) -> io::Result<()> {
        // An operator's removal (or a message taken for a bounce) is flushed.
        let ids = [id.to_string()];
        self.remove_ids(&ids, true)
            .pop()
            .unwrap_or_else(|| Err(io::Error::other("no result for the removal")))
    }

    pub(super) fn remove_batch(&self, ids: &[QueueId]) -> Vec<io::Result<()>> {
        // Removal records are written but not flushed: the page cache survives a killed
        // herald, and after a power failure a message may be delivered again (Postfix does
        // not flush its removals either); the next group's flush usually carries them.
        self.remove_ids(ids, false)
    }

    /// Flushes the removal records of the last second (see [`Segments::flush_removals`]).
    pub(super) fn flush_removals(&self) {
        if let Err(e) = self.segments.flush_removals() {
            tracing::warn!(error = %e, "cannot flush removal records in the spool's segments");
        }
    }

    pub(super) fn remove_in_place(&self, id: &str) -> Option<io::Result<()>> {
        // A message moved out of its segment (it has a state file) needs unlinks and a
        // directory flush: the remover thread's work. A segment emptied here is deleted here
        // too, once per ~1 MB of mail.
        if !self.segments.contains(id) || self.segment_message_has_state(id) {
            return None;
        }
        let removed = self.segments.remove(&[id], false);
        Some(removed.map_err(|e| io::Error::new(e.kind(), format!("spool segment: {e}"))))
    }
}

impl Disk {
    /// Removes messages: a removal record for each segment message (flushed with `flush`),
    /// an unlink for each file, then one directory fsync when a file went.
    fn remove_ids(&self, ids: &[QueueId], flush: bool) -> Vec<io::Result<()>> {
        let in_segments: Vec<&str> = ids
            .iter()
            .filter(|id| self.segments.contains(id))
            .map(String::as_str)
            .collect();
        let segments_done = self.segments.remove(&in_segments, flush);
        let mut files_touched = false;
        let mut results: Vec<io::Result<()>> = ids
            .iter()
            .map(|id| {
                if in_segments.contains(&id.as_str()) {
                    if let Err(e) = &segments_done {
                        return Err(io::Error::new(e.kind(), format!("spool segment: {e}")));
                    }
                    if !self.segment_message_has_state(id) {
                        return Ok(());
                    }
                    self.forget_segment_state(id);
                }
                files_touched = true;
                self.unlink(id)
            })
            .collect();
        if files_touched {
            self.sync_msg_dir(&mut results);
        }
        results
    }
}

/// Every message in the spool directory `dir` as stored — its id and entry (the envelope as
/// one JSON line, then the message) — read without changing anything, so it is safe while a
/// herald runs (for inspection and tests; a message being moved may be listed twice).
pub fn spooled_entries(dir: &Path) -> io::Result<Vec<(QueueId, Vec<u8>)>> {
    let mut out = Segments::peek(dir)?;
    let entries = match fs::read_dir(dir.join("msg")) {
        Ok(e) => e,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for entry in entries {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("msg") {
            continue;
        }
        let Some(id) = path.file_stem().and_then(|s| s.to_str()) else {
            continue;
        };
        match fs::read(&path) {
            Ok(bytes) => out.push((id.to_string(), bytes)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
    }
    out.sort();
    Ok(out)
}

/// Parses a spool entry's first line, the envelope.
fn parse_envelope(line: &[u8], path: &Path) -> io::Result<Envelope> {
    serde_json::from_slice(line).map_err(|e| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: bad envelope: {e}", path.display()),
        )
    })
}

/// Where the message starts in a spool entry: after the envelope line.
fn after_first_line(bytes: &[u8]) -> usize {
    bytes
        .iter()
        .position(|&b| b == b'\n')
        .map_or(bytes.len(), |i| i + 1)
}

/// A file already gone is as good as removed.
fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[path = "fs_files.rs"]
mod files;
#[path = "fs_recover.rs"]
pub(super) mod recover;
use files::{Prepared, StateFiles, prepare};

#[cfg(test)]
#[path = "fs_tests.rs"]
mod tests;
