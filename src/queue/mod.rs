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

pub use table::give_memory_back_with;
