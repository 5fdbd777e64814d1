//! The spool in one local directory ([`FsBackend`]).
//!
//! Layout: `tmp/` holds files being written (messages being received included; discarded on
//! recovery); `msg/ID.msg` is the envelope as one JSON line followed by the message bytes; `msg/ID.state` is the delivery
//! state as JSON, replaced atomically (absent until the first attempt).
//!
//! A message is received into `tmp/` with [`HEAD_ROOM`] bytes left free in front of it; at
//! commit the envelope line (padded with spaces, which JSON ignores) and herald's headers are
//! written into that room, so the file becomes the spooled message by a rename. When they do
//! not fit (very many recipients), a new file is written and the body copied after them.
//!
//! Durability of a group of new messages: every file is written to `tmp/`, then one syncfs(2)
//! flushes them all (rather than an fsync per file), then each is renamed into `msg/` and the
//! directory is fsynced once for the whole group.
//!
//! Removals are grouped too ([`SpoolBackend::remove_batch`]): every file of the group is
//! unlinked (or, when small, moved into `tmp/` to receive a later message: see
//! `FsBackend::recycle`), then the directory is fsynced once. The backend remembers which messages have a
//! `.state` file (written here, or found when loading), so removing a message delivered at
//! its first attempt unlinks one file, not two; should it ever miss one, recovery removes the
//! orphaned state at the next start.

use std::collections::HashSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use tempfile::NamedTempFile;

use super::handle::{NewMessage, SpoolBackend, new_queue_id};
use super::staged::{MessageBytes, StagedMessage};
use super::{DeliveryState, Envelope, QueueId, SpooledMessage};
use crate::fsutil::{sync_dir, sync_filesystem};

/// Room kept in front of a message being received, for its envelope line and herald's
/// headers (DKIM signatures, `Received:`); enough for a few dozen recipients.
const HEAD_ROOM: u64 = 8 * 1024;

/// Spool files up to this size are read into memory for delivery rather than mapped.
const READ_WHOLE: u64 = 64 * 1024;

/// A spool in one local directory (layout in the module documentation).
pub struct FsBackend {
    tmp: PathBuf,
    msg: PathBuf,
    /// `tmp/` and `msg/` kept open for syncfs(2) and the directory fsyncs (no open and close
    /// per group).
    tmp_dir: File,
    msg_dir: File,
    /// Messages that have a `.state` file (most delivered messages never get one).
    with_state: Mutex<HashSet<QueueId>>,
    /// Removed message files kept in `tmp/` for the next messages to be received into, with
    /// their lengths (see [`FsBackend::recycle`]).
    free: Mutex<Vec<(PathBuf, u64)>>,
}

/// At most this many removed files wait in `tmp/` for reuse.
const RECYCLE_MAX: usize = 256;

impl FsBackend {
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
    pub fn open(dir: &Path) -> io::Result<FsBackend> {
        let tmp = dir.join("tmp");
        let msg = dir.join("msg");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&msg)?;
        sync_dir(dir)?;
        Ok(FsBackend {
            tmp_dir: File::open(&tmp)?,
            msg_dir: File::open(&msg)?,
            tmp,
            msg,
            with_state: Mutex::new(HashSet::new()),
            free: Mutex::new(Vec::new()),
        })
    }

    fn free(&self) -> MutexGuard<'_, Vec<(PathBuf, u64)>> {
        self.free.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Moves a removed message's file into `tmp/` for reuse instead of unlinking it: on ext4,
    /// creating a file per message and deleting it after delivery costs an inode allocation
    /// (a scan past recently deleted inodes) and an eviction each time, the largest share of
    /// herald's kernel time per message. Only files up to [`READ_WHOLE`] are kept: delivery
    /// reads those into memory, so no mapping of one can outlive its removal (a larger file
    /// may still be mapped by a delivery, and must never be rewritten). What waits in `tmp/`
    /// is discarded by recovery like any partial file. False when the file was not kept.
    fn recycle(&self, path: &Path, id: &str) -> bool {
        if self.free().len() >= RECYCLE_MAX {
            return false;
        }
        let Ok(meta) = fs::symlink_metadata(path) else {
            return false;
        };
        if !meta.is_file() || meta.len() > READ_WHOLE {
            return false;
        }
        let to = self.tmp.join(format!("free-{id}"));
        if fs::rename(path, &to).is_err() {
            return false;
        }
        self.free().push((to, meta.len()));
        true
    }

    fn with_state(&self) -> MutexGuard<'_, HashSet<QueueId>> {
        self.with_state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Unlinks a message's files (its state only when it has one); no directory flush.
    fn unlink(&self, id: &str) -> io::Result<()> {
        let path = self.msg_path(id)?;
        if !self.recycle(&path, id) {
            ignore_missing(fs::remove_file(path))?;
        }
        if self.with_state().remove(id) {
            ignore_missing(fs::remove_file(self.state_path(id)?))?;
        }
        Ok(())
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

    fn write_tmp(&self, name: &str, parts: &[&[u8]], sync: bool) -> io::Result<PathBuf> {
        let path = self.tmp.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        for part in parts {
            file.write_all(part)?;
        }
        if sync {
            file.sync_data()?;
        }
        Ok(path)
    }

    /// Puts the envelope line and `head` in front of the staged body: into the room left for
    /// them, or (when they do not fit) into a new file the body is copied behind.
    fn assemble(&self, message: NewMessage) -> io::Result<NamedTempFile> {
        let NewMessage {
            envelope,
            head,
            body,
            ..
        } = message;
        let mut front = serde_json::to_vec(&envelope)?;
        let room = usize::try_from(body.body_offset()).unwrap_or(0);
        if front.len() + 1 + head.len() <= room {
            front.resize(room - head.len() - 1, b' ');
            front.push(b'\n');
            front.extend_from_slice(&head);
            body.file().write_all_at(&front, 0)?;
            return body.into_temp_file();
        }
        front.push(b'\n');
        front.extend_from_slice(&head);
        let (offset, len) = (body.body_offset(), body.len());
        let mut source = body.into_temp_file()?;
        let mut out = tempfile::Builder::new()
            .prefix("commit-")
            .tempfile_in(&self.tmp)?;
        out.write_all(&front)?;
        let file = source.as_file_mut();
        file.seek(SeekFrom::Start(offset))?;
        let copied = io::copy(&mut file.take(len), out.as_file_mut())?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("staged message shrank from {len} to {copied} bytes"),
            ));
        }
        Ok(out)
    }
}

impl SpoolBackend for FsBackend {
    fn stage(&self) -> io::Result<StagedMessage> {
        let reusable = self.free().pop();
        if let Some((path, old_len)) = reusable {
            match StagedMessage::reuse(path.clone(), HEAD_ROOM, old_len) {
                Ok(staged) => return Ok(staged),
                Err(_) => {
                    let _ = fs::remove_file(&path);
                }
            }
        }
        StagedMessage::create_in(&self.tmp, HEAD_ROOM)
    }

    fn write_batch(&self, batch: Vec<NewMessage>) -> Vec<io::Result<()>> {
        // Complete every file of the group first, flush them all with one syncfs(2), then
        // rename them into place and sync the directory once.
        let written: Vec<(String, io::Result<NamedTempFile>)> = batch
            .into_iter()
            .map(|m| (m.id.clone(), self.assemble(m)))
            .collect();
        if let Err(e) = sync_filesystem(&self.tmp_dir) {
            return written
                .iter()
                .map(|_| Err(io::Error::new(e.kind(), format!("syncing spool: {e}"))))
                .collect();
        }
        let mut results: Vec<io::Result<()>> = written
            .into_iter()
            .map(|(id, tmp)| {
                tmp?.persist(self.msg_path(&id)?)
                    .map(drop)
                    .map_err(|e| e.error)
            })
            .collect();
        self.sync_msg_dir(&mut results);
        results
    }

    fn recover(&self) -> io::Result<Vec<SpooledMessage>> {
        self.free().clear();
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove partial spool file");
            }
        }
        let mut ids = Vec::new();
        let mut states = Vec::new();
        for entry in fs::read_dir(&self.msg)? {
            let path = entry?.path();
            let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
                continue;
            };
            let stem = stem.to_string_lossy().into_owned();
            match ext.to_str() {
                Some("msg") => ids.push(stem),
                Some("state") => states.push(stem),
                _ => {}
            }
        }
        ids.sort();
        // A state without its message is what a crash in `remove` leaves behind.
        for orphan in states.iter().filter(|s| ids.binary_search(s).is_err()) {
            let _ = fs::remove_file(self.state_path(orphan)?);
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load(&id) {
                Ok(m) => out.push(m),
                Err(e) => tracing::error!(queue_id = %id, error = %e,
                    "unreadable spool entry left in place for the operator"),
            }
        }
        Ok(out)
    }

    fn load(&self, id: &str) -> io::Result<SpooledMessage> {
        let path = self.msg_path(id)?;
        let file = File::open(&path)?;
        let total = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let envelope: Envelope = serde_json::from_slice(&header).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad envelope: {e}", path.display()),
            )
        })?;
        let state = match fs::read(self.state_path(id)?) {
            Ok(bytes) => {
                self.with_state().insert(id.to_string());
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
            size: total.saturating_sub(header.len() as u64),
            state,
        })
    }

    fn read_message(&self, id: &str) -> io::Result<MessageBytes> {
        let mut file = File::open(self.msg_path(id)?)?;
        let total = file.metadata()?.len();
        if total <= READ_WHOLE {
            // One read for the whole file: cheaper than mapping it (mmap, page faults, and a
            // munmap that interrupts the other cores running herald's threads).
            // Exactly the size known from fstat: one read (read_to_end would stat and seek
            // again, then read once more to see the end).
            let mut bytes = vec![0; total as usize];
            file.read_exact(&mut bytes)?;
            let start = bytes
                .iter()
                .position(|&b| b == b'\n')
                .map_or(bytes.len(), |i| i + 1);
            bytes.drain(..start);
            return Ok(MessageBytes::from(bytes));
        }
        let mut reader = BufReader::new(&file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let start = header.len() as u64;
        MessageBytes::map(&file, start, total.saturating_sub(start))
    }

    fn reads_locally(&self) -> bool {
        true
    }

    fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        let target = self.state_path(id)?;
        let json = serde_json::to_vec(state)?;
        let tmp = self.write_tmp(&format!("{id}.state.{}", new_queue_id()), &[&json], true)?;
        self.with_state().insert(id.to_string());
        fs::rename(tmp, target)?;
        self.msg_dir.sync_all()
    }

    fn write_state_batch(&self, batch: &[(QueueId, DeliveryState)]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = batch
            .iter()
            .map(|(id, state)| {
                let target = self.state_path(id)?;
                let json = serde_json::to_vec(state)?;
                let tmp =
                    self.write_tmp(&format!("{id}.state.{}", new_queue_id()), &[&json], true)?;
                self.with_state().insert(id.to_string());
                fs::rename(tmp, target)
            })
            .collect();
        self.sync_msg_dir(&mut results);
        results
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        self.unlink(id)?;
        self.msg_dir.sync_all()
    }

    fn remove_batch(&self, ids: &[QueueId]) -> Vec<io::Result<()>> {
        let mut results: Vec<io::Result<()>> = ids.iter().map(|id| self.unlink(id)).collect();
        self.sync_msg_dir(&mut results);
        results
    }
}

/// A file already gone is as good as removed.
fn ignore_missing(result: io::Result<()>) -> io::Result<()> {
    match result {
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;

    fn envelope() -> Envelope {
        Envelope {
            app: Some("demo".into()),
            mail_from: "a@example.test".into(),
            mail_from_params: vec![],
            recipients: vec!["b@example.org".into(), "c@example.net".into()],
            received_at: 1,
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "client".into(),
            tls: None,
            tls_report: false,
            tls_request: crate::spool::TlsRequest::Policy,
        }
    }

    #[tokio::test]
    async fn store_recover_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut arrivals) = Spool::open_dir(dir.path()).unwrap();
        let id = spool
            .store(envelope(), b"Subject: x\r\n\r\nhi\r\n".to_vec())
            .await
            .unwrap();
        assert_eq!(arrivals.recv().await.unwrap().id, id);
        // A partial write left by a crash is discarded on recovery.
        fs::write(dir.path().join("tmp/0000.msg"), b"{partial").unwrap();
        let all = spool.recover().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].envelope, envelope());
        assert_eq!(all[0].size, 18);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(
            &spool.read_message(&id).unwrap()[..],
            b"Subject: x\r\n\r\nhi\r\n"
        );
        let mut state = all[0].state.clone();
        state.recipients[0].status = super::super::RecipientStatus::Delivered;
        spool.write_state(&id, &state).unwrap();
        assert_eq!(spool.load(&id).unwrap().state, state);
        spool.remove(&id).unwrap();
        assert!(spool.recover().unwrap().is_empty());
        assert!(spool.load("../etc").is_err());
    }

    #[tokio::test]
    async fn state_changes_recorded_together_each_land_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..5u32 {
            let body = format!("Subject: {i}\r\n\r\nhi\r\n").into_bytes();
            ids.push(spool.store(envelope(), body).await.unwrap());
        }
        let writes: Vec<_> = ids
            .iter()
            .enumerate()
            .map(|(n, id)| {
                let (spool, id) = (spool.clone(), id.clone());
                let mut state = spool.load(&id).unwrap().state;
                state.recipients[0].attempts = n as u32 + 1;
                tokio::spawn(async move { spool.record_state(&id, state).await })
            })
            .collect();
        for write in writes {
            write.await.unwrap().unwrap();
        }
        let reopened = FsBackend::open(dir.path()).unwrap();
        for (n, id) in ids.iter().enumerate() {
            let attempts = reopened.load(id).unwrap().state.recipients[0].attempts;
            assert_eq!(attempts, n as u32 + 1, "{id}");
        }
    }

    #[tokio::test]
    async fn removals_are_grouped_and_take_their_state_files_along() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
        let mut ids = Vec::new();
        for i in 0..4 {
            ids.push(
                spool
                    .store(
                        envelope(),
                        format!("Subject: {i}\r\n\r\nhi\r\n").into_bytes(),
                    )
                    .await
                    .unwrap(),
            );
        }
        // One was deferred once (it has a state file); the others never were.
        let mut state = spool.load(&ids[0]).unwrap().state;
        state.recipients[0].attempts = 1;
        spool.write_state(&ids[0], &state).unwrap();
        let removals: Vec<_> = ids
            .iter()
            .map(|id| {
                let (spool, id) = (spool.clone(), id.clone());
                tokio::spawn(async move { spool.remove_finished(&id).await })
            })
            .collect();
        for removal in removals {
            removal.await.unwrap().unwrap();
        }
        assert!(spool.recover().unwrap().is_empty());
        assert!(
            fs::read_dir(dir.path().join("msg"))
                .unwrap()
                .next()
                .is_none(),
            "no message or state file is left"
        );
        // A state written by another process (found on loading) goes too.
        let id = spool
            .store(envelope(), b"Subject: x\r\n\r\nhi\r\n".to_vec())
            .await
            .unwrap();
        let other = FsBackend::open(dir.path()).unwrap();
        other.write_state(&id, &state).unwrap();
        spool.load(&id).unwrap();
        assert_eq!(spool.remove_batch(std::slice::from_ref(&id)).len(), 1);
        assert!(
            fs::read_dir(dir.path().join("msg"))
                .unwrap()
                .next()
                .is_none()
        );
    }

    #[tokio::test]
    async fn a_removed_file_receives_the_next_message_with_nothing_of_the_old_left() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
        let long = format!("Subject: old\r\n\r\n{}\r\n", "o".repeat(3000));
        let first = spool
            .store(envelope(), long.clone().into_bytes())
            .await
            .unwrap();
        spool.remove_finished(&first).await.unwrap();
        assert!(spool.load(&first).is_err(), "gone from the spool");
        assert_eq!(
            fs::read_dir(dir.path().join("tmp")).unwrap().count(),
            1,
            "kept in tmp/ for reuse"
        );
        let second = spool
            .store(envelope(), b"Subject: new\r\n\r\nhi\r\n".to_vec())
            .await
            .unwrap();
        assert_eq!(
            &spool.read_message(&second).unwrap()[..],
            b"Subject: new\r\n\r\nhi\r\n"
        );
        assert_eq!(spool.load(&second).unwrap().size, 20);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "the kept file became the new message"
        );
        let on_disk = fs::read(dir.path().join("msg").join(format!("{second}.msg"))).unwrap();
        assert!(!on_disk.windows(3).any(|w| w == b"ooo"), "old content cut");
        // Recovery discards kept files like any partial one.
        spool.remove_finished(&second).await.unwrap();
        assert!(spool.recover().unwrap().is_empty());
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        let third = spool
            .store(envelope(), b"Subject: 3\r\n\r\nx\r\n".to_vec())
            .await
            .unwrap();
        assert_eq!(
            &spool.read_message(&third).unwrap()[..],
            b"Subject: 3\r\n\r\nx\r\n"
        );
    }

    #[tokio::test]
    async fn a_staged_message_commits_whether_or_not_its_envelope_fits_in_front() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, _arrivals) = Spool::open_dir(dir.path()).unwrap();
        let mut many = envelope();
        many.recipients = (0..400)
            .map(|i| format!("recipient-number-{i}@example.org"))
            .collect();
        for env in [envelope(), many] {
            let mut body = spool.stage().unwrap();
            body.write(b"Subject: x\r\n\r\n").unwrap();
            body.write(&vec![b'y'; 100_000]).unwrap();
            let id = spool
                .commit(env.clone(), b"Received: z\r\n".to_vec(), body)
                .await
                .unwrap();
            let loaded = spool.load(&id).unwrap();
            assert_eq!(loaded.envelope, env);
            assert_eq!(loaded.size, 13 + 14 + 100_000);
            let bytes = spool.read_message(&id).unwrap();
            assert!(bytes.starts_with(b"Received: z\r\nSubject: x\r\n\r\nyyy"));
            assert_eq!(bytes.len(), 13 + 14 + 100_000);
        }
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none(),
            "nothing staged is left"
        );
    }
}
