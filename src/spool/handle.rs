//! The spool handle: the only door to storage. Inbound calls [`Spool::store`]; delivery and
//! `herald queue` call the rest. Storage sits behind [`SpoolBackend`], so a shared backend
//! (PostgreSQL) can take the place of the local directory ([`super::FsBackend`]).
//!
//! Streaming: a message is received into a [`StagedMessage`] from [`Spool::stage`] (a temporary
//! file, so memory does not grow with message size), and [`Spool::commit`] makes it durable
//! with the headers herald puts in front of it (signatures, `Received:`).
//!
//! Durability: `commit` returns only once the backend has made the message durable. Concurrent
//! commits are grouped (see [`super::batch`]): the backend's committer takes every message
//! waiting and stores them together, so 50 concurrent sessions cost one flush (or one
//! transaction), not 50.
//!
//! State changes after an attempt ([`Spool::record_state`]) and removals of delivered messages
//! ([`Spool::remove_finished`]) are grouped the same way in the file spool, each by its own
//! thread: one directory flush for the group, with no hop through tokio's blocking pool per
//! message. A removal that is only a record appended to a segment, with no flush, is written
//! by the caller itself. A removal is the one change that may be lost in a crash
//! (between the remote's `250` and the flush; for a small message in a segment, whose removal
//! record is not flushed at all, a power failure before the kernel writes it out): the
//! message is then delivered again after the restart — a duplicate, never a loss, as DESIGN
//! §3 allows.

use std::io;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use tokio::sync::mpsc;

use super::staged::{MessageBytes, StagedMessage};
use super::{BoxFuture, DeliveryState, Envelope, FsBackend, QueueId, SpoolError, SpooledMessage};

/// Storage for queued messages, async at its boundary: a backend keeps its blocking work on
/// threads of its own (the file spool's group-commit threads) or is async all through
/// (PostgreSQL), so no caller ever blocks a tokio worker or needs the blocking pool. Every
/// method that changes something is durable once its future completes.
///
/// Ids are the 20-hex-digit [`QueueId`]s from [`new_queue_id`]; a backend refuses anything else.
pub trait SpoolBackend: Send + Sync + 'static {
    /// Creates the temporary file a new message is received into. It lives on local disk (for
    /// the file-system spool, in the spool itself, so committing is a rename); a dropped one is
    /// removed, and [`SpoolBackend::recover`] discards any a crash left behind. Local and
    /// quick, so not async.
    fn stage(&self) -> io::Result<StagedMessage>;
    /// Stores a new message (envelope, head and staged body) durably, grouped with the other
    /// messages waiting where the backend can (one flush, or one transaction, for the group).
    fn commit(&self, message: NewMessage) -> BoxFuture<'_, Result<(), SpoolError>>;
    /// Lists every complete message, discarding partial writes left by a crash.
    fn recover(&self) -> BoxFuture<'_, Result<Vec<SpooledMessage>, SpoolError>>;
    /// Recovery for a starting queue: returns once what a crash left half-written is
    /// discarded (new messages may be stored from then on), and hands the recovered messages
    /// over in chunks as they are read, so that a big queue neither delays start-up nor
    /// sits in memory whole. The default reads everything first ([`SpoolBackend::recover`]).
    fn recover_chunks(&self) -> BoxFuture<'_, Result<Recovery, SpoolError>> {
        Box::pin(async move {
            let all = self.recover().await?;
            let (tx, rx) = mpsc::channel(1);
            let _ = tx.try_send(Ok(all));
            Ok(rx)
        })
    }
    /// Loads one message's envelope, size and state.
    fn load<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<SpooledMessage, SpoolError>>;
    /// The message bytes exactly as they will be delivered (mapped, not read into memory, where
    /// the backend can).
    fn read_message<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<MessageBytes, SpoolError>>;
    /// Replaces a message's delivery state atomically, grouped with the other state changes
    /// waiting where the backend can.
    fn write_state<'a>(
        &'a self,
        id: &'a str,
        state: DeliveryState,
    ) -> BoxFuture<'a, Result<(), SpoolError>>;
    /// Removes a message and its state durably (an operator's deletion, a message taken for a
    /// bounce).
    fn remove<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<(), SpoolError>>;
    /// Removes delivered messages, grouped with the other removals waiting: the one change
    /// that may be lost in a crash (module documentation). One result per id.
    fn remove_finished<'a>(
        &'a self,
        ids: &'a [QueueId],
    ) -> BoxFuture<'a, Vec<Result<(), SpoolError>>>;
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
    fn lease(&self) -> Duration;
    /// Claims up to `limit` messages whose lease has expired (their node died or lost the
    /// database) or that no node holds; no two nodes adopt the same message.
    fn adopt(&self, limit: usize) -> BoxFuture<'_, Result<Vec<ClusterEntry>, SpoolError>>;
    /// Extends every lease this node holds (one row for the node, whatever the number of
    /// messages). True when the node's messages must be listed again ([`Leases::owned`]):
    /// an operator changed one of them, or the lease had lapsed.
    fn renew(&self) -> BoxFuture<'_, Result<bool, SpoolError>>;
    /// This node's messages, each with its operator sequence (changed by
    /// [`Leases::set_held`] and [`Leases::retry_now`]): a message missing from the answer is
    /// no longer this node's (deleted, or adopted after its lease lapsed).
    fn owned(&self) -> BoxFuture<'_, Result<Vec<(QueueId, i64)>, SpoolError>>;
    /// Gives up this node's leases (clean shutdown), so other nodes take its mail at once.
    fn release_all(&self) -> BoxFuture<'_, Result<u64, SpoolError>>;
    /// The whole cluster's queue (or one message), oldest first, with each lease owner.
    fn list_all<'a>(
        &'a self,
        id: Option<&'a str>,
    ) -> BoxFuture<'a, Result<Vec<ClusterEntry>, SpoolError>>;
    /// A page of the cluster's queue in id order: at most `limit` messages (all with `None`)
    /// whose id sorts after `after`; only the page is read (keyset paging on the primary key).
    fn list_page<'a>(
        &'a self,
        after: Option<&'a str>,
        limit: Option<usize>,
    ) -> BoxFuture<'a, Result<Vec<ClusterEntry>, SpoolError>>;
    /// The cluster's queue counted by the database (no message is read into herald): totals,
    /// and (messages, waiting recipients) per destination domain, per app and per age bucket
    /// at `now` (bucket `i` holds ages below `age_bounds[i]`, the last one the rest).
    fn counts<'a>(
        &'a self,
        now: u64,
        age_bounds: &'a [u64],
    ) -> BoxFuture<'a, Result<QueueCounts, SpoolError>>;
    /// Holds or releases a message, whichever node holds it; false when there is none.
    fn set_held<'a>(&'a self, id: &'a str, held: bool) -> BoxFuture<'a, Result<bool, SpoolError>>;
    /// Makes a message (or, with `None`, every message not held) due now; how many.
    fn retry_now<'a>(&'a self, id: Option<&'a str>) -> BoxFuture<'a, Result<u64, SpoolError>>;
    /// Deletes a message from the cluster's queue, returning it and its bytes (for a bounce).
    fn take<'a>(&'a self, id: &'a str) -> BoxFuture<'a, Result<Option<Taken>, SpoolError>>;
}

/// The cluster's queue as counted by the database ([`Leases::counts`]); what the messages'
/// lease owners have in flight is not known there.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueueCounts {
    /// Messages queued.
    pub messages: u64,
    /// Recipients still waiting (pending).
    pub recipients: u64,
    /// Messages held by the operator.
    pub held: u64,
    /// Messages not held whose earliest pending recipient is due at `now` (in flight or not).
    pub due: u64,
    /// Bytes queued.
    pub bytes: u64,
    /// (domain in lower case, messages with a waiting recipient there, waiting recipients).
    pub domains: Vec<(String, u64, u64)>,
    /// (app, or `-` for none; messages; waiting recipients).
    pub apps: Vec<(String, u64, u64)>,
    /// (age bucket index, messages, waiting recipients); empty buckets left out.
    pub ages: Vec<(usize, u64, u64)>,
}

/// The recovered messages of a starting queue, chunk by chunk
/// ([`SpoolBackend::recover_chunks`]); closed when all are read. An `Err` chunk is a message
/// or directory that could not be read (the rest still comes).
pub type Recovery = mpsc::Receiver<Result<Vec<SpooledMessage>, SpoolError>>;

/// A message taken out of the cluster's queue ([`Leases::take`]) and its bytes.
pub type Taken = (SpooledMessage, MessageBytes);

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

/// The spool handle shared by inbound, delivery and the admin endpoint.
#[derive(Clone)]
pub struct Spool {
    backend: Arc<dyn SpoolBackend>,
    arrivals: mpsc::UnboundedSender<SpooledMessage>,
}

/// Receives every message as soon as it is durably stored (the delivery queue listens here).
pub type Arrivals = mpsc::UnboundedReceiver<SpooledMessage>;

impl Spool {
    /// Opens the spool on `backend`. Returns the spool and the stream of newly stored
    /// messages.
    pub fn open(backend: Arc<dyn SpoolBackend>) -> Result<(Spool, Arrivals), SpoolError> {
        let (arrivals_tx, arrivals_rx) = mpsc::unbounded_channel();
        Ok((
            Spool {
                backend,
                arrivals: arrivals_tx,
            },
            arrivals_rx,
        ))
    }

    /// Opens a file-system spool in `dir` (starting its group-commit threads).
    pub fn open_dir(dir: &Path) -> Result<(Spool, Arrivals), SpoolError> {
        Spool::open(Arc::new(FsBackend::open(dir)?))
    }

    /// A new temporary file to receive a message into (see [`StagedMessage`]).
    pub fn stage(&self) -> io::Result<StagedMessage> {
        self.backend.stage()
    }

    /// Stores a message held in memory (herald's own mail) durably and returns its queue id.
    pub async fn store(&self, envelope: Envelope, data: Vec<u8>) -> Result<QueueId, SpoolError> {
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
    ) -> Result<QueueId, SpoolError> {
        let id = new_queue_id();
        let size = head.len() as u64 + body.len();
        let state = DeliveryState::new(&envelope);
        let message = NewMessage {
            id: id.clone(),
            envelope: envelope.clone(),
            head,
            body,
        };
        self.backend.commit(message).await?;
        let _ = self.arrivals.send(SpooledMessage {
            id: id.clone(),
            envelope,
            size,
            state,
        });
        Ok(id)
    }

    /// Every complete message in the spool (used at start-up and by `herald queue` offline).
    pub async fn recover(&self) -> Result<Vec<SpooledMessage>, SpoolError> {
        self.backend.recover().await
    }

    /// Recovery for the starting queue, in chunks ([`SpoolBackend::recover_chunks`]).
    pub async fn recover_chunks(&self) -> Result<Recovery, SpoolError> {
        self.backend.recover_chunks().await
    }

    /// One message's envelope, size and state.
    pub async fn load(&self, id: &str) -> Result<SpooledMessage, SpoolError> {
        self.backend.load(id).await
    }

    /// The bytes to deliver (mapped read-only where the backend can).
    pub async fn read_message(&self, id: &str) -> Result<MessageBytes, SpoolError> {
        self.backend.read_message(id).await
    }

    /// Records delivery progress atomically (an operator's change).
    pub async fn write_state(&self, id: &str, state: &DeliveryState) -> Result<(), SpoolError> {
        self.backend.write_state(id, state.clone()).await
    }

    /// Records delivery progress after an attempt, grouped with the other state changes
    /// waiting (one directory flush for the group where the backend can); returns once its
    /// group is durable.
    pub async fn record_state(&self, id: &str, state: DeliveryState) -> Result<(), SpoolError> {
        self.backend.write_state(id, state).await
    }

    /// The backend's leases when several nodes share it (see [`Leases`]).
    pub fn leases(&self) -> Option<&dyn Leases> {
        self.backend.leases()
    }

    /// Removes a message an operator deleted (durably).
    pub async fn remove(&self, id: &str) -> Result<(), SpoolError> {
        self.backend.remove(id).await
    }

    /// Removes several finished messages at once (one flush for the group where the backend
    /// can); one result per id.
    pub async fn remove_batch(&self, ids: &[QueueId]) -> Vec<Result<(), SpoolError>> {
        self.backend.remove_finished(ids).await
    }

    /// Removes a delivered message, grouped with the other removals waiting (module
    /// documentation); returns once its group is done.
    pub async fn remove_finished(&self, id: &str) -> Result<(), SpoolError> {
        let ids = [id.to_string()];
        self.backend
            .remove_finished(&ids)
            .await
            .pop()
            .unwrap_or(Err(SpoolError::Stopped("remover")))
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
