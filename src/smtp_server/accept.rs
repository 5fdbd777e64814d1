//! The accept loop and the shutdown of a listener's sessions: each accepted connection gets
//! its own task holding a session token; [`Sessions::drain`] stops the loops, tells idle
//! sessions to leave (they watch [`Sessions::stopping`] and reply `421 4.3.2`), and waits
//! for the others within the grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

/// The sessions of one or more listeners, and their shutdown.
pub(crate) struct Sessions {
    stop: watch::Sender<bool>,
    token: Mutex<Option<mpsc::Sender<()>>>,
    ended: tokio::sync::Mutex<mpsc::Receiver<()>>,
    loops: Mutex<Vec<JoinHandle<()>>>,
}

impl Default for Sessions {
    fn default() -> Self {
        Sessions::new()
    }
}

impl Sessions {
    /// No listener yet.
    pub(crate) fn new() -> Sessions {
        let (token, ended) = mpsc::channel(1);
        Sessions {
            stop: watch::channel(false).0,
            token: Mutex::new(Some(token)),
            ended: tokio::sync::Mutex::new(ended),
            loops: Mutex::new(Vec::new()),
        }
    }

    /// Becomes true when shutdown begins; a session waiting for a command then says
    /// [`super::admission::shutting_down`] and ends.
    pub(crate) fn stopping(&self) -> watch::Receiver<bool> {
        self.stop.subscribe()
    }

    /// Accepts on `socket` until shutdown; `session` runs each connection (client address
    /// given) in a task of its own. `listener` names it in logs.
    pub(crate) fn accept<F, Fut>(&self, socket: TcpListener, listener: &'static str, mut session: F)
    where
        F: FnMut(TcpStream, SocketAddr) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        let Some(token) = self.token.lock().unwrap_or_else(|p| p.into_inner()).clone() else {
            return;
        };
        let mut stop = self.stop.subscribe();
        let task = tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    _ = stop.wait_for(|s| *s) => break,
                    a = socket.accept() => a,
                };
                let (tcp, peer) = match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors and the like: back off briefly, not spin.
                        tracing::warn!(listener, error = %e, "accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                };
                let _ = tcp.set_nodelay(true);
                let run = session(tcp, peer);
                let token = token.clone();
                tokio::spawn(async move {
                    run.await;
                    drop(token);
                });
            }
            drop(socket);
            tracing::info!(listener, "stopped accepting");
        });
        self.loops
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(task);
    }

    /// Stops accepting, tells idle sessions to leave, and waits up to `grace` for sessions in
    /// flight. Returns true when every session finished in time.
    pub(crate) async fn drain(&self, grace: Duration) -> bool {
        self.stop_accepting().await;
        self.wait(grace).await
    }

    /// Shutdown's first half: every accept loop has ended and idle sessions were told to leave
    /// when this returns.
    pub(crate) async fn stop_accepting(&self) {
        let _ = self.stop.send(true);
        let loops = std::mem::take(&mut *self.loops.lock().unwrap_or_else(|p| p.into_inner()));
        for l in loops {
            let _ = l.await;
        }
        self.token.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    /// Shutdown's second half: waits up to `grace` for the sessions still running; true when
    /// all ended in time.
    pub(crate) async fn wait(&self, grace: Duration) -> bool {
        // Every session holds a token; recv() yields None once all have ended.
        let mut ended = self.ended.lock().await;
        tokio::time::timeout(grace, ended.recv()).await.is_ok()
    }
}
