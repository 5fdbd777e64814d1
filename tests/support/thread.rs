//! One background thread with its own single-threaded tokio runtime per test server, so servers
//! work the same under `#[test]` and `#[tokio::test]` and stop deterministically on drop.

use std::future::Future;
use std::thread::JoinHandle;

use tokio::sync::watch;

/// A server's thread; dropping it tells the server to stop and joins the thread (every task the
/// server spawned dies with its runtime).
pub struct ServerThread {
    stop: Option<watch::Sender<bool>>,
    handle: Option<JoinHandle<()>>,
}

impl ServerThread {
    /// Runs `make(stop)` on a new thread inside a fresh runtime. The future it returns should
    /// end when `stop` changes (see [`stopped`]); tasks it spawns end with the runtime.
    /// `make` runs inside the runtime, so it may turn std sockets into tokio ones.
    pub fn spawn<F, Fut>(name: &str, make: F) -> ServerThread
    where
        F: FnOnce(watch::Receiver<bool>) -> Fut + Send + 'static,
        Fut: Future<Output = ()> + 'static,
    {
        let (stop, rx) = watch::channel(false);
        let (ready_tx, ready_rx) = std::sync::mpsc::channel::<()>();
        let handle = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("build test server runtime");
                rt.block_on(async move {
                    let fut = make(rx);
                    let _ = ready_tx.send(());
                    fut.await;
                });
            })
            .expect("spawn test server thread");
        // Sockets are registered with the runtime once `make` has run: wait for that so a
        // failure to set up shows up here, not as a mysterious client timeout.
        ready_rx
            .recv()
            .expect("test server thread failed while starting");
        ServerThread {
            stop: Some(stop),
            handle: Some(handle),
        }
    }
}

/// Resolves once the server has been told to stop (or its [`ServerThread`] is gone).
pub async fn stopped(mut stop: watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            return;
        }
    }
}

impl Drop for ServerThread {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(handle) = self.handle.take() {
            let _ = handle.join();
        }
    }
}
