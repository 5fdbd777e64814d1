//! The spool handle: the only door to storage. Inbound calls [`Spool::store`]; delivery and
//! `herald queue` call the rest. Storage sits behind [`SpoolBackend`], so a shared backend
//! (PostgreSQL) can take the place of the local directory ([`super::FsBackend`]).
//!
//! Durability: `store` returns only once the backend has made the message durable. Concurrent
//! stores are grouped: a committer thread takes every message waiting and hands them to
//! [`SpoolBackend::write_batch`] together, so 50 concurrent sessions cost one flush, not 50.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::{DeliveryState, Envelope, FsBackend, QueueId, SpooledMessage};

/// Storage for queued messages. Every method that changes something is durable on return.
///
/// Methods block (the queue calls them from `spawn_blocking` or the committer thread); ids are
/// the 20-hex-digit [`QueueId`]s from [`new_queue_id`], and a backend refuses anything else.
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
    let micros = crate::clock::now_micros();
    let count = COUNTER.fetch_add(1, Ordering::Relaxed) & 0xffff;
    let noise: u16 = rand::random();
    format!("{micros:012x}{count:04x}{noise:04x}")
}
