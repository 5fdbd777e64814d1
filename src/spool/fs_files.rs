//! Writing the file-system spool's files ([`super::Disk`]): new messages made into
//! segment records or complete files, and the files of a state change, all in `tmp/` and
//! unflushed; the caller flushes each group at once and renames the files into `msg/`.

use std::fs::{self, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use tempfile::NamedTempFile;

use super::Disk;
use crate::spool::DeliveryState;
use crate::spool::handle::{NewMessage, new_queue_id};
use crate::spool::staged::StagedBody;

impl Disk {
    /// Writes a file in `tmp/`: unflushed where the caller flushes the group with one
    /// syncfs(2), else flushed here (a file system syncfs(2) does not reach).
    pub(super) fn write_tmp(&self, name: &str, parts: &[&[u8]]) -> io::Result<PathBuf> {
        let path = self.tmp.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        let written = parts
            .iter()
            .try_for_each(|part| file.write_all(part))
            .and_then(|()| {
                if self.syncfs {
                    Ok(())
                } else {
                    file.sync_data()
                }
            });
        if let Err(e) = written {
            let _ = fs::remove_file(&path);
            return Err(e);
        }
        Ok(path)
    }

    /// Puts the envelope line and `head` in front of a staged file's body: into the room
    /// left for them, or (when they do not fit) into a new file the body is copied behind.
    pub(super) fn assemble(
        &self,
        mut front: Vec<u8>,
        head: &[u8],
        offset: u64,
        len: u64,
        mut source: NamedTempFile,
    ) -> io::Result<NamedTempFile> {
        let room = usize::try_from(offset).unwrap_or(0);
        if front.len() + 1 + head.len() <= room {
            front.resize(room - head.len() - 1, b' ');
            front.push(b'\n');
            front.extend_from_slice(head);
            source.as_file().write_all_at(&front, 0)?;
            return Ok(source);
        }
        front.push(b'\n');
        front.extend_from_slice(head);
        let mut out = tempfile::Builder::new()
            .prefix("commit-")
            .tempfile_in(&self.tmp)?;
        out.write_all(&front)?;
        let file = source.as_file_mut();
        file.seek(SeekFrom::Start(offset))?;
        let copied = io::copy(&mut file.take(len), out.as_file_mut())?;
        if copied != len {
            return Err(io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("staged message shrank from {len} to {copied} bytes"),
            ));
        }
        Ok(out)
    }

    /// Writes, unflushed, the files a state change needs in `tmp/` (see [`StateFiles`]). The
    /// caller flushes, renames, and then removes the segment's copy of a moved message.
    pub(super) fn write_state_files(
        &self,
        id: &str,
        state: &DeliveryState,
    ) -> io::Result<StateFiles> {
        let message = match self.segments.read(id)? {
            Some(payload) => {
                let name = format!("{id}.msg.{}", new_queue_id());
                Some((self.write_tmp(&name, &[&payload])?, self.msg_path(id)?))
            }
            None => None,
        };
        let json = serde_json::to_vec(state)?;
        let name = format!("{id}.state.{}", new_queue_id());
        let state = match self.write_tmp(&name, &[&json]) {
            Ok(tmp) => (tmp, self.state_path(id)?),
            Err(e) => {
                if let Some((tmp, _)) = message {
                    let _ = fs::remove_file(tmp);
                }
                return Err(e);
            }
        };
        Ok(StateFiles { message, state })
    }
}

/// The files of one state change, each as (written in `tmp/`, to be renamed to): the state,
/// and, for a message still in a segment, the message in a file of its own first (a message
/// that waits for a later attempt must not keep its segment alive).
pub(super) struct StateFiles {
    pub(super) message: Option<(PathBuf, PathBuf)>,
    pub(super) state: (PathBuf, PathBuf),
}

/// What one message of a group becomes before the group is flushed.
pub(super) enum Prepared {
    /// A segment record: the envelope line, herald's headers, the message.
    Record(Vec<u8>, Vec<u8>, Vec<u8>),
    /// A complete file in `tmp/`, to be renamed into `msg/`.
    File(NamedTempFile),
}

/// Turns a new message into a segment record (when it was received in memory) or a file.
pub(super) fn prepare(backend: &Disk, message: NewMessage) -> io::Result<Prepared> {
    let NewMessage {
        envelope,
        head,
        body,
        ..
    } = message;
    let front = serde_json::to_vec(&envelope)?;
    let (offset, len) = (body.body_offset(), body.len());
    match body.into_body()? {
        StagedBody::Memory(bytes) => {
            let mut line = front;
            line.push(b'\n');
            Ok(Prepared::Record(line, head, bytes))
        }
        StagedBody::File(file) => backend
            .assemble(front, &head, offset, len, file)
            .map(Prepared::File),
    }
}
