//! The queue: schedules attempts for what the [spool](crate::spool) holds, runs them through
//! [outbound](crate::outbound), records the results and sends delivery status notifications.

pub mod control;
pub mod dsn;
mod emit;
pub mod lease;
pub mod manager;
mod recovery;
pub mod summary;
mod table;
pub mod transition;
pub mod view;

/// What the binary does to give freed memory back to the system (mimalloc's collection):
/// set once at start by `main`; tests and other embedders set nothing.
static GIVE_BACK: std::sync::OnceLock<fn()> = std::sync::OnceLock::new();

/// Sets how freed memory goes back to the system once a burst of arrivals has been settled
/// (the allocator keeps what thousands of fresh messages used otherwise: about 80 bytes per
/// deferred message at a million). Later calls are ignored.
pub fn give_memory_back_with(f: fn()) {
    let _ = GIVE_BACK.set(f);
}

/// Gives the memory the allocator kept back to the system (see [`give_memory_back_with`]):
/// after a burst was settled, and after recovery, which reads the whole spool through memory.
fn give_memory_back() {
    if let Some(give_back) = GIVE_BACK.get() {
        give_back();
    }
}
