//! Small messages in shared append-only files ("segments"), so that storing and removing one
//! creates and deletes no file: on ext4 a file per message costs an inode allocation, a
//! rename into place and a directory flush on arrival, and an inode eviction (with a block
//! discard) on removal — the largest share of herald's CPU per message.
//!
//! `seg/<number>.seg` holds records, each `HSG1`, a kind byte (`M` a message, `D` its
//! removal), the id's length (one byte), the payload's length and a CRC-32 (both 4 bytes,
//! little endian), then the id and the payload. A message's payload is exactly what a message
//! file holds (the envelope as one JSON line, then the message). A removal is appended to the
//! segment that holds the message, so each segment is read on its own at recovery: its live
//! messages are its `M` records without a `D`. A group of new messages is written with one
//! `pwrite` and made durable with one `fdatasync` before any of them is acknowledged. A new
//! segment is first filled with zeros and flushed ([`preallocate`]), so that flush writes
//! the records' blocks only, never the inode of a growing file.
//!
//! A crash can leave a torn record only after the last successful flush (everything before
//! it was flushed as a whole), so recovery reads each segment up to its first invalid record
//! and cuts the rest: what is cut was never acknowledged, or was a removal (a duplicate
//! delivery, never a loss). New messages go to the current segment until it reaches
//! [`SEGMENT_SIZE`]; a segment whose messages are all removed is deleted. A message that has
//! to wait for a later attempt moves out to a file of its own (`FsBackend`), so a deferred
//! message never keeps a segment alive for days.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use super::QueueId;
use crate::fsutil::sync_dir;

/// New messages start a new segment once the current one holds this many bytes.
pub(super) const SEGMENT_SIZE: u64 = 1024 * 1024;

const MAGIC: &[u8; 4] = b"HSG1";
const HEADER: usize = 4 + 1 + 1 + 4 + 4;
const MESSAGE: u8 = b'M';
const REMOVAL: u8 = b'D';

/// Where a message's payload lies.
#[derive(Debug, Clone, Copy)]
struct Location {
    segment: u64,
    offset: u64,
    len: u32,
}

/// One open segment.
struct Segment {
    file: Arc<File>,
    /// Where the next record goes (the end of the valid records).
    len: u64,
    /// Messages in it not yet removed.
    live: usize,
    /// Invalid bytes follow `len` (a write torn by a crash), to be cut by [`Segments::clean`].
    torn: bool,
}

struct State {
    /// The segment new messages go to (created on first use).
    current: u64,
    segments: HashMap<u64, Segment>,
    index: HashMap<QueueId, Location>,
    /// Segments holding removal records not flushed yet ([`Segments::flush_removals`]).
    unflushed: BTreeSet<u64>,
}

/// The segments of one spool (module documentation).
pub(super) struct Segments {
    dir: PathBuf,
    state: Mutex<State>,
}

impl Segments {
    /// Opens (creating if needed) `spool/seg` and reads every segment, changing nothing:
    /// another herald may be running on this spool until the caller holds its lock (torn
    /// tails are cut and empty segments deleted by [`Segments::clean`], under the lock).
    pub(super) fn open(spool: &Path) -> io::Result<Segments> {
        let dir = spool.join("seg");
        fs::create_dir_all(&dir)?;
        let mut state = State {
            current: 1,
            segments: HashMap::new(),
            index: HashMap::new(),
            unflushed: BTreeSet::new(),
        };
        for (number, path) in segment_files(&dir)? {
            state.current = state.current.max(number + 1);
            let bytes = fs::read(&path)?;
            let scan = scan(&bytes);
            let file = OpenOptions::new().read(true).write(true).open(&path)?;
            let live = scan.live.len();
            for (id, (offset, len)) in scan.live {
                let location = Location {
                    segment: number,
                    offset,
                    len,
                };
                state.index.insert(id, location);
            }
            let segment = Segment {
                file: Arc::new(file),
                len: scan.valid_end,
                live,
                torn: bytes
                    .get(scan.valid_end as usize..)
                    .is_some_and(|rest| rest.iter().any(|&b| b != 0)),
            };
            state.segments.insert(number, segment);
        }
        Ok(Segments {
            dir,
            state: Mutex::new(state),
        })
    }

    /// At recovery, with the spool locked: deletes segments with no message left and cuts
    /// the torn tail a crash left at the end of a segment.
    pub(super) fn clean(&self) -> io::Result<()> {
        let mut guard = self.state();
        let state = &mut *guard;
        let current = state.current;
        let empty: Vec<u64> = state
            .segments
            .iter()
            .filter(|(n, s)| s.live == 0 && **n != current)
            .map(|(n, _)| *n)
            .collect();
        for number in empty {
            state.segments.remove(&number);
            fs::remove_file(self.path(number))?;
        }
        for (number, segment) in state.segments.iter_mut().filter(|(_, s)| s.torn) {
            tracing::warn!(segment = %self.path(*number).display(), kept = segment.len,
                "spool segment ends in a torn record (a crash while writing); cut");
            segment.file.set_len(segment.len)?;
            segment.torn = false;
        }
        Ok(())
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn path(&self, number: u64) -> PathBuf {
        self.dir.join(format!("{number:016x}.seg"))
    }

    /// Whether `id` is held in a segment.
    pub(super) fn contains(&self, id: &str) -> bool {
        self.state().index.contains_key(id)
    }

    /// Every message held in segments.
    pub(super) fn ids(&self) -> Vec<QueueId> {
        self.state().index.keys().cloned().collect()
    }

    /// Appends new messages, each `(id, payload parts)`, with one write to the current
    /// segment; with `sync`, flushes it before returning (else the caller flushes the file
    /// system). Nothing of the group is acknowledged if this fails.
    pub(super) fn append(&self, messages: &[(&str, [&[u8]; 3])], sync: bool) -> io::Result<()> {
        let mut buf = Vec::new();
        let mut placed = Vec::with_capacity(messages.len());
        for (id, parts) in messages {
            let len: usize = parts.iter().map(|p| p.len()).sum();
            let len = u32::try_from(len)
                .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
            let payload_at = record(&mut buf, MESSAGE, id, parts)?;
            placed.push((id.to_string(), payload_at as u64, len));
        }
        let number = self.current_segment()?;
        let file = {
            let mut guard = self.state();
            let state = &mut *guard;
            let Some(segment) = state.segments.get_mut(&number) else {
                return Err(io::Error::other("current spool segment missing"));
            };
            let start = segment.len;
            segment.file.write_all_at(&buf, start)?;
            segment.len += buf.len() as u64;
            segment.live += placed.len();
            let file = segment.file.clone();
            for (id, at, len) in placed {
                let location = Location {
                    segment: number,
                    offset: start + at,
                    len,
                };
                state.index.insert(id, location);
            }
            file
        };
        if sync && let Err(e) = file.sync_data() {
            // Linux drops the pages a failed flush could not write (they are marked clean),
            // so a later flush of this file would succeed without them: a hole that recovery
            // would take for the end of the segment, cutting every record after it. No group
            // goes to this segment again; the next one starts a new segment.
            self.retire(number);
            return Err(io::Error::new(
                e.kind(),
                format!("flushing spool segment {number:x}: {e}"),
            ));
        }
        Ok(())
    }

    /// New messages go to a new segment from now on (a flush of `number` failed).
    fn retire(&self, number: u64) {
        let mut state = self.state();
        if state.current == number {
            state.current += 1;
        }
    }

    /// The segment new messages go to: a new one when the current one is full. A new
    /// segment is created and preallocated outside the lock (reads and removals go on).
    fn current_segment(&self) -> io::Result<u64> {
        let next = {
            let mut guard = self.state();
            let state = &mut *guard;
            let full = state
                .segments
                .get(&state.current)
                .is_some_and(|s| s.len >= SEGMENT_SIZE);
            if full {
                let old = state.current;
                state.current += 1;
                if state.segments.get(&old).is_some_and(|s| s.live == 0) {
                    state.segments.remove(&old);
                    fs::remove_file(self.path(old))?;
                }
            }
            if state.segments.contains_key(&state.current) {
                return Ok(state.current);
            }
            state.current
        };
        let path = self.path(next);
        let file = preallocate(&path)?;
        if let Err(e) = sync_dir(&self.dir) {
            // Not in use yet: gone, so that the next group can create it again.
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        self.state().segments.entry(next).or_insert(Segment {
            file: Arc::new(file),
            len: 0,
            live: 0,
            torn: false,
        });
        Ok(next)
    }

    /// A message's payload (envelope line, then the message); `None` when no segment holds it.
    pub(super) fn read(&self, id: &str) -> io::Result<Option<Vec<u8>>> {
        let (file, location) = {
            let state = self.state();
            let Some(location) = state.index.get(id).copied() else {
                return Ok(None);
            };
            let Some(segment) = state.segments.get(&location.segment) else {
                return Ok(None);
            };
            (segment.file.clone(), location)
        };
        let mut bytes = vec![0; location.len as usize];
        file.read_exact_at(&mut bytes, location.offset)?;
        Ok(Some(bytes))
    }

    /// Records the removal of each message of `ids` held here (others are ignored). With
    /// `sync`, the segments touched are flushed before returning; without, a crash may bring
    /// a removed message back (delivered twice, never lost). A segment left with no message
    /// is deleted.
    pub(super) fn remove(&self, ids: &[&str], sync: bool) -> io::Result<()> {
        let mut touched: Vec<Arc<File>> = Vec::new();
        let mut emptied = Vec::new();
        let mut result = Ok(());
        {
            let mut guard = self.state();
            let state = &mut *guard;
            // The removal records of one segment go out with one write.
            let mut by_segment: BTreeMap<u64, Vec<&str>> = BTreeMap::new();
            for id in ids {
                if let Some(location) = state.index.get(*id) {
                    by_segment.entry(location.segment).or_default().push(id);
                }
            }
            for (number, ids) in by_segment {
                let Some(segment) = state.segments.get_mut(&number) else {
                    for id in &ids {
                        state.index.remove(*id);
                    }
                    continue;
                };
                let mut buf = Vec::with_capacity(ids.len() * (HEADER + 20));
                for id in &ids {
                    record(&mut buf, REMOVAL, id, &[])?;
                }
                if let Err(e) = segment.file.write_all_at(&buf, segment.len) {
                    result = Err(e);
                    continue;
                }
                segment.len += buf.len() as u64;
                segment.live = segment.live.saturating_sub(ids.len());
                if segment.live == 0 && number != state.current {
                    state.segments.remove(&number);
                    emptied.push(number);
                } else {
                    touched.push(segment.file.clone());
                    if !sync {
                        state.unflushed.insert(number);
                    }
                }
                for id in &ids {
                    state.index.remove(*id);
                }
            }
        }
        for number in emptied {
            fs::remove_file(self.path(number))?;
        }
        if sync {
            for file in touched {
                file.sync_data()?;
            }
        }
        result
    }

    /// Flushes the removal records written since the last call, one `fdatasync` per segment
    /// that has any: run about once a second, so that a power cut brings back (to be
    /// delivered again) only the removals of the last second, whatever the kernel's
    /// write-back does (a FUSE or network file system may keep them unwritten for good).
    pub(super) fn flush_removals(&self) -> io::Result<()> {
        let files: Vec<Arc<File>> = {
            let mut state = self.state();
            let numbers = std::mem::take(&mut state.unflushed);
            numbers
                .iter()
                .filter_map(|n| state.segments.get(n).map(|s| s.file.clone()))
                .collect()
        };
        for file in files {
            file.sync_data()?;
        }
        Ok(())
    }

    /// Reads every message held in the segments of `spool` without changing anything (for
    /// inspection while a herald may be running).
    pub(super) fn peek(spool: &Path) -> io::Result<Vec<(QueueId, Vec<u8>)>> {
        let dir = spool.join("seg");
        let mut out = Vec::new();
        let files = match segment_files(&dir) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(out),
            Err(e) => return Err(e),
        };
        for (_, path) in files {
            let bytes = match fs::read(&path) {
                Ok(b) => b,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(e),
            };
            for (id, (offset, len)) in scan(&bytes).live {
                let start = offset as usize;
                out.push((id, bytes[start..start + len as usize].to_vec()));
            }
        }
        out.sort();
        Ok(out)
    }
}

/// Creates segment `path` filled with [`SEGMENT_SIZE`] zero bytes, flushed. Records then
/// overwrite blocks that exist already, so flushing them (`fdatasync`) writes only the data:
/// a file that grows needs its inode written too (with ext4's journal, a journal commit) on
/// every flush. PostgreSQL zero-fills its WAL segments for the same reason. Recovery reads
/// records up to the first that is not one; the zeros after it are not a torn write.
fn preallocate(path: &Path) -> io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(path)?;
    let zeroed = file
        .write_all_at(&vec![0; SEGMENT_SIZE as usize], 0)
        .and_then(|()| file.sync_data());
    if let Err(e) = zeroed {
        // E.g. the disk is full: no half-made segment left to block the next try.
        let _ = fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Appends one record to `buf`; returns where its payload starts in `buf`.
fn record(buf: &mut Vec<u8>, kind: u8, id: &str, parts: &[&[u8]]) -> io::Result<usize> {
    let id_len = u8::try_from(id.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "queue id too long"))?;
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let len = u32::try_from(len)
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
    let mut crc = crc32fast::Hasher::new();
    crc.update(&[kind, id_len]);
    crc.update(&len.to_le_bytes());
    crc.update(id.as_bytes());
    for part in parts {
        crc.update(part);
    }
    buf.extend_from_slice(MAGIC);
    buf.extend_from_slice(&[kind, id_len]);
    buf.extend_from_slice(&len.to_le_bytes());
    buf.extend_from_slice(&crc.finalize().to_le_bytes());
    buf.extend_from_slice(id.as_bytes());
    let payload_at = buf.len();
    for part in parts {
        buf.extend_from_slice(part);
    }
    Ok(payload_at)
}

/// What one segment's bytes hold.
struct Scan {
    /// Messages without a removal: id → (payload offset, length).
    live: HashMap<QueueId, (u64, u32)>,
    /// The end of the last valid record.
    valid_end: u64,
}

/// Reads records from the start up to the first one that is incomplete or corrupt.
fn scan(bytes: &[u8]) -> Scan {
    let mut live = HashMap::new();
    let mut at = 0usize;
    while let Some(rest) = bytes.get(at..)
        && rest.len() >= HEADER
        && rest.starts_with(MAGIC)
    {
        let kind = rest[4];
        let id_len = rest[5] as usize;
        let len = u32::from_le_bytes([rest[6], rest[7], rest[8], rest[9]]);
        let crc = u32::from_le_bytes([rest[10], rest[11], rest[12], rest[13]]);
        let end = HEADER + id_len + len as usize;
        let Some(body) = rest.get(HEADER..end) else {
            break;
        };
        let mut check = crc32fast::Hasher::new();
        check.update(&rest[4..10]);
        check.update(body);
        let id = &body[..id_len];
        if check.finalize() != crc
            || id.is_empty()
            || !id.iter().all(u8::is_ascii_hexdigit)
            || (kind != MESSAGE && kind != REMOVAL)
        {
            break;
        }
        let id = String::from_utf8_lossy(id).into_owned();
        if kind == MESSAGE {
            live.insert(id, ((at + HEADER + id_len) as u64, len));
        } else {
            live.remove(&id);
        }
        at += end;
    }
    Scan {
        live,
        valid_end: at as u64,
    }
}

/// The segment files in `dir`, by number.
fn segment_files(dir: &Path) -> io::Result<Vec<(u64, PathBuf)>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().and_then(|e| e.to_str()) != Some("seg") {
            continue;
        }
        let number = path
            .file_stem()
            .and_then(|s| s.to_str())
            .and_then(|s| u64::from_str_radix(s, 16).ok());
        if let Some(number) = number {
            out.push((number, path));
        }
    }
    out.sort();
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(text: &[u8]) -> [&[u8]; 3] {
        [b"{}\n", text, b""]
    }

    #[test]
    fn messages_survive_a_reopen_and_removals_stay_removed() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path()).unwrap();
        segments
            .append(&[("aa01", parts(b"one")), ("aa02", parts(b"two"))], true)
            .unwrap();
        segments.append(&[("aa03", parts(b"three"))], true).unwrap();
        segments.remove(&["aa02"], true).unwrap();
        assert_eq!(segments.read("aa01").unwrap().unwrap(), b"{}\none");
        assert!(segments.read("aa02").unwrap().is_none());
        drop(segments);

        let again = Segments::open(dir.path()).unwrap();
        let mut ids = again.ids();
        ids.sort();
        assert_eq!(ids, ["aa01", "aa03"]);
        assert_eq!(again.read("aa03").unwrap().unwrap(), b"{}\nthree");
        let peeked = Segments::peek(dir.path()).unwrap();
        assert_eq!(peeked.len(), 2);
    }

    #[test]
    fn a_torn_tail_is_cut_and_what_came_before_is_kept() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path()).unwrap();
        segments.append(&[("bb01", parts(b"kept"))], true).unwrap();
        segments.append(&[("bb02", parts(b"torn"))], true).unwrap();
        drop(segments);
        let (_, path) = segment_files(&dir.path().join("seg")).unwrap().remove(0);
        let bytes = fs::read(&path).unwrap();
        let torn_at = bytes.windows(4).position(|w| w == b"torn").unwrap();
        // The last bytes of the record never reached the disk.
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .write_all_at(&[0, 0], torn_at as u64 + 2)
            .unwrap();

        let again = Segments::open(dir.path()).unwrap();
        again.clean().unwrap();
        assert_eq!(again.ids(), ["bb01"]);
        again.remove(&["bb01"], true).unwrap();
        again.append(&[("bb03", parts(b"new"))], true).unwrap();
        drop(again);
        let third = Segments::open(dir.path()).unwrap();
        assert_eq!(
            third.ids(),
            ["bb03"],
            "the removal after the cut was read back"
        );
    }

    #[test]
    fn a_segment_is_preallocated_so_appends_never_grow_it_and_its_zeros_are_not_torn() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path()).unwrap();
        segments.append(&[("dd01", parts(b"first"))], true).unwrap();
        let (_, path) = segment_files(&dir.path().join("seg")).unwrap().remove(0);
        let blocks = |p: &Path| std::os::unix::fs::MetadataExt::blocks(&fs::metadata(p).unwrap());
        assert_eq!(fs::metadata(&path).unwrap().len(), SEGMENT_SIZE);
        let allocated = blocks(&path);
        assert!(allocated * 512 >= SEGMENT_SIZE, "zeros written, not a hole");
        segments
            .append(&[("dd02", parts(b"second"))], true)
            .unwrap();
        segments.remove(&["dd01"], true).unwrap();
        assert_eq!(fs::metadata(&path).unwrap().len(), SEGMENT_SIZE);
        assert_eq!(blocks(&path), allocated);
        drop(segments);

        let again = Segments::open(dir.path()).unwrap();
        assert!(!again.state().segments.values().any(|s| s.torn));
        again.clean().unwrap();
        assert_eq!(again.ids(), ["dd02"]);
        assert_eq!(
            fs::metadata(&path).unwrap().len(),
            SEGMENT_SIZE,
            "nothing cut"
        );
    }

    #[test]
    fn a_segment_emptied_after_the_next_one_started_is_deleted() {
        let dir = tempfile::tempdir().unwrap();
        let segments = Segments::open(dir.path()).unwrap();
        let big = vec![b'x'; SEGMENT_SIZE as usize];
        segments.append(&[("cc01", parts(&big))], true).unwrap();
        segments.append(&[("cc02", parts(b"next"))], true).unwrap();
        let seg_dir = dir.path().join("seg");
        assert_eq!(segment_files(&seg_dir).unwrap().len(), 2);
        segments.remove(&["cc01"], false).unwrap();
        assert_eq!(segment_files(&seg_dir).unwrap().len(), 1);
        segments.remove(&["cc02"], false).unwrap();
        drop(segments);
        Segments::open(dir.path()).unwrap().clean().unwrap();
        assert!(segment_files(&seg_dir).unwrap().is_empty());
    }
}
