//! The durable spool.
//!
//! [`Spool`] is the only door to storage: inbound calls [`Spool::store`], delivery and
//! `herald queue` call the rest. The storage itself sits behind [`SpoolBackend`] so that a
//! shared backend can be added one day; [`FsBackend`] keeps one directory on a local disk.
//!
//! Durability: `store` returns only after the message file and its directory entry are fsynced.
//! Concurrent stores are grouped: a committer thread takes every message waiting, writes them,
//! syncs each file's data, renames them into place and syncs the directory once for the whole
//! group — so 50 concurrent sessions cost one directory flush, not 50.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{DeliveryState, Envelope, QueueId, SpooledMessage};

/// Storage for queued messages. Every method that changes something is durable on return.
pub trait SpoolBackend: Send + Sync + 'static {
    /// Writes new messages (envelope and bytes) durably, all or each failing alone.
    fn write_batch(&self, batch: &[NewMessage]) -> Vec<io::Result<()>>;
    /// Lists every complete message, discarding partial writes left by a crash.
    fn recover(&self) -> io::Result<Vec<SpooledMessage>>;
    /// Loads one message's envelope, size and state.
    fn load(&self, id: &str) -> io::Result<SpooledMessage>;
    /// Reads the message bytes exactly as they will be delivered.
    fn read_message(&self, id: &str) -> io::Result<Vec<u8>>;
    /// Replaces a message's delivery state atomically.
    fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()>;
    /// Removes a message and its state.
    fn remove(&self, id: &str) -> io::Result<()>;
}

/// A message on its way into the spool.
pub struct NewMessage {
    /// Its queue identifier.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    /// Its bytes (signed, with `Received:`), CRLF line endings.
    pub data: Vec<u8>,
}

struct Pending {
    message: NewMessage,
    done: oneshot::Sender<io::Result<()>>,
}

/// The spool handle shared by inbound, delivery and the admin endpoint.
#[derive(Clone)]
pub struct Spool {
    backend: Arc<dyn SpoolBackend>,
    committer: mpsc::UnboundedSender<Pending>,
    arrivals: mpsc::UnboundedSender<SpooledMessage>,
}

/// Receives every message as soon as it is durably stored (the delivery queue listens here).
pub type Arrivals = mpsc::UnboundedReceiver<SpooledMessage>;

impl Spool {
    /// Opens the spool on `backend` and starts its group-commit thread.
    /// Returns the spool and the stream of newly stored messages.
    pub fn open(backend: Arc<dyn SpoolBackend>) -> io::Result<(Spool, Arrivals)> {
        let (tx, mut rx) = mpsc::unbounded_channel::<Pending>();
        let (arrivals_tx, arrivals_rx) = mpsc::unbounded_channel();
        let committer_backend = backend.clone();
        std::thread::Builder::new()
            .name("spool-commit".into())
            .spawn(move || {
                while let Some(first) = rx.blocking_recv() {
                    let mut group = vec![first];
                    while let Ok(more) = rx.try_recv() {
                        group.push(more);
                    }
                    let (messages, waiters): (Vec<_>, Vec<_>) =
                        group.into_iter().map(|p| (p.message, p.done)).unzip();
                    let results = committer_backend.write_batch(&messages);
                    for (done, result) in waiters.into_iter().zip(results) {
                        let _ = done.send(result);
                    }
                }
            })?;
        Ok((
            Spool {
                backend,
                committer: tx,
                arrivals: arrivals_tx,
            },
            arrivals_rx,
        ))
    }

    /// Opens a file-system spool in `dir`.
    pub fn open_dir(dir: &Path) -> io::Result<(Spool, Arrivals)> {
        Spool::open(Arc::new(FsBackend::open(dir)?))
    }

    /// Stores a message durably and returns its queue id; `250` may be sent once this returns.
    pub async fn store(&self, envelope: Envelope, data: Vec<u8>) -> io::Result<QueueId> {
        let id = new_queue_id();
        let size = data.len() as u64;
        let (done, wait) = oneshot::channel();
        let message = NewMessage {
            id: id.clone(),
            envelope,
            data,
        };
        let state = DeliveryState::new(&message.envelope);
        let envelope = message.envelope.clone();
        self.committer
            .send(Pending { message, done })
            .map_err(|_| io::Error::other("spool committer has stopped"))?;
        wait.await
            .map_err(|_| io::Error::other("spool committer has stopped"))??;
        let _ = self.arrivals.send(SpooledMessage {
            id: id.clone(),
            envelope,
            size,
            state,
        });
        Ok(id)
    }

    /// Every complete message in the spool (used at start-up and by `herald queue` offline).
    pub fn recover(&self) -> io::Result<Vec<SpooledMessage>> {
        self.backend.recover()
    }

    /// One message's envelope, size and state.
    pub fn load(&self, id: &str) -> io::Result<SpooledMessage> {
        self.backend.load(id)
    }

    /// The bytes to deliver.
    pub fn read_message(&self, id: &str) -> io::Result<Vec<u8>> {
        self.backend.read_message(id)
    }

    /// Records delivery progress atomically.
    pub fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        self.backend.write_state(id, state)
    }

    /// Removes a finished or deleted message.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.backend.remove(id)
    }
}

/// A new queue id: microseconds since the epoch, then a per-process counter and random bits,
/// so ids sort by arrival and never collide across restarts.
pub fn new_queue_id() -> QueueId {
    static COUNTER: AtomicU32 = AtomicU32::new(0);
    let micros = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0);
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let noise: u16 = rand::random();
    format!("{micros:012x}{count:04x}{noise:04x}")
}

/// A spool in one local directory.
///
/// Layout: `tmp/` holds files being written (discarded on recovery); `msg/ID.msg` is the
/// envelope as one JSON line followed by the message bytes; `msg/ID.state` is the delivery
/// state as JSON, replaced atomically (absent until the first attempt).
pub struct FsBackend {
    tmp: PathBuf,
    msg: PathBuf,
}

impl FsBackend {
    /// Opens (creating if needed) a spool directory.
    pub fn open(dir: &Path) -> io::Result<FsBackend> {
        let tmp = dir.join("tmp");
        let msg = dir.join("msg");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&msg)?;
        sync_dir(dir)?;
        Ok(FsBackend { tmp, msg })
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
}

impl SpoolBackend for FsBackend {
    fn write_batch(&self, batch: &[NewMessage]) -> Vec<io::Result<()>> {
        // Write every file of the group first, flush them all with one syncfs(2), then
        // rename them into place and sync the directory once.
        let written: Vec<io::Result<PathBuf>> = batch
            .iter()
            .map(|m| {
                let mut header = serde_json::to_vec(&m.envelope)?;
                header.push(b'\n');
                self.write_tmp(&format!("{}.msg", m.id), &[&header, &m.data], false)
            })
            .collect();
        if let Err(e) = sync_filesystem(&self.tmp) {
            return written
                .iter()
                .map(|_| Err(io::Error::new(e.kind(), format!("syncing spool: {e}"))))
                .collect();
        }
        let mut results: Vec<io::Result<()>> = written
            .into_iter()
            .zip(batch)
            .map(|(tmp, m)| fs::rename(tmp?, self.msg_path(&m.id)?))
            .collect();
        if results.iter().any(|r| r.is_ok())
            && let Err(e) = sync_dir(&self.msg)
        {
            let kind = e.kind();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io::Error::new(
                    kind,
                    format!("syncing spool directory: {e}"),
                ));
            }
        }
        results
    }

    fn recover(&self) -> io::Result<Vec<SpooledMessage>> {
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
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{id}.state: bad delivery state: {e}"),
                )
            })?,
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

    fn read_message(&self, id: &str) -> io::Result<Vec<u8>> {
        let mut reader = BufReader::new(File::open(self.msg_path(id)?)?);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(data)
    }

    fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        let target = self.state_path(id)?;
        let json = serde_json::to_vec(state)?;
        let tmp = self.write_tmp(&format!("{id}.state.{}", new_queue_id()), &[&json], true)?;
        fs::rename(tmp, target)?;
        sync_dir(&self.msg)
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.msg_path(id)?) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::remove_file(self.state_path(id)?) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&self.msg)
    }
}

/// Flushes every dirty page of the file system holding `dir` with one syncfs(2): the group
/// commit's single flush for all the message files written since the last one.
fn sync_filesystem(dir: &Path) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let handle = File::open(dir)?;
    // SAFETY: syncfs only reads the descriptor, which `handle` keeps open for the call.
    let rc = unsafe { libc::syncfs(handle.as_raw_fd()) };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Makes a directory's entries (creations, renames, removals) durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

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
            spool.read_message(&id).unwrap(),
            b"Subject: x\r\n\r\nhi\r\n".to_vec()
        );
        let mut state = all[0].state.clone();
        state.recipients[0].status = super::super::RecipientStatus::Delivered;
        spool.write_state(&id, &state).unwrap();
        assert_eq!(spool.load(&id).unwrap().state, state);
        spool.remove(&id).unwrap();
        assert!(spool.recover().unwrap().is_empty());
        assert!(spool.load("../etc").is_err());
    }
}
