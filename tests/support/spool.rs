//! What herald has spooled, read the way the spool stores it (message files and shared
//! segments) without changing anything, so tests can look while herald runs.

use std::path::Path;

/// One spooled message: its queue id, envelope (the JSON line as stored) and bytes.
pub struct Spooled {
    pub id: String,
    pub envelope: String,
    pub message: Vec<u8>,
}

/// Every message spooled under `data_dir/spool`.
pub fn spooled(data_dir: &Path) -> Vec<Spooled> {
    let mut entries =
        herald::spool::spooled_entries(&data_dir.join("spool")).expect("read the spool");
    // A message moving from a segment to its own file while the directory is read shows up
    // in both places for that instant: one message, one entry.
    entries.dedup_by(|a, b| a.0 == b.0);
    entries
        .into_iter()
        .map(|(id, bytes)| {
            let nl = bytes
                .iter()
                .position(|&b| b == b'\n')
                .expect("envelope line");
            Spooled {
                id,
                envelope: String::from_utf8_lossy(&bytes[..nl]).into_owned(),
                message: bytes[nl + 1..].to_vec(),
            }
        })
        .collect()
}

/// Whether message `id` is still in the spool under `data_dir/spool`.
pub fn is_spooled(data_dir: &Path, id: &str) -> bool {
    spooled(data_dir).iter().any(|m| m.id == id)
}
