//! The spool's health as `/health` reports it: why the last group of new messages or states
//! could not be written (a read-only or full file system, an I/O error), until a later group
//! is written again. One per process, like the spool.

use std::io;
use std::sync::Mutex;

static FAULT: Mutex<Option<String>> = Mutex::new(None);

/// Why the spool cannot take mail right now, as a person reads it; `None` when it can.
pub fn fault() -> Option<String> {
    FAULT.lock().unwrap_or_else(|p| p.into_inner()).clone()
}

/// Records how a group went: any error sets the fault, a group with a success clears it.
pub(super) fn record(results: &[io::Result<()>]) {
    let fault = match results.iter().find_map(|r| r.as_ref().err()) {
        Some(e) if results.iter().all(|r| r.is_err()) => Some(match e.kind() {
            io::ErrorKind::ReadOnlyFilesystem => format!("spool: read-only file system ({e})"),
            io::ErrorKind::StorageFull => format!("spool: out of disk space ({e})"),
            _ => format!("spool: cannot write ({e})"),
        }),
        _ if results.is_empty() => return,
        _ => None,
    };
    *FAULT.lock().unwrap_or_else(|p| p.into_inner()) = fault;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_group_that_fails_whole_sets_the_fault_and_one_written_clears_it() {
        let ro = || io::Error::from(io::ErrorKind::ReadOnlyFilesystem);
        record(&[Err(ro()), Err(ro())]);
        assert!(fault().is_some_and(|f| f.starts_with("spool: read-only file system")));
        record(&[]);
        assert!(fault().is_some(), "an empty group says nothing");
        record(&[Ok(()), Err(ro())]);
        assert_eq!(fault(), None, "the spool can write again");
    }
}
