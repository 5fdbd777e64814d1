//! The signing threads: one per core, started once per process and shared by every
//! configuration generation. An RSA-2048 signature takes ~0.3 ms of CPU, too long for the async
//! reactor; handing each one to tokio's blocking pool cost more than a tenth of that again
//! (a dozen idle threads behind one contended mutex: spinning, `sched_yield`, a wake-up per
//! job). These threads take jobs from one queue and sleep only when it is empty, so while
//! mail flows a job is handed over without waking anyone, and at most one job per core runs
//! at a time.

use std::collections::VecDeque;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};

use tokio::sync::oneshot;

type Job = Box<dyn FnOnce() + Send>;

/// The jobs waiting and how many threads sleep for lack of one.
struct Queue {
    jobs: VecDeque<Job>,
    idle: usize,
}

/// What the threads share.
struct Shared {
    queue: Mutex<Queue>,
    ready: Condvar,
}

impl Shared {
    fn queue(&self) -> MutexGuard<'_, Queue> {
        // Jobs run outside the lock, so nothing can poison it mid-change.
        self.queue.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// A handle on the process's signing threads.
#[derive(Clone)]
pub(crate) struct SigningThreads(Arc<Shared>);

/// The process's threads, once started.
static STARTED: Mutex<Option<SigningThreads>> = Mutex::new(None);

impl SigningThreads {
    /// The process's signing threads, started by the first call (one per core).
    pub(crate) fn get() -> std::io::Result<SigningThreads> {
        let mut started = STARTED.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(threads) = started.as_ref() {
            return Ok(threads.clone());
        }
        let shared = Arc::new(Shared {
            queue: Mutex::new(Queue {
                jobs: VecDeque::new(),
                idle: 0,
            }),
            ready: Condvar::new(),
        });
        let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
        for _ in 0..cores {
            let shared = shared.clone();
            std::thread::Builder::new()
                .name("dkim-sign".into())
                .spawn(move || work(&shared))?;
        }
        let threads = SigningThreads(shared);
        *started = Some(threads.clone());
        Ok(threads)
    }

    /// Runs `f` on a signing thread and returns its result; `None` if it panicked.
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> Option<T> {
        let (done, result) = oneshot::channel();
        let job: Job = Box::new(move || {
            let _ = done.send(f());
        });
        {
            let mut queue = self.0.queue();
            queue.jobs.push_back(job);
            if queue.idle > 0 {
                self.0.ready.notify_one();
            }
        }
        result.await.ok()
    }
}

/// A signing thread: runs jobs until the queue is empty, then sleeps until one arrives.
fn work(shared: &Shared) {
    let mut queue = shared.queue();
    loop {
        if let Some(job) = queue.jobs.pop_front() {
            drop(queue);
            if catch_unwind(AssertUnwindSafe(job)).is_err() {
                tracing::error!("a DKIM signing job panicked; the message is refused with 451");
            }
            queue = shared.queue();
        } else {
            queue.idle += 1;
            queue = shared
                .ready
                .wait(queue)
                .unwrap_or_else(PoisonError::into_inner);
            queue.idle -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn jobs_run_off_the_calling_thread_and_a_panic_is_contained() {
        let threads = SigningThreads::get().unwrap();
        let here = std::thread::current().id();
        let ran_on = threads.run(|| std::thread::current().id()).await.unwrap();
        assert_ne!(ran_on, here);
        let panicked: Option<()> = threads.run(|| panic!("signing bug")).await;
        assert!(panicked.is_none());
        let many: Vec<_> = (0..64u32).map(|i| threads.run(move || i * 2)).collect();
        let mut sum = 0;
        for job in many {
            sum += job.await.unwrap();
        }
        assert_eq!(sum, (0..64u32).map(|i| i * 2).sum::<u32>());
    }
}
