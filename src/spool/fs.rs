//! The spool in one local directory ([`FsBackend`]).
//!
//! Layout: `tmp/` holds files being written (discarded on recovery); `msg/ID.msg` is the
//! envelope as one JSON line followed by the message bytes; `msg/ID.state` is the delivery
//! state as JSON, replaced atomically (absent until the first attempt).
//!
//! Durability of a group of new messages: every file is written to `tmp/`, then one syncfs(2)
//! flushes them all (rather than an fsync per file), then each is renamed into `msg/` and the
//! directory is fsynced once for the whole group.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};

use super::handle::{NewMessage, SpoolBackend, new_queue_id};
use super::{DeliveryState, Envelope, SpooledMessage};
use crate::fsutil::{sync_dir, sync_filesystem};

/// A spool in one local directory (layout in the module documentation).
pub struct FsBackend {
    tmp: PathBuf,
    msg: PathBuf,
}

impl FsBackend {
    /// Opens (creating if needed) a spool directory.
    pub fn open(dir: &Path) -> io::Result<FsBackend> {
        let tmp = dir.join("tmp");
        let msg = dir.join("msg");
        fs::create_dir_all(&tmp)?;
        fs::create_dir_all(&msg)?;
        sync_dir(dir)?;
        Ok(FsBackend { tmp, msg })
    }

    fn msg_path(&self, id: &str) -> io::Result<PathBuf> {
        if id.is_empty() || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{id:?} is not a queue id"),
            ));
        }
        Ok(self.msg.join(format!("{id}.msg")))
    }

    fn state_path(&self, id: &str) -> io::Result<PathBuf> {
        Ok(self.msg_path(id)?.with_extension("state"))
    }

    fn write_tmp(&self, name: &str, parts: &[&[u8]], sync: bool) -> io::Result<PathBuf> {
        let path = self.tmp.join(name);
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&path)?;
        for part in parts {
            file.write_all(part)?;
        }
        if sync {
            file.sync_data()?;
        }
        Ok(path)
    }
}

impl SpoolBackend for FsBackend {
    fn write_batch(&self, batch: &[NewMessage]) -> Vec<io::Result<()>> {
        // Write every file of the group first, flush them all with one syncfs(2), then
        // rename them into place and sync the directory once.
        let written: Vec<io::Result<PathBuf>> = batch
            .iter()
            .map(|m| {
                let mut header = serde_json::to_vec(&m.envelope)?;
                header.push(b'\n');
                self.write_tmp(&format!("{}.msg", m.id), &[&header, &m.data], false)
            })
            .collect();
        if let Err(e) = sync_filesystem(&self.tmp) {
            return written
                .iter()
                .map(|_| Err(io::Error::new(e.kind(), format!("syncing spool: {e}"))))
                .collect();
        }
        let mut results: Vec<io::Result<()>> = written
            .into_iter()
            .zip(batch)
            .map(|(tmp, m)| fs::rename(tmp?, self.msg_path(&m.id)?))
            .collect();
        if results.iter().any(|r| r.is_ok())
            && let Err(e) = sync_dir(&self.msg)
        {
            let kind = e.kind();
            for r in results.iter_mut().filter(|r| r.is_ok()) {
                *r = Err(io::Error::new(
                    kind,
                    format!("syncing spool directory: {e}"),
                ));
            }
        }
        results
    }

    fn recover(&self) -> io::Result<Vec<SpooledMessage>> {
        for entry in fs::read_dir(&self.tmp)? {
            let path = entry?.path();
            if let Err(e) = fs::remove_file(&path) {
                tracing::warn!(path = %path.display(), error = %e, "cannot remove partial spool file");
            }
        }
        let mut ids = Vec::new();
        let mut states = Vec::new();
        for entry in fs::read_dir(&self.msg)? {
            let path = entry?.path();
            let (Some(stem), Some(ext)) = (path.file_stem(), path.extension()) else {
                continue;
            };
            let stem = stem.to_string_lossy().into_owned();
            match ext.to_str() {
                Some("msg") => ids.push(stem),
                Some("state") => states.push(stem),
                _ => {}
            }
        }
        ids.sort();
        // A state without its message is what a crash in `remove` leaves behind.
        for orphan in states.iter().filter(|s| ids.binary_search(s).is_err()) {
            let _ = fs::remove_file(self.state_path(orphan)?);
        }
        let mut out = Vec::with_capacity(ids.len());
        for id in ids {
            match self.load(&id) {
                Ok(m) => out.push(m),
                Err(e) => tracing::error!(queue_id = %id, error = %e,
                    "unreadable spool entry left in place for the operator"),
            }
        }
        Ok(out)
    }

    fn load(&self, id: &str) -> io::Result<SpooledMessage> {
        let path = self.msg_path(id)?;
        let file = File::open(&path)?;
        let total = file.metadata()?.len();
        let mut reader = BufReader::new(file);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let envelope: Envelope = serde_json::from_slice(&header).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("{}: bad envelope: {e}", path.display()),
            )
        })?;
        let state = match fs::read(self.state_path(id)?) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("{id}.state: bad delivery state: {e}"),
                )
            })?,
            Err(e) if e.kind() == io::ErrorKind::NotFound => DeliveryState::new(&envelope),
            Err(e) => return Err(e),
        };
        Ok(SpooledMessage {
            id: id.to_string(),
            envelope,
            size: total.saturating_sub(header.len() as u64),
            state,
        })
    }

    fn read_message(&self, id: &str) -> io::Result<Vec<u8>> {
        let mut reader = BufReader::new(File::open(self.msg_path(id)?)?);
        let mut header = Vec::new();
        reader.read_until(b'\n', &mut header)?;
        let mut data = Vec::new();
        reader.read_to_end(&mut data)?;
        Ok(data)
    }

    fn write_state(&self, id: &str, state: &DeliveryState) -> io::Result<()> {
        let target = self.state_path(id)?;
        let json = serde_json::to_vec(state)?;
        let tmp = self.write_tmp(&format!("{id}.state.{}", new_queue_id()), &[&json], true)?;
        fs::rename(tmp, target)?;
        sync_dir(&self.msg)
    }

    fn remove(&self, id: &str) -> io::Result<()> {
        match fs::remove_file(self.msg_path(id)?) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        match fs::remove_file(self.state_path(id)?) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        sync_dir(&self.msg)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Spool;

    fn envelope() -> Envelope {
        Envelope {
            app: Some("demo".into()),
            mail_from: "a@example.test".into(),
            mail_from_params: vec![],
            recipients: vec!["b@example.org".into(), "c@example.net".into()],
            received_at: 1,
            client_ip: "127.0.0.1".parse().unwrap(),
            helo: "client".into(),
            tls: None,
            tls_report: false,
        }
    }

    #[tokio::test]
    async fn store_recover_update_remove() {
        let dir = tempfile::tempdir().unwrap();
        let (spool, mut arrivals) = Spool::open_dir(dir.path()).unwrap();
        let id = spool
            .store(envelope(), b"Subject: x\r\n\r\nhi\r\n".to_vec())
            .await
            .unwrap();
        assert_eq!(arrivals.recv().await.unwrap().id, id);
        // A partial write left by a crash is discarded on recovery.
        fs::write(dir.path().join("tmp/0000.msg"), b"{partial").unwrap();
        let all = spool.recover().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].envelope, envelope());
        assert_eq!(all[0].size, 18);
        assert!(
            fs::read_dir(dir.path().join("tmp"))
                .unwrap()
                .next()
                .is_none()
        );
        assert_eq!(
            spool.read_message(&id).unwrap(),
            b"Subject: x\r\n\r\nhi\r\n".to_vec()
        );
        let mut state = all[0].state.clone();
        state.recipients[0].status = super::super::RecipientStatus::Delivered;
        spool.write_state(&id, &state).unwrap();
        assert_eq!(spool.load(&id).unwrap().state, state);
        spool.remove(&id).unwrap();
        assert!(spool.recover().unwrap().is_empty());
        assert!(spool.load("../etc").is_err());
    }
}
