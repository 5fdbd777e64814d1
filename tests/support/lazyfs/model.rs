//! The file system's contents as two views: what processes see now, and what a power cut
//! would leave (what was made durable). Pure data, no FUSE: [`super`] maps each request here.
//!
//! A file's writes (data and size) reach the durable view only at `fsync`/`fdatasync` of that
//! file; a directory's names (creations, renames, unlinks) only at `fsync` of that directory.
//! A failed `fsync` (injected) drops the writes it was to flush, as Linux does (the pages are
//! marked clean): a later `fsync` succeeds without making them durable.

use std::collections::{BTreeMap, HashMap};
use std::ffi::{OsStr, OsString};

/// What an inode is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    File,
    Dir,
}

/// A change to a file's contents not yet flushed.
#[derive(Clone, Debug)]
enum Op {
    Write(u64, Vec<u8>),
    SetLen(u64),
}

/// One inode, both views.
#[derive(Clone, Debug)]
pub struct Node {
    pub kind: Kind,
    pub mode: u16,
    /// A file's bytes as read now.
    pub data: Vec<u8>,
    /// A file's bytes as a power cut leaves them.
    durable: Vec<u8>,
    /// Writes since the last flush, in order.
    pending: Vec<Op>,
    /// A directory's names now.
    pub entries: BTreeMap<OsString, u64>,
    /// A directory's names as a power cut leaves them.
    durable_entries: BTreeMap<OsString, u64>,
}

impl Node {
    fn new(kind: Kind, mode: u16) -> Node {
        Node {
            kind,
            mode,
            data: Vec::new(),
            durable: Vec::new(),
            pending: Vec::new(),
            entries: BTreeMap::new(),
            durable_entries: BTreeMap::new(),
        }
    }
}

/// Errors as errno values (the FUSE layer passes them on).
pub type Errno = i32;

/// The whole file system.
#[derive(Clone, Debug)]
pub struct Model {
    pub nodes: HashMap<u64, Node>,
    next_ino: u64,
}

/// The root directory's inode number (FUSE's).
pub const ROOT: u64 = 1;

impl Model {
    /// An empty file system: the root directory only.
    pub fn new() -> Model {
        let mut nodes = HashMap::new();
        nodes.insert(ROOT, Node::new(Kind::Dir, 0o755));
        Model { nodes, next_ino: 2 }
    }

    /// What a power cut leaves: the durable view, reached from the root through durable
    /// names only; everything else is gone.
    pub fn after_power_cut(&self) -> Model {
        let mut nodes = HashMap::new();
        let mut todo = vec![ROOT];
        while let Some(ino) = todo.pop() {
            if nodes.contains_key(&ino) {
                continue;
            }
            let Some(old) = self.nodes.get(&ino) else {
                continue;
            };
            let mut node = Node::new(old.kind, old.mode);
            node.data = old.durable.clone();
            node.durable = old.durable.clone();
            node.entries = old.durable_entries.clone();
            node.durable_entries = old.durable_entries.clone();
            todo.extend(node.entries.values().copied());
            nodes.insert(ino, node);
        }
        Model {
            nodes,
            next_ino: self.next_ino,
        }
    }

    pub fn node(&self, ino: u64) -> Result<&Node, Errno> {
        self.nodes.get(&ino).ok_or(libc::ENOENT)
    }

    fn node_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        self.nodes.get_mut(&ino).ok_or(libc::ENOENT)
    }

    fn dir_mut(&mut self, ino: u64) -> Result<&mut Node, Errno> {
        let node = self.node_mut(ino)?;
        if node.kind != Kind::Dir {
            return Err(libc::ENOTDIR);
        }
        Ok(node)
    }

    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<u64, Errno> {
        self.node(parent)?
            .entries
            .get(name)
            .copied()
            .ok_or(libc::ENOENT)
    }

    /// Whether a power cut now would lose nothing: no file has unflushed writes.
    pub fn all_flushed(&self) -> bool {
        self.nodes.values().all(|n| n.pending.is_empty())
    }

    /// Bytes held by every file now (what a full disk counts).
    pub fn used(&self) -> u64 {
        self.nodes.values().map(|n| n.data.len() as u64).sum()
    }

    /// Links a new inode under `parent`.
    pub fn create(
        &mut self,
        parent: u64,
        name: &OsStr,
        kind: Kind,
        mode: u16,
    ) -> Result<u64, Errno> {
        let ino = self.next_ino;
        let dir = self.dir_mut(parent)?;
        if dir.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        dir.entries.insert(name.to_owned(), ino);
        self.next_ino += 1;
        self.nodes.insert(ino, Node::new(kind, mode));
        Ok(ino)
    }

    /// A second name for an existing file.
    pub fn link(&mut self, ino: u64, parent: u64, name: &OsStr) -> Result<(), Errno> {
        self.node(ino)?;
        let dir = self.dir_mut(parent)?;
        if dir.entries.contains_key(name) {
            return Err(libc::EEXIST);
        }
        dir.entries.insert(name.to_owned(), ino);
        Ok(())
    }

    /// Removes a name (the inode stays while the durable view or an open file holds it).
    pub fn unlink(&mut self, parent: u64, name: &OsStr, dir: bool) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        let node = self.node(ino)?;
        match (dir, node.kind) {
            (true, Kind::File) => return Err(libc::ENOTDIR),
            (false, Kind::Dir) => return Err(libc::EISDIR),
            (true, Kind::Dir) if !node.entries.is_empty() => return Err(libc::ENOTEMPTY),
            _ => {}
        }
        self.dir_mut(parent)?.entries.remove(name);
        Ok(())
    }

    pub fn rename(
        &mut self,
        parent: u64,
        name: &OsStr,
        new_parent: u64,
        new_name: &OsStr,
        no_replace: bool,
    ) -> Result<(), Errno> {
        let ino = self.lookup(parent, name)?;
        if let Ok(existing) = self.lookup(new_parent, new_name) {
            if no_replace {
                return Err(libc::EEXIST);
            }
            let node = self.node(existing)?;
            if node.kind == Kind::Dir && !node.entries.is_empty() {
                return Err(libc::ENOTEMPTY);
            }
        }
        self.dir_mut(new_parent)?;
        self.dir_mut(parent)?.entries.remove(name);
        self.dir_mut(new_parent)?
            .entries
            .insert(new_name.to_owned(), ino);
        Ok(())
    }

    pub fn write(&mut self, ino: u64, offset: u64, bytes: &[u8]) -> Result<(), Errno> {
        let node = self.node_mut(ino)?;
        let start = usize::try_from(offset).map_err(|_| libc::EFBIG)?;
        let end = start + bytes.len();
        if node.data.len() < end {
            node.data.resize(end, 0);
        }
        node.data[start..end].copy_from_slice(bytes);
        node.pending.push(Op::Write(offset, bytes.to_vec()));
        Ok(())
    }

    pub fn set_len(&mut self, ino: u64, len: u64) -> Result<(), Errno> {
        let node = self.node_mut(ino)?;
        node.data
            .resize(usize::try_from(len).map_err(|_| libc::EFBIG)?, 0);
        node.pending.push(Op::SetLen(len));
        Ok(())
    }

    /// `fsync`/`fdatasync` of a file: its writes become durable (`fail`: they are dropped
    /// instead, never to be flushed, and the caller answers EIO).
    pub fn flush_file(&mut self, ino: u64, fail: bool) -> Result<(), Errno> {
        let node = self.node_mut(ino)?;
        let pending = std::mem::take(&mut node.pending);
        if fail {
            return Ok(());
        }
        for op in pending {
            match op {
                Op::Write(offset, bytes) => {
                    let start = offset as usize;
                    let end = start + bytes.len();
                    if node.durable.len() < end {
                        node.durable.resize(end, 0);
                    }
                    node.durable[start..end].copy_from_slice(&bytes);
                }
                Op::SetLen(len) => node.durable.resize(len as usize, 0),
            }
        }
        Ok(())
    }

    /// `fsync` of a directory: its names become durable.
    pub fn flush_dir(&mut self, ino: u64) -> Result<(), Errno> {
        let node = self.node_mut(ino)?;
        node.durable_entries = node.entries.clone();
        Ok(())
    }
}
