//! Message data on disk, never whole in memory: a [`StagedMessage`] is the temporary file a
//! message is received into as it arrives, and [`MessageBytes`] is a message (staged or
//! spooled) mapped read-only for signing and delivery.
//!
//! Memory per unfinished message is one write buffer, whatever the message size; a mapping's
//! pages are file pages the kernel reads on demand and can drop again.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use tempfile::{NamedTempFile, TempPath};

/// Bytes gathered before one write to the staged file.
const WRITE_BUFFER: usize = 64 * 1024;

/// The write buffer's first allocation; it doubles up to [`WRITE_BUFFER`].
const FIRST_BUFFER: usize = 8 * 1024;

/// A message being received, in a temporary file of the spool. The file is removed when this
/// is dropped (a refused message, a session that dies) unless the spool committed it first.
pub struct StagedMessage {
    file: NamedTempFile,
    body_offset: u64,
    len: u64,
    buffer: Vec<u8>,
    /// Length of what the file held before (a recycled file): cut at the end of staging.
    stale_len: u64,
}

impl StagedMessage {
    /// Creates a staging file in `dir`; the message body will start at `body_offset` (room a
    /// backend keeps in front of it, e.g. for the envelope, so committing needs no copy).
    pub fn create_in(dir: &Path, body_offset: u64) -> io::Result<StagedMessage> {
        let mut file = tempfile::Builder::new()
            .prefix("incoming-")
            .tempfile_in(dir)?;
        file.as_file_mut().seek(SeekFrom::Start(body_offset))?;
        Ok(StagedMessage {
            file,
            body_offset,
            len: 0,
            buffer: Vec::new(),
            stale_len: 0,
        })
    }

    /// Receives into an existing file at `path` (a removed message's file kept for reuse:
    /// its blocks are overwritten rather than a new inode allocated and the old one freed);
    /// `old_len` bytes of earlier content are cut at the end of staging. Removed when dropped,
    /// like a new one.
    pub fn reuse(path: PathBuf, body_offset: u64, old_len: u64) -> io::Result<StagedMessage> {
        let mut file = OpenOptions::new().read(true).write(true).open(&path)?;
        let file_path = TempPath::try_from_path(path)?;
        file.seek(SeekFrom::Start(body_offset))?;
        Ok(StagedMessage {
            file: NamedTempFile::from_parts(file, file_path),
            body_offset,
            len: 0,
            buffer: Vec::new(),
            stale_len: old_len,
        })
    }

    /// Appends message bytes (buffered; [`StagedMessage::flush`] writes the rest).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buffer.capacity() == 0 {
            // Small messages never need the whole write buffer: it grows as they do.
            self.buffer.reserve_exact(FIRST_BUFFER);
        }
        if self.buffer.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= WRITE_BUFFER {
            self.file.as_file_mut().write_all(bytes)?;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// Writes out what is buffered (to the page cache; the spool syncs at commit).
    pub fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            self.file.as_file_mut().write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    /// Bytes of message received so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// True when nothing has been received.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Where the body starts in the file.
    pub fn body_offset(&self) -> u64 {
        self.body_offset
    }

    /// The open file (for a backend writing in front of the body or copying it).
    pub fn file(&self) -> &File {
        self.file.as_file()
    }

    /// The message received so far, read-only, once it is complete: nothing may be written
    /// after this. A message that never outgrew the write buffer is written out and its bytes
    /// handed over as they are (no mapping: a small message would pay more in mmap, page
    /// faults and munmap than it saves); a larger one is flushed and mapped.
    pub fn map(&mut self) -> io::Result<MessageBytes> {
        if self.len == self.buffer.len() as u64 {
            let bytes = std::mem::take(&mut self.buffer);
            self.file.as_file_mut().write_all(&bytes)?;
            return Ok(MessageBytes::from(bytes));
        }
        self.flush()?;
        MessageBytes::map(self.file.as_file(), self.body_offset, self.len)
    }

    /// The temporary file, for the backend to move into place (`persist`).
    pub fn into_temp_file(mut self) -> io::Result<NamedTempFile> {
        self.flush()?;
        let end = self.body_offset + self.len;
        if self.stale_len > end {
            self.file.as_file().set_len(end)?;
        }
        Ok(self.file)
    }
}

/// A message's bytes: mapped read-only from its file, or (for a backend without files, and
/// for empty messages) held in memory. Derefs to the bytes.
pub struct MessageBytes {
    inner: Inner,
}

enum Inner {
    Mapped { map: Mmap, start: usize },
    Owned(Vec<u8>),
}

impl MessageBytes {
    /// Maps `len` bytes of `file` from `offset`, read-only.
    pub fn map(file: &File, offset: u64, len: u64) -> io::Result<MessageBytes> {
        if len == 0 {
            return Ok(MessageBytes::from(Vec::new()));
        }
        let end = offset
            .checked_add(len)
            .and_then(|e| usize::try_from(e).ok())
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
        let start = usize::try_from(offset)
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "message too large"))?;
        // SAFETY: the mapping is read-only and herald never truncates or rewrites a message
        // file while it exists: staged files are appended to only before they are mapped, and
        // spooled message files are immutable until removed (removal keeps a mapping valid).
        // A removed file is reused for a new message only when it is small enough to be read
        // into memory rather than mapped (`FsBackend::recycle`), so no mapping sees it
        // rewritten. Only another process truncating a spool file could invalidate it.
        let map = unsafe { memmap2::MmapOptions::new().len(end).map(file)? };
        Ok(MessageBytes {
            inner: Inner::Mapped { map, start },
        })
    }
}

impl From<Vec<u8>> for MessageBytes {
    fn from(bytes: Vec<u8>) -> Self {
        MessageBytes {
            inner: Inner::Owned(bytes),
        }
    }
}

impl Deref for MessageBytes {
    type Target = [u8];

    fn deref(&self) -> &[u8] {
        match &self.inner {
            Inner::Mapped { map, start } => &map[*start..],
            Inner::Owned(v) => v,
        }
    }
}

impl AsRef<[u8]> for MessageBytes {
    fn as_ref(&self) -> &[u8] {
        self
    }
}

impl std::fmt::Debug for MessageBytes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "MessageBytes({} bytes)", self.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_small_message_is_written_out_and_handed_over_whole() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedMessage::create_in(dir.path(), 10).unwrap();
        staged.write(b"Subject: a\r\n\r\n").unwrap();
        staged.write(b"hi\r\n").unwrap();
        let bytes = staged.map().unwrap();
        assert_eq!(&bytes[..], b"Subject: a\r\n\r\nhi\r\n");
        let file = staged.into_temp_file().unwrap();
        let on_disk = std::fs::read(file.path()).unwrap();
        assert_eq!(&on_disk[10..], &bytes[..], "the file holds the same bytes");
    }

    #[test]
    fn staged_bytes_map_back_and_the_file_goes_when_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let mut staged = StagedMessage::create_in(dir.path(), 100).unwrap();
        let big = vec![b'x'; WRITE_BUFFER + 10];
        staged.write(b"Subject: a\r\n\r\n").unwrap();
        staged.write(&big).unwrap();
        staged.write(b"end\r\n").unwrap();
        let bytes = staged.map().unwrap();
        assert_eq!(bytes.len() as u64, staged.len());
        assert!(bytes.starts_with(b"Subject: a\r\n\r\nxxx"));
        assert!(bytes.ends_with(b"xxend\r\n"));
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
        drop(staged);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert_eq!(
            bytes.len(),
            14 + big.len() + 5,
            "a mapping outlives the file"
        );
    }
}
