//! The `herald` binary: parses the command line and hands it to the library.

use std::cell::Cell;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU64, Ordering};

use clap::Parser;

/// mimalloc instead of glibc's malloc: per-thread free lists without glibc's arena locks and
/// chunk consolidation, which were about 8 % of herald's CPU per message (delivery benchmark).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its option enum keeps deprecated entries so that the
/// numbers never change): how long freed memory is kept before it goes back to the system.
const MI_OPTION_PURGE_DELAY: std::ffi::c_int = 15;

unsafe extern "C" {
    fn mi_option_set(option: std::ffi::c_int, value: std::ffi::c_long);
    fn mi_collect(force: bool);
}

/// How many times the queue asked for memory back; each runtime thread collects once per
/// request, when it next goes idle ([`collect_when_idle`]).
static GIVE_BACK_REQUESTS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// The request this thread last collected for.
    static COLLECTED_FOR: Cell<u64> = const { Cell::new(0) };
}

/// Gives back to the system what mimalloc still holds of freed memory: the queue calls it
/// once a burst of arrivals has been settled and after recovery. mimalloc collects one
/// thread's pages at a time, and a page whose blocks another thread freed (a message
/// received on one runtime thread, delivered and dropped on another) is only found free by
/// the thread that owns it: so this thread collects now, and each runtime thread when it
/// next parks.
fn give_memory_back() {
    let request = GIVE_BACK_REQUESTS.fetch_add(1, Ordering::Relaxed) + 1;
    COLLECTED_FOR.set(request);
    // SAFETY: a plain call into the allocator linked in above; safe from any thread.
    unsafe { mi_collect(true) };
}

/// Runs as each runtime thread parks (goes idle): collects its pages once per request
/// (an atomic load and a thread-local read otherwise).
fn collect_when_idle() {
    let request = GIVE_BACK_REQUESTS.load(Ordering::Relaxed);
    if COLLECTED_FOR.get() != request {
        COLLECTED_FOR.set(request);
        // SAFETY: as in `give_memory_back`.
        unsafe { mi_collect(true) };
    }
}

fn main() -> ExitCode {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .on_thread_park(collect_when_idle)
        .build();
    match runtime {
        Ok(runtime) => runtime.block_on(run()),
        Err(e) => {
            eprintln!("herald: cannot start its runtime: {e}");
            ExitCode::FAILURE
        }
    }
}

async fn run() -> ExitCode {
    // Freed memory goes back to the system at once (mimalloc waits 10 ms by default): an
    // argon2 verification frees 19 MiB, which herald should not keep (same CPU per message
    // in the delivery benchmark, half the memory while 50 sessions receive large messages).
    // SAFETY: sets one integer option of the allocator linked in above.
    unsafe { mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    herald::queue::give_memory_back_with(give_memory_back);
    let cli = herald::commands::Cli::parse();
    if !matches!(cli.command, herald::commands::Command::Serve(_)) {
        // A command whose reader went away (`herald dkim list | head -1`) ends quietly, as
        // other Unix tools do, instead of panicking on the broken pipe. `serve` keeps
        // ignoring SIGPIPE: a peer closing a socket must never end the relay.
        // SAFETY: sets the disposition of one signal before any thread writes output.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    herald::commands::run(cli).await
}
