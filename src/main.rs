//! The `herald` binary: parses the command line and hands it to the library.

use std::process::ExitCode;

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

/// Gives back to the system what mimalloc still holds of freed memory: the queue calls it
/// once a burst of arrivals has been settled and after recovery (from the thread that
/// settles it; pages other threads own go back as those threads free and purge them, see
/// `MI_OPTION_PURGE_DELAY`).
fn give_memory_back() {
    // SAFETY: a plain call into the allocator linked in above; safe from any thread.
    unsafe { mi_collect(true) };
}

#[tokio::main]
async fn main() -> ExitCode {
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
