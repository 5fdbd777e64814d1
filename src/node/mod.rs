//! A running herald node: everything `herald serve` runs, started from one configuration
//! ([`Node::start`] → [`Running`]), reloaded as one ([`Running::reload`]) and stopped as one
//! ([`Running::shutdown`]). `commands/serve.rs` only turns signals and `POST /reload` into
//! calls on it; tests may start a node in-process the same way.
//!
//! Start-up order ([`Node::start`]): every listen socket is bound first ([`sockets`]), so a busy
//! port fails fast with nothing started; then the signing keys and the backends, decided once
//! for single node or cluster ([`Backends::open`]); then the subsystems in order (reporting,
//! the queue, the feedback listener, the admin endpoint, the DNS listener, and the SMTP
//! listeners last: mail is accepted only once delivery runs). The `event = "ready"` log line
//! (`herald ready`) comes once everything accepts work.
//!
//! Every subsystem follows reloads and shutdown the same way, through [`Subsystem`]:
//! - a reload is two-phase: [`Subsystem::prepare_reload`] is called on every subsystem first
//!   and may fail (nothing changes anywhere then); only when all succeeded is each returned
//!   [`Apply`] run, and applying cannot fail;
//! - shutdown is two-stage: [`Subsystem::drain`] runs on every subsystem at once within
//!   `[server] grace_period` (stop taking work, let work in flight finish), then
//!   [`Subsystem::finish`] on each in the reverse order of start (save state, stop timers).
//!
//! # Adding a subsystem (a listener, a background task)
//! 1. A listener binds its socket in [`sockets::Sockets::bind`] (one field, one line).
//! 2. Start it in `start.rs`, in the block marked `SUBSYSTEMS`, from what [`Parts`] holds (the
//!    configuration, signer, backends, queue, event hub, …), and register it with
//!    `node.add(...)`; admin pages go into `parts.routes` (merged before the admin endpoint
//!    starts, and so behind its token).
//! 3. Give it a [`Subsystem`] impl, next to the others in `subsystems.rs`: only the methods
//!    it needs (all have do-nothing defaults), e.g. for a background task with a stop signal:
//!    ```ignore
//!    impl Subsystem for Webhooks {
//!        fn name(&self) -> &'static str { "webhooks" }
//!        fn prepare_reload(&self, next: &Next) -> anyhow::Result<Apply> {
//!            let settings = Settings::of(&next.cfg)?;        // may fail: nothing changed yet
//!            let this = self.clone();
//!            Ok(Apply::new(move || this.set(settings)))       // cannot fail
//!        }
//!        fn drain(&self, grace: Duration) -> BoxFuture<'_> { Box::pin(self.stop(grace)) }
//!    }
//!    ```

mod backends;
mod running;
mod sockets;
mod start;
mod subsystems;

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

pub use backends::Backends;
pub use running::{ReloadRefused, Running};
pub use start::{Node, Parts};

use crate::config::Config;
use crate::mta_sts::StsResolver;
use crate::signing::{PublishedKey, Signer};

/// A future a subsystem hands back for shutdown (trait objects cannot have `async fn`).
pub type BoxFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// What a reload is made of, put together once before any subsystem prepares: the new
/// configuration and what is derived from it for all (keys, MTA-STS resolver).
pub struct Next {
    /// The configuration file (for digests and error messages).
    pub path: PathBuf,
    /// The new configuration.
    pub cfg: Arc<Config>,
    /// Signing keys of the new configuration.
    pub signer: Arc<Signer>,
    /// The public keys to publish (DNS records, `/dns`).
    pub keys: Vec<PublishedKey>,
    /// The MTA-STS resolver in force after the reload (the running one when its settings did
    /// not change: its cache carries over).
    pub sts: Arc<StsResolver>,
}

/// The second phase of a reload for one subsystem: puts what `prepare_reload` built in force.
/// Cannot fail (everything that could was done in `prepare_reload`).
pub struct Apply(Option<Box<dyn FnOnce() + Send>>);

impl Apply {
    /// Runs `f` when every subsystem has prepared.
    pub fn new(f: impl FnOnce() + Send + 'static) -> Apply {
        Apply(Some(Box::new(f)))
    }

    /// Nothing to apply (the subsystem does not follow reloads).
    pub fn nothing() -> Apply {
        Apply(None)
    }

    fn run(self) {
        if let Some(f) = self.0 {
            f();
        }
    }
}

/// A part of the running node that follows reloads and takes part in shutdown. Every method
/// but [`Subsystem::name`] has a do-nothing default; see the module doc for the protocol.
pub trait Subsystem: Send + Sync {
    /// A short name for logs (`inbound`, `queue`, …).
    fn name(&self) -> &'static str;

    /// First phase of a reload: builds everything the new configuration needs, changing
    /// nothing in force. An error refuses the whole reload.
    fn prepare_reload(&self, _next: &Next) -> anyhow::Result<Apply> {
        Ok(Apply::nothing())
    }

    /// Shutdown, first stage (all subsystems at once): stop taking new work and let work in
    /// flight finish within `grace`.
    fn drain(&self, _grace: Duration) -> BoxFuture<'_> {
        Box::pin(async {})
    }

    /// Shutdown, second stage (one after the other, last started first): save what must
    /// survive a restart, stop background tasks.
    fn finish(&self) -> BoxFuture<'_> {
        Box::pin(async {})
    }
}
