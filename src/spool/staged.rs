//! Message data never whole in memory beyond one buffer: a [`StagedMessage`] is what a message
//! is received into as it arrives (memory up to the write buffer, then a temporary file), and
//! [`MessageBytes`] is a message (staged or spooled) read or mapped read-only for signing and
//! delivery.
//!
//! Memory per unfinished message is one write buffer, whatever the message size; a mapping's
//! pages are file pages the kernel reads on demand and can drop again.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::ops::Deref;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use tempfile::NamedTempFile;

/// Bytes gathered before one write to the staged file.
const WRITE_BUFFER: usize = 64 * 1024;

/// The write buffer's first allocation; it doubles up to [`WRITE_BUFFER`].
const FIRST_BUFFER: usize = 8 * 1024;

/// A message being received. It stays in memory while it fits the write buffer (most mail:
/// a small message never touches the file system before its commit); a larger one goes to a
/// temporary file of the spool, created when the buffer first fills. The file is removed when
/// this is dropped (a refused message, a session that dies) unless the spool committed it.
pub struct StagedMessage {
    /// Where the file is created once the message outgrows the buffer.
    dir: PathBuf,
    file: Option<NamedTempFile>,
    body_offset: u64,
    len: u64,
    buffer: Vec<u8>,
}

/// A complete staged message, as the spool takes it over: in memory, or in its file.
pub enum StagedBody {
    /// The whole message (it never outgrew the write buffer).
    Memory(Vec<u8>),
    /// The file, with the message from [`StagedMessage::body_offset`] on.
    File(NamedTempFile),
}

impl StagedMessage {
    /// Stages a message in memory; should it outgrow the write buffer, a file is created in
    /// `dir` with the body starting at `body_offset` (room a backend keeps in front of it,
    /// e.g. for the envelope, so committing needs no copy).
    pub fn create_in(dir: &Path, body_offset: u64) -> io::Result<StagedMessage> {
        Ok(StagedMessage {
            dir: dir.to_path_buf(),
            file: None,
            body_offset,
            len: 0,
            buffer: Vec::new(),
        })
    }

    /// Appends message bytes (buffered; written to the file only once the buffer is full).
    pub fn write(&mut self, bytes: &[u8]) -> io::Result<()> {
        if self.buffer.capacity() == 0 {
            // Small messages never need the whole write buffer: it grows as they do.
            self.buffer.reserve_exact(FIRST_BUFFER);
        }
        if self.buffer.len() + bytes.len() > WRITE_BUFFER {
            self.flush()?;
        }
        if bytes.len() >= WRITE_BUFFER {
            self.file()?.write_all(bytes)?;
        } else {
            self.buffer.extend_from_slice(bytes);
        }
        self.len += bytes.len() as u64;
        Ok(())
    }

    /// The staging file, created (with the room in front) the first time it is needed.
    fn file(&mut self) -> io::Result<&mut File> {
        if self.file.is_none() {
            let mut file = tempfile::Builder::new()
                .prefix("incoming-")
                .tempfile_in(&self.dir)?;
            file.as_file_mut().seek(SeekFrom::Start(self.body_offset))?;
            self.file = Some(file);
        }
        match self.file.as_mut() {
            Some(f) => Ok(f.as_file_mut()),
            None => Err(io::Error::other("staging file missing")),
        }
    }

    /// Writes out what is buffered to the file (to the page cache; the spool syncs at commit).
    fn flush(&mut self) -> io::Result<()> {
        if !self.buffer.is_empty() {
            let buffered = std::mem::take(&mut self.buffer);
            let written = self.file()?.write_all(&buffered);
            self.buffer = buffered;
            written?;
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

    /// Where the body starts in the file (when there is one).
    pub fn body_offset(&self) -> u64 {
        self.body_offset
    }

    /// The whole message when it is held in memory (it never outgrew the write buffer).
    pub fn in_memory(&self) -> Option<&[u8]> {
        (self.file.is_none()).then_some(&self.buffer[..])
    }

    /// The message received so far, read-only, once it is complete: nothing may be written
    /// after this. A message held in memory is handed over as a copy of its bytes (no file,
    /// no mapping: a small message would pay more in mmap, page faults and munmap than it
    /// saves); a larger one is flushed and mapped.
    pub fn map(&mut self) -> io::Result<MessageBytes> {
        if let Some(bytes) = self.in_memory() {
            return Ok(MessageBytes::from(bytes.to_vec()));
        }
        self.flush()?;
        let offset = self.body_offset;
        let len = self.len;
        MessageBytes::map(self.file()?, offset, len)
    }

    /// The complete message for the backend to store: its bytes when held in memory, else
    /// its file.
    pub fn into_body(mut self) -> io::Result<StagedBody> {
        if self.file.is_none() {
            return Ok(StagedBody::Memory(std::mem::take(&mut self.buffer)));
        }
        self.into_temp_file().map(StagedBody::File)
    }

    /// The temporary file, for the backend to move into place (`persist`); a message held in
    /// memory is written out to one first.
    pub fn into_temp_file(mut self) -> io::Result<NamedTempFile> {
        if self.file.is_none() {
            self.file()?;
        }
        self.flush()?;
        match self.file.take() {
            Some(f) => Ok(f),
            None => Err(io::Error::other("staging file missing")),
        }
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
        // Only another process truncating a spool file could invalidate it.
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
