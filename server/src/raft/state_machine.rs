//! The Raft state machine: applies committed entries to the keyspace. Each entry's ops, its
//! log id and (for membership entries) the membership land in RocksDB in one write batch
//! (with the entries before it, when the keyspace writes back, see `keyspace::write_back`), so
//! after a crash the keyspace and its applied position agree.
//!
//! Snapshots are files: a header (magic, length, the snapshot's meta) followed by the
//! keyspace's export stream, written from one RocksDB snapshot and read back in bounded
//! batches, so neither building, sending nor installing one holds the keyspace in memory.
//! The latest snapshot is `raft-snapshot.bin` beside the database; one being received is
//! `raft-snapshot.recv` until it is installed.

use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use tokio::io::AsyncWriteExt;
use tracing::{info, warn};

use super::types::{
    BatchResults, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::keyspace::{Keyspace, StorageError as KeyspaceError};
use crate::op::OpBatch;

const KEY_APPLIED: &[u8] = b"sm_applied";
const KEY_MEMBERSHIP: &[u8] = b"sm_membership";

fn sm_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(
        ErrorSubject::StateMachine,
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

fn snap_err(verb: ErrorVerb, e: impl std::error::Error + 'static) -> StorageError {
    openraft::StorageIOError::new(
        ErrorSubject::Snapshot(None),
        verb,
        openraft::AnyError::new(&e),
    )
    .into()
}

/// First bytes of a snapshot file (format 1).
const SNAPSHOT_MAGIC: &[u8; 8] = b"MRDNSNP1";
/// Largest snapshot header accepted.
const MAX_HEADER: u32 = 1 << 20;

/// The state machine; cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    keyspace: Arc<Keyspace>,
    /// The latest snapshot file.
    snapshot_path: PathBuf,
}

/// Reads a snapshot file's header: its meta, leaving `file` at the first record.
fn read_header(file: &mut impl Read) -> std::io::Result<SnapshotMeta> {
    let bad = |why: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, why.to_string());
    let mut magic = [0u8; 8];
    file.read_exact(&mut magic)?;
    if &magic != SNAPSHOT_MAGIC {
        return Err(bad("not a Meridian snapshot file (format 1)"));
    }
    let mut len = [0u8; 4];
    file.read_exact(&mut len)?;
    let len = u32::from_be_bytes(len);
    if len > MAX_HEADER {
        return Err(bad("snapshot header too long"));
    }
    let mut meta = vec![0u8; len as usize];
    file.read_exact(&mut meta)?;
    bincode::deserialize(&meta).map_err(|e| bad(&e.to_string()))
}

fn write_header(file: &mut impl Write, meta: &SnapshotMeta) -> std::io::Result<()> {
    let meta = bincode::serialize(meta)
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e.to_string()))?;
    file.write_all(SNAPSHOT_MAGIC)?;
    file.write_all(&(meta.len() as u32).to_be_bytes())?;
    file.write_all(&meta)
}

/// Imports the snapshot file at `path` into `keyspace`.
fn import_file(keyspace: &Keyspace, path: &Path) -> Result<SnapshotMeta, KeyspaceError> {
    let mut input = BufReader::with_capacity(1 << 20, std::fs::File::open(path)?);
    let meta = read_header(&mut input)?;
    keyspace.import_from(&mut input, &[KEY_APPLIED, KEY_MEMBERSHIP])?;
    Ok(meta)
}

impl StateMachine {
    /// A state machine over `keyspace`, keeping its latest snapshot at `snapshot_path`. An
    /// install that a crash interrupted is finished here (the snapshot file is complete
    /// before any of it is imported).
    pub fn new(keyspace: Arc<Keyspace>, snapshot_path: PathBuf) -> anyhow::Result<StateMachine> {
        if keyspace.import_interrupted()? {
            warn!(path = %snapshot_path.display(), "a snapshot install was interrupted: importing it again");
            import_file(&keyspace, &snapshot_path)?;
        }
        // A transfer cut short (a stop, a leader change) leaves its partial file: no transfer
        // resumes it, and it may be as large as the keyspace (582 MB left by a chaos run).
        let partial = snapshot_path.with_extension("recv");
        match std::fs::remove_file(&partial) {
            Ok(()) => info!(path = %partial.display(), "removed a partial snapshot transfer"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                warn!(path = %partial.display(), error = %e, "cannot remove a partial snapshot transfer")
            }
        }
        Ok(StateMachine {
            keyspace,
            snapshot_path,
        })
    }

    fn read_applied(&self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        let applied = match self
            .keyspace
            .read_meta(KEY_APPLIED)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(raw) => bincode::deserialize(&raw).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => None,
        };
        let membership = match self
            .keyspace
            .read_meta(KEY_MEMBERSHIP)
            .map_err(|e| sm_err(ErrorVerb::Read, e))?
        {
            Some(raw) => bincode::deserialize(&raw).map_err(|e| sm_err(ErrorVerb::Read, e))?,
            None => StoredMembership::default(),
        };
        Ok((applied, membership))
    }

    /// Writes a snapshot of the keyspace to the snapshot file (through a temporary file,
    /// renamed once synced); returns its meta.
    fn write_snapshot(&self) -> Result<SnapshotMeta, KeyspaceError> {
        let tmp = self.snapshot_path.with_extension("building");
        let mut out = BufWriter::with_capacity(1 << 20, std::fs::File::create(&tmp)?);
        let meta =
            self.keyspace
                .export_to(&mut out, &[KEY_APPLIED, KEY_MEMBERSHIP], |values, out| {
                    let corrupt = |what| KeyspaceError::SnapshotCorrupt(what);
                    let last_log_id: Option<LogId> = match &values[0] {
                        Some(raw) => {
                            bincode::deserialize(raw).map_err(|_| corrupt("applied position"))?
                        }
                        None => None,
                    };
                    let last_membership: StoredMembership = match &values[1] {
                        Some(raw) => {
                            bincode::deserialize(raw).map_err(|_| corrupt("membership"))?
                        }
                        None => StoredMembership::default(),
                    };
                    let meta = SnapshotMeta {
                        last_log_id,
                        last_membership,
                        snapshot_id: format!(
                            "{}-{}-{}",
                            last_log_id.map_or(0, |l| l.leader_id.term),
                            last_log_id.map_or(0, |l| l.index),
                            crate::write::now_ms()
                        ),
                    };
                    write_header(out, &meta)?;
                    Ok(meta)
                })?;
        let file = out.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, &self.snapshot_path)?;
        Ok(meta)
    }

    /// Opens the latest snapshot file, if there is a readable one.
    fn open_snapshot(&self) -> Option<(SnapshotMeta, std::fs::File)> {
        let mut file = std::fs::File::open(&self.snapshot_path).ok()?;
        match read_header(&mut file).and_then(|meta| {
            file.seek(SeekFrom::Start(0))?;
            Ok(meta)
        }) {
            Ok(meta) => Some((meta, file)),
            Err(e) => {
                warn!(path = %self.snapshot_path.display(), error = %e, "ignoring an unreadable snapshot file");
                None
            }
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let this = self.clone();
        let meta = tokio::task::spawn_blocking(move || this.write_snapshot())
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let file = tokio::fs::File::open(&self.snapshot_path)
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let bytes = file.metadata().await.map(|m| m.len()).unwrap_or(0);
        info!(
            bytes,
            index = meta.last_log_id.map_or(0, |l| l.index),
            "snapshot built"
        );
        Ok(Snapshot {
            meta,
            snapshot: Box::new(file),
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotBuilder = StateMachine;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), StorageError> {
        self.read_applied()
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<BatchResults>, StorageError>
    where
        I: IntoIterator<Item = Entry> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let mut out = Vec::new();
        let mut membership: Option<Vec<u8>> = None;
        for entry in entries {
            let applied =
                bincode::serialize(&Some(entry.log_id)).map_err(|e| sm_err(ErrorVerb::Write, e))?;
            let empty = OpBatch {
                now_ms: 0,
                hlc: 0,
                origin: u8::MAX,
                ops: Arc::from([]),
            };
            let (batch, results_expected) = match &entry.payload {
                EntryPayload::Normal(batch) => (batch, true),
                EntryPayload::Blank => (&empty, false),
                EntryPayload::Membership(m) => {
                    let stored = StoredMembership::new(Some(entry.log_id), m.clone());
                    membership =
                        Some(bincode::serialize(&stored).map_err(|e| sm_err(ErrorVerb::Write, e))?);
                    (&empty, false)
                }
            };
            let mut meta: Vec<(&[u8], Vec<u8>)> = vec![(KEY_APPLIED, applied)];
            if let Some(m) = membership.take() {
                meta.push((KEY_MEMBERSHIP, m));
            }
            let results = self
                .keyspace
                .apply_batch_with_meta(batch, &meta, Some(entry.log_id.index))
                .map_err(|e| sm_err(ErrorVerb::Write, e))?;
            out.push(BatchResults(if results_expected {
                results
            } else {
                Vec::new()
            }));
        }
        Ok(out)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        self.clone()
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<tokio::fs::File>, StorageError> {
        let file = tokio::fs::File::create(self.snapshot_path.with_extension("recv"))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(Box::new(file))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        mut snapshot: Box<tokio::fs::File>,
    ) -> Result<(), StorageError> {
        snapshot
            .flush()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        snapshot
            .sync_all()
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        drop(snapshot);
        let index = meta.last_log_id.map_or(0, |l| l.index);
        let received = self.snapshot_path.with_extension("recv");
        let path = self.snapshot_path.clone();
        let keyspace = self.keyspace.clone();
        let expected = meta.snapshot_id.clone();
        // The complete file becomes the latest snapshot first: an install cut short by a
        // crash is finished from it at the next start.
        let installed = tokio::task::spawn_blocking(move || {
            let mut file = std::fs::File::open(&received)?;
            let header = read_header(&mut file)?;
            if header.snapshot_id != expected {
                return Err(KeyspaceError::SnapshotCorrupt(
                    "received file is not the snapshot announced",
                ));
            }
            drop(file);
            std::fs::rename(&received, &path)?;
            let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            info!(bytes, index, "installing snapshot");
            import_file(&keyspace, &path)
        })
        .await
        .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        installed.map_err(|e| snap_err(ErrorVerb::Write, e))?;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let this = self.clone();
        let opened = tokio::task::spawn_blocking(move || this.open_snapshot())
            .await
            .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        Ok(opened.map(|(meta, file)| Snapshot {
            meta,
            snapshot: Box::new(tokio::fs::File::from_std(file)),
        }))
    }
}
