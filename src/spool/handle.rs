//! The spool handle: the only door to storage. Inbound calls [`Spool::store`]; delivery and
//! `herald queue` call the rest. Storage sits behind [`SpoolBackend`], so a shared backend
//! (PostgreSQL) can take the place of the local directory ([`super::FsBackend`]).
//!
//! Streaming: a message is received into a [`StagedMessage`] from [`Spool::stage`] (a temporary
//! file, so memory does not grow with message size), and [`Spool::commit`] makes it durable
//! with the headers herald puts in front of it (signatures, `Received:`).
//!
//! Durability: `commit` returns only once the backend has made the message durable. Concurrent
//! commits are grouped: a committer thread takes every message waiting and hands them to
//! [`SpoolBackend::write_batch`] together, so 50 concurrent sessions cost one flush, not 50.
//!
//! State changes after an attempt ([`Spool::record_state`], to
//! [`SpoolBackend::write_state_batch`]) and removals of delivered messages
//! ([`Spool::remove_finished`], to [`SpoolBackend::remove_batch`]) are grouped the same way,
//! each by its own thread: one directory flush for the group, with no hop through tokio's
//! blocking pool per message. A removal that is only a record appended to a segment, with no
//! flush, is written by the caller itself ([`SpoolBackend::remove_in_place`]). A removal is the one change that may be lost in a crash
//! (between the remote's `250` and the flush; for a small message in a segment, whose removal
//! record is not flushed at all, a power failure before the kernel writes it out): the
//! message is then delivered again after the restart — a duplicate, never a loss, as DESIGN
//! §3 allows.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use tokio::sync::{mpsc, oneshot};

use super::staged::{MessageBytes, StagedMessage};
use super::{DeliveryState, Envelope, FsBackend, QueueId, SpooledMessage};

/// Storage for queued messages. Every method that changes something is durable on return.
///
/// Methods block (the queue calls them from `spawn_blocking` or the committer thread); ids are
/// the 20-hex-digit [`QueueId`]s from [`new_queue_id`], and a backend refuses anything else.
pub trait SpoolBackend: Send + Sync + 'static {
    /// Creates the temporary file a new message is received into. It lives on local disk (for
    /// the file-system spool, in the spool itself, so committing is a rename); a dropped one is
    /// removed, and [`SpoolBackend::recover`] discards any a crash left behind.
    fn stage(&self) -> io::Result<StagedMessage>;
    /// Writes new messages (envelope, head and staged body) durably, all or each failing alone.
    fn write_batch(&self, batch: Vec<NewMessage>) -> Vec<io::Result<()>>;
    /// Lists every complete message, discarding partial writes left by a crash.
    fn recover(&self) -> io::Result<Vec<SpooledMessage>>;
    /// Loads one message's envelope, size and state.
    fn load(&self, id: &str) -> io::Result<SpooledMessage>;
    /// The message bytes exactly as they will be delivered (mapped, not read into memory, where
    /// the backend can).
    fn read_message(&self, id: &str) -> io::Result<MessageBytes>;
    /// Whether [`SpoolBackend::read_message`] is cheap enough to call on an async worker thread
    /// (a local file opened and mapped: a few microseconds, less than a hop through tokio's
    /// blocking pool). A backend that reads over the network keeps the default, `false`.
    fn reads_locally(&self) -> bool {
        false
    }
    /// Replaces a message's delivery state atomically.
    fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()>;
    /// Replaces several messages' states, each succeeding or failing alone; a backend may make
    /// the whole group durable at once (one flush for all).
    fn write_state_batch(&self, batch: &[(QueueId, DeliveryState)]) -> Vec<io::Result<()>> {
        batch
            .iter()
            .map(|(id, state)| self.write_state(id, state))
            .collect()
    }
    /// Removes a message and its state.
    fn remove(&self, id: &str) -> io::Result<()>;
    /// Removes several finished messages, each succeeding or failing alone; a backend may make
    /// the whole group durable at once (one flush for all).
    fn remove_batch(&self, ids: &[QueueId]) -> Vec<io::Result<()>> {
        ids.iter().map(|id| self.remove(id)).collect()
    }
    /// Removes a finished message on the calling thread when that takes microseconds and
    /// no flush (the file spool: a removal record appended to a segment), as
    /// [`SpoolBackend::remove_batch`] would; `None` (the default) when it needs the remover
    /// thread. Saves two thread wake-ups per delivered message.
    fn remove_in_place(&self, _id: &str) -> Option<io::Result<()>> {
        None
    }
    /// Leases on delivery work, for a backend several nodes share (PostgreSQL); `None` (the
    /// default, and the file spool) when this node alone delivers everything it stores.
    fn leases(&self) -> Option<&dyn Leases> {
        None
    }
}

/// What a backend shared by several nodes adds to [`SpoolBackend`]: each queued message is
/// delivered by the node holding its lease; a lease not renewed within [`Leases::lease`] lets
/// another node adopt the message. [`SpoolBackend::recover`] claims what this node may
/// deliver at start; [`SpoolBackend::write_state`] succeeds only while the lease is this
/// node's. The operator's view and actions ([`Leases::list_all`] …) cover the whole cluster.
pub trait Leases: Send + Sync {
    /// This node's id (the lease owner it writes).
    fn node_id(&self) -> &str;
    /// How long a lease lasts without renewal.
    fn lease(&self) -> std::time::Duration;
    /// Claims up to `limit` messages whose lease has expired (their node died or lost the
    /// database) or that no node holds; no two nodes adopt the same message.
    fn adopt(&self, limit: usize) -> io::Result<Vec<ClusterEntry>>;
    /// Extends every lease this node holds; returns each message's id and operator sequence
    /// (changed by [`Leases::set_held`] and [`Leases::retry_now`]). A message missing from
    /// the answer is no longer this node's (deleted, or adopted after an expired lease).
    fn renew(&self) -> io::Result<Vec<(QueueId, i64)>>;
    /// Gives up this node's leases (clean shutdown), so other nodes take its mail at once.
    fn release_all(&self) -> io::Result<u64>;
    /// The whole cluster's queue (or one message), oldest first, with each lease owner.
    fn list_all(&self, id: Option<&str>) -> io::Result<Vec<ClusterEntry>>;
    /// Holds or releases a message, whichever node holds it; false when there is none.
    fn set_held(&self, id: &str, held: bool) -> io::Result<bool>;
    /// Makes a message (or, with `None`, every message not held) due now; how many.
    fn retry_now(&self, id: Option<&str>) -> io::Result<u64>;
    /// Deletes a message from the cluster's queue, returning it and its bytes (for a bounce).
    fn take(&self, id: &str) -> io::Result<Option<(SpooledMessage, MessageBytes)>>;
}

/// A message in a shared queue, with what the cluster knows about it.
#[derive(Debug, Clone)]
pub struct ClusterEntry {
    /// The message (envelope, size, state; `held` as the operator set it).
    pub message: SpooledMessage,
    /// Bumped by each operator action: the owning node reloads the message when it changes.
    pub control_seq: i64,
    /// The node holding its lease, if any.
    pub owner: Option<String>,
}

/// A message on its way into the spool.
pub struct NewMessage {
    /// Its queue identifier.
    pub id: QueueId,
    /// Its envelope.
    pub envelope: Envelope,
    /// What herald puts in front of the client's message: DKIM signatures, `Received:`, and
    /// any `Date:`/`Message-ID:` it added. CRLF line endings.
    pub head: Vec<u8>,
    /// The client's message as received, CRLF line endings.
    pub body: StagedMessage,
}

/// A thread that takes every request waiting, hands the group to the backend at once and
/// answers each request with its own result: the group commit shared by arrivals, state
/// changes and removals. Async callers wait on a oneshot, never on tokio's blocking pool.
struct Batcher<T> {
    requests: mpsc::UnboundedSender<(T, oneshot::Sender<io::Result<()>>)>,
    /// The thread's name, for the error when it has stopped.
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

impl<T: Send + 'static> Batcher<T> {
    /// Starts the thread `name`, which runs `run` on the backend for each group.
    fn start(
        name: &'static str,
        backend: Arc<dyn SpoolBackend>,
        run: fn(&dyn SpoolBackend, Vec<T>) -> Vec<io::Result<()>>,
    ) -> io::Result<Batcher<T>> {
        let (requests, mut waiting) = mpsc::unbounded_channel::<(T, oneshot::Sender<_>)>();
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                while let Some(first) = waiting.blocking_recv() {
                    let mut group = vec![first];
                    while let Ok(more) = waiting.try_recv() {
                        group.push(more);
                    }
                    let (items, waiters): (Vec<_>, Vec<_>) = group.into_iter().unzip();
                    let results = run(backend.as_ref(), items);
                    for (done, result) in waiters.into_iter().zip(results) {
                        let _ = done.send(result);
                    }
                }
            })?;
        Ok(Batcher { requests, name })
    }

    /// Hands `item` to the thread; returns once its group is durable.
    async fn submit(&self, item: T) -> io::Result<()> {
        let stopped = || io::Error::other(format!("the spool's {} thread has stopped", self.name));
        let (done, wait) = oneshot::channel();
        self.requests.send((item, done)).map_err(|_| stopped())?;
        wait.await.map_err(|_| stopped())?
    }
}

/// The spool handle shared by inbound, delivery and the admin endpoint.
#[derive(Clone)]
pub struct Spool {
    backend: Arc<dyn SpoolBackend>,
    committer: Batcher<NewMessage>,
    state_writer: Batcher<(QueueId, DeliveryState)>,
    remover: Batcher<QueueId>,
    arrivals: mpsc::UnboundedSender<SpooledMessage>,
}

/// Receives every message as soon as it is durably stored (the delivery queue listens here).
pub type Arrivals = mpsc::UnboundedReceiver<SpooledMessage>;

impl Spool {
    /// Opens the spool on `backend` and starts its group-commit threads (arrivals, state
    /// changes, removals). Returns the spool and the stream of newly stored messages.
    pub fn open(backend: Arc<dyn SpoolBackend>) -> io::Result<(Spool, Arrivals)> {
        let (arrivals_tx, arrivals_rx) = mpsc::unbounded_channel();
        let committer = Batcher::start("spool-commit", backend.clone(), |b, group| {
            b.write_batch(group)
        })?;
        let state_writer = Batcher::start("spool-state", backend.clone(), |b, group| {
            b.write_state_batch(&group)
        })?;
        let remover = Batcher::start("spool-remove", backend.clone(), |b, ids| {
            b.remove_batch(&ids)
        })?;
        Ok((
            Spool {
                backend,
                committer,
                state_writer,
                remover,
                arrivals: arrivals_tx,
            },
            arrivals_rx,
        ))
    }

    /// Opens a file-system spool in `dir`.
    pub fn open_dir(dir: &Path) -> io::Result<(Spool, Arrivals)> {
        Spool::open(Arc::new(FsBackend::open(dir)?))
    }

    /// A new temporary file to receive a message into (see [`StagedMessage`]).
    pub fn stage(&self) -> io::Result<StagedMessage> {
        self.backend.stage()
    }

    /// Stores a message held in memory (herald's own mail) durably and returns its queue id.
    pub async fn store(&self, envelope: Envelope, data: Vec<u8>) -> io::Result<QueueId> {
        let mut body = self.stage()?;
        body.write(&data)?;
        drop(data);
        self.commit(envelope, Vec::new(), body).await
    }

    /// Stores a staged message, `head` followed by `body`, durably and returns its queue id;
    /// `250` may be sent once this returns.
    pub async fn commit(
        &self,
        envelope: Envelope,
        head: Vec<u8>,
        body: StagedMessage,
    ) -> io::Result<QueueId> {
        let id = new_queue_id();
        let size = head.len() as u64 + body.len();
        let state = DeliveryState::new(&envelope);
        let message = NewMessage {
            id: id.clone(),
            envelope: envelope.clone(),
            head,
            body,
        };
        self.committer.submit(message).await?;
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

    /// The bytes to deliver (mapped read-only where the backend can).
    pub fn read_message(&self, id: &str) -> io::Result<MessageBytes> {
        self.backend.read_message(id)
    }

    /// The bytes to deliver, from async code: read in place when the backend
    /// [reads locally](SpoolBackend::reads_locally), else on tokio's blocking pool.
    pub async fn read_message_async(&self, id: &str) -> io::Result<MessageBytes> {
        if self.backend.reads_locally() {
            return self.backend.read_message(id);
        }
        let (backend, id) = (self.backend.clone(), id.to_string());
        tokio::task::spawn_blocking(move || backend.read_message(&id))
            .await
            .map_err(|e| io::Error::other(format!("spool task failed: {e}")))?
    }

    /// Records delivery progress atomically.
    pub fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        self.backend.write_state(id, state)
    }

    /// Records delivery progress after an attempt, grouped with the other state changes
    /// waiting (one directory flush for the group where the backend can); returns once its
    /// group is durable. Called from async code: the file work happens on the spool's
    /// state-writer thread.
    pub async fn record_state(&self, id: &str, state: DeliveryState) -> io::Result<()> {
        self.state_writer.submit((id.to_string(), state)).await
    }

    /// The backend's leases when several nodes share it (see [`Leases`]).
    pub fn leases(&self) -> Option<&dyn Leases> {
        self.backend.leases()
    }

    /// Removes a finished or deleted message.
    pub fn remove(&self, id: &str) -> io::Result<()> {
        self.backend.remove(id)
    }

    /// Removes several messages at once (one flush for the group where the backend can).
    pub fn remove_batch(&self, ids: &[QueueId]) -> Vec<io::Result<()>> {
        self.backend.remove_batch(ids)
    }

    /// Removes a delivered message, grouped with the other removals waiting (module
    /// documentation); returns once its group is durable. Called from async code: the file
    /// work happens on the spool's remover thread, unless the backend can do it in place
    /// ([`SpoolBackend::remove_in_place`]).
    pub async fn remove_finished(&self, id: &str) -> io::Result<()> {
        if let Some(done) = self.backend.remove_in_place(id) {
            return done;
        }
        self.remover.submit(id.to_string()).await
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
