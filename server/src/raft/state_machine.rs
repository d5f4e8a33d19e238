//! The Raft state machine: applies committed entries to the keyspace. Each entry's ops, its
//! log id and (for membership entries) the membership land in one RocksDB write batch, so
//! after a crash the keyspace and its applied position agree. Snapshots are images of the
//! keyspace taken from one RocksDB snapshot.

use std::io::Cursor;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use openraft::storage::RaftStateMachine;
use openraft::{EntryPayload, ErrorSubject, ErrorVerb, OptionalSend, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use tracing::info;

use super::types::{
    BatchResults, Entry, LogId, Snapshot, SnapshotMeta, StorageError, StoredMembership, TypeConfig,
};
use crate::keyspace::Keyspace;
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

/// The latest snapshot, as kept on disk.
#[derive(Serialize, Deserialize, Clone)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: Vec<u8>,
}

/// The state machine; cheap to clone.
#[derive(Clone)]
pub struct StateMachine {
    keyspace: Arc<Keyspace>,
    snapshot_path: PathBuf,
    current: Arc<Mutex<Option<StoredSnapshot>>>,
}

impl StateMachine {
    /// A state machine over `keyspace`, keeping its latest snapshot at `snapshot_path`.
    pub fn new(keyspace: Arc<Keyspace>, snapshot_path: PathBuf) -> StateMachine {
        let current = std::fs::read(&snapshot_path)
            .ok()
            .and_then(|raw| bincode::deserialize::<StoredSnapshot>(&raw).ok());
        StateMachine {
            keyspace,
            snapshot_path,
            current: Arc::new(Mutex::new(current)),
        }
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

    fn save_snapshot(&self, snap: StoredSnapshot) -> Result<(), StorageError> {
        let bytes = bincode::serialize(&snap).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        let tmp = self.snapshot_path.with_extension("tmp");
        std::fs::write(&tmp, bytes).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        std::fs::rename(&tmp, &self.snapshot_path).map_err(|e| snap_err(ErrorVerb::Write, e))?;
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = Some(snap);
        Ok(())
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachine {
    async fn build_snapshot(&mut self) -> Result<Snapshot, StorageError> {
        let keyspace = self.keyspace.clone();
        let (data, values) =
            tokio::task::spawn_blocking(move || keyspace.export(&[KEY_APPLIED, KEY_MEMBERSHIP]))
                .await
                .map_err(|e| snap_err(ErrorVerb::Read, e))?
                .map_err(|e| snap_err(ErrorVerb::Read, e))?;
        let decode_err = |e| snap_err(ErrorVerb::Read, e);
        let last_log_id: Option<LogId> = match &values[0] {
            Some(raw) => bincode::deserialize(raw).map_err(decode_err)?,
            None => None,
        };
        let last_membership: StoredMembership = match &values[1] {
            Some(raw) => bincode::deserialize(raw).map_err(decode_err)?,
            None => StoredMembership::default(),
        };
        let snapshot_id = format!(
            "{}-{}-{}",
            last_log_id.map_or(0, |l| l.leader_id.term),
            last_log_id.map_or(0, |l| l.index),
            crate::write::now_ms()
        );
        let meta = SnapshotMeta {
            last_log_id,
            last_membership,
            snapshot_id,
        };
        info!(
            bytes = data.len(),
            index = last_log_id.map_or(0, |l| l.index),
            "snapshot built"
        );
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data: data.clone(),
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.save_snapshot(stored))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        Ok(Snapshot {
            meta,
            snapshot: Box::new(Cursor::new(data)),
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
                ops: Vec::new(),
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

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError> {
        let data = snapshot.into_inner();
        info!(
            bytes = data.len(),
            index = meta.last_log_id.map_or(0, |l| l.index),
            "installing snapshot"
        );
        let keyspace = self.keyspace.clone();
        let image = data.clone();
        tokio::task::spawn_blocking(move || keyspace.import(&image))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))?
            .map_err(|e| snap_err(ErrorVerb::Write, e))?;
        // The image carries the applied position and membership of the sender's state machine.
        let stored = StoredSnapshot {
            meta: meta.clone(),
            data,
        };
        let this = self.clone();
        tokio::task::spawn_blocking(move || this.save_snapshot(stored))
            .await
            .map_err(|e| snap_err(ErrorVerb::Write, e))??;
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, StorageError> {
        let current = self
            .current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        Ok(current.map(|s| Snapshot {
            meta: s.meta,
            snapshot: Box::new(Cursor::new(s.data)),
        }))
    }
}
