//! Applying ops: the deterministic state transition behind every write. Reads inside a batch
//! see the batch's own earlier writes (an overlay), and every change lands in one RocksDB
//! write batch together with the expiry index and the key counts.

use std::collections::HashMap;

type Overlay = HashMap<Bytes, Option<StoredValue>, ahash::RandomState>;

use bytes::{Bytes, BytesMut};
use rocksdb::WriteBatch;

use super::number::{format_float, parse_f64_strict, parse_i64_strict};
use super::{rocks, Keyspace, StorageError, StoredValue, ValueType, DATABASES, MAX_STRING_LEN};
use crate::op::{ExpireCond, ExpireSet, Op, OpError, OpResult, SetCond, SetReply};

/// The state of one batch being applied.
pub(super) struct BatchCtx<'a> {
    ks: &'a Keyspace,
    now_ms: u64,
    batch: WriteBatch,
    /// Data key → new value (`None` = deleted) for every key this batch changed.
    overlay: Overlay,
    /// Key count change per database.
    count_delta: [i64; DATABASES],
    /// Databases emptied by FLUSHDB/FLUSHALL in this batch (reads skip storage for them).
    flushed: [bool; DATABASES],
}

impl<'a> BatchCtx<'a> {
    pub(super) fn new(ks: &'a Keyspace, now_ms: u64) -> BatchCtx<'a> {
        BatchCtx {
            ks,
            now_ms,
            batch: WriteBatch::default(),
            overlay: Overlay::default(),
            count_delta: [0; DATABASES],
            flushed: [false; DATABASES],
        }
    }

    /// The value physically stored (maybe expired), as this batch sees it.
    fn read_raw(&self, db: u8, key: &[u8]) -> Result<Option<StoredValue>, StorageError> {
        let data_key = rocks::data_key(db, key);
        if let Some(v) = self.overlay.get(data_key.as_slice()) {
            return Ok(v.clone());
        }
        if self.flushed[db as usize] {
            return Ok(None);
        }
        if let Some(cached) = self.ks.hot.get(&data_key) {
            return Ok(cached);
        }
        self.ks.read_storage(&data_key)
    }

    /// Returns (raw, live): the stored value and the same filtered by expiry.
    fn read(
        &self,
        db: u8,
        key: &[u8],
    ) -> Result<(Option<StoredValue>, Option<StoredValue>), StorageError> {
        let raw = self.read_raw(db, key)?;
        let live = raw.clone().filter(|v| !v.is_expired(self.now_ms));
        Ok((raw, live))
    }

    /// Writes `new` at `key`, given what was physically there (`old_raw`).
    fn write(
        &mut self,
        db: u8,
        key: &[u8],
        old_raw: Option<&StoredValue>,
        new: Option<StoredValue>,
    ) {
        let data_key = Bytes::from(rocks::data_key(db, key));
        let old_at = old_raw.and_then(StoredValue::expire_at);
        let new_at = new.as_ref().and_then(StoredValue::expire_at);
        if old_at != new_at {
            if let Some(at) = old_at {
                self.batch
                    .delete_cf(self.cf(rocks::CF_EXPIRY), rocks::expiry_key(db, at, key));
            }
            if let Some(at) = new_at {
                self.batch.put_cf(
                    self.cf(rocks::CF_EXPIRY),
                    rocks::expiry_key(db, at, key),
                    b"",
                );
            }
        }
        match (&new, old_raw.is_some()) {
            (Some(v), existed) => {
                self.batch
                    .put_cf(self.cf(rocks::CF_DATA), &data_key, v.as_bytes());
                if !existed {
                    self.count_delta[db as usize] += 1;
                }
            }
            (None, true) => {
                self.batch.delete_cf(self.cf(rocks::CF_DATA), &data_key);
                self.count_delta[db as usize] -= 1;
            }
            (None, false) => {}
        }
        self.overlay.insert(data_key, new);
    }

    fn cf(&self, name: &str) -> &'a rocksdb::ColumnFamily {
        rocks::cf(&self.ks.db, name)
    }

    fn flush_db(&mut self, db: u8) {
        self.batch
            .delete_range_cf(self.cf(rocks::CF_DATA), vec![db], vec![db + 1]);
        self.batch
            .delete_range_cf(self.cf(rocks::CF_EXPIRY), vec![db], vec![db + 1]);
        self.overlay.retain(|k, _| k.first() != Some(&db));
        let current = self.ks.counts[db as usize].load(std::sync::atomic::Ordering::Relaxed);
        self.count_delta[db as usize] = -current;
        self.flushed[db as usize] = true;
    }

    /// Applies one op.
    pub(super) fn apply(&mut self, op: &Op) -> Result<OpResult, StorageError> {
        Ok(match op {
            Op::Set {
                db,
                key,
                value,
                expire,
                cond,
                reply,
            } => {
                let (raw, live) = self.read(*db, key)?;
                if live.as_ref().is_some_and(|v| v.kind() != ValueType::String)
                    && *reply == SetReply::Old
                {
                    return Ok(OpResult::Err(OpError::WrongType));
                }
                let allowed = match cond {
                    SetCond::Always => true,
                    SetCond::Nx => live.is_none(),
                    SetCond::Xx => live.is_some(),
                };
                if allowed {
                    let at = self.resolve_expire(*expire, live.as_ref());
                    let new = StoredValue::new(ValueType::String, at, value);
                    self.write(*db, key, raw.as_ref(), Some(new));
                }
                match reply {
                    SetReply::OkOrNil if allowed => OpResult::Ok,
                    SetReply::OkOrNil => OpResult::Nil,
                    SetReply::Flag => OpResult::Int(allowed as i64),
                    SetReply::Old => live.map_or(OpResult::Nil, |v| OpResult::Bulk(v.payload())),
                }
            }
            Op::MSet { db, pairs, nx } => {
                if *nx {
                    for (k, _) in pairs {
                        if self.read(*db, k)?.1.is_some() {
                            return Ok(OpResult::Int(0));
                        }
                    }
                }
                for (k, v) in pairs {
                    let raw = self.read_raw(*db, k)?;
                    self.write(
                        *db,
                        k,
                        raw.as_ref(),
                        Some(StoredValue::new(ValueType::String, None, v)),
                    );
                }
                if *nx {
                    OpResult::Int(1)
                } else {
                    OpResult::Ok
                }
            }
            Op::Del { db, keys } => {
                let mut removed = 0;
                for k in keys {
                    let (raw, live) = self.read(*db, k)?;
                    if raw.is_some() {
                        self.write(*db, k, raw.as_ref(), None);
                    }
                    removed += live.is_some() as i64;
                }
                OpResult::Int(removed)
            }
            Op::GetDel { db, key } => {
                let (raw, live) = self.read(*db, key)?;
                match live {
                    None => OpResult::Nil,
                    Some(v) if v.kind() != ValueType::String => OpResult::Err(OpError::WrongType),
                    Some(v) => {
                        self.write(*db, key, raw.as_ref(), None);
                        OpResult::Bulk(v.payload())
                    }
                }
            }
            Op::GetEx { db, key, expire } => {
                let (raw, live) = self.read(*db, key)?;
                match live {
                    None => OpResult::Nil,
                    Some(v) if v.kind() != ValueType::String => OpResult::Err(OpError::WrongType),
                    Some(v) => {
                        let at = self.resolve_expire(*expire, Some(&v));
                        if at.is_some_and(|at| at <= self.now_ms) {
                            self.write(*db, key, raw.as_ref(), None);
                        } else if at != v.expire_at() {
                            self.write(*db, key, raw.as_ref(), Some(v.with_expire(at)));
                        }
                        OpResult::Bulk(v.payload())
                    }
                }
            }
            Op::IncrBy { db, key, delta } => {
                let (raw, live) = self.read(*db, key)?;
                let current = match &live {
                    None => 0,
                    Some(v) if v.kind() != ValueType::String => {
                        return Ok(OpResult::Err(OpError::WrongType))
                    }
                    Some(v) => match parse_i64_strict(v.payload_ref()) {
                        Some(n) => n,
                        None => return Ok(OpResult::Err(OpError::NotInteger)),
                    },
                };
                let Some(next) = current.checked_add(*delta) else {
                    return Ok(OpResult::Err(OpError::Overflow));
                };
                let at = live.as_ref().and_then(StoredValue::expire_at);
                let mut buf = itoa::Buffer::new();
                let new = StoredValue::new(ValueType::String, at, buf.format(next).as_bytes());
                self.write(*db, key, raw.as_ref(), Some(new));
                OpResult::Int(next)
            }
            Op::IncrByFloat { db, key, delta } => {
                let (raw, live) = self.read(*db, key)?;
                let current = match &live {
                    None => 0.0,
                    Some(v) if v.kind() != ValueType::String => {
                        return Ok(OpResult::Err(OpError::WrongType))
                    }
                    Some(v) => match parse_f64_strict(v.payload_ref()) {
                        Some(n) => n,
                        None => return Ok(OpResult::Err(OpError::NotFloat)),
                    },
                };
                let next = current + delta;
                if !next.is_finite() {
                    return Ok(OpResult::Err(OpError::NanOrInfinity));
                }
                let text = format_float(next);
                let at = live.as_ref().and_then(StoredValue::expire_at);
                self.write(
                    *db,
                    key,
                    raw.as_ref(),
                    Some(StoredValue::new(ValueType::String, at, text.as_bytes())),
                );
                OpResult::Bulk(Bytes::from(text))
            }
            Op::Append { db, key, value } => {
                let (raw, live) = self.read(*db, key)?;
                let (at, mut buf) = match &live {
                    None => (None, BytesMut::new()),
                    Some(v) if v.kind() != ValueType::String => {
                        return Ok(OpResult::Err(OpError::WrongType))
                    }
                    Some(v) => (v.expire_at(), BytesMut::from(v.payload_ref())),
                };
                if buf.len() + value.len() > MAX_STRING_LEN {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                buf.extend_from_slice(value);
                let len = buf.len() as i64;
                self.write(
                    *db,
                    key,
                    raw.as_ref(),
                    Some(StoredValue::new(ValueType::String, at, &buf)),
                );
                OpResult::Int(len)
            }
            Op::SetRange {
                db,
                key,
                offset,
                value,
            } => {
                let (raw, live) = self.read(*db, key)?;
                let (at, mut buf) = match &live {
                    None => (None, Vec::new()),
                    Some(v) if v.kind() != ValueType::String => {
                        return Ok(OpResult::Err(OpError::WrongType))
                    }
                    Some(v) => (v.expire_at(), v.payload_ref().to_vec()),
                };
                if value.is_empty() {
                    return Ok(OpResult::Int(buf.len() as i64));
                }
                let Some(end) = usize::try_from(*offset)
                    .ok()
                    .and_then(|o| o.checked_add(value.len()))
                else {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                };
                if end > MAX_STRING_LEN {
                    return Ok(OpResult::Err(OpError::StringTooLong));
                }
                if buf.len() < end {
                    buf.resize(end, 0);
                }
                buf[end - value.len()..end].copy_from_slice(value);
                self.write(
                    *db,
                    key,
                    raw.as_ref(),
                    Some(StoredValue::new(ValueType::String, at, &buf)),
                );
                OpResult::Int(buf.len() as i64)
            }
            Op::Expire {
                db,
                key,
                at_ms,
                cond,
            } => {
                let (raw, live) = self.read(*db, key)?;
                let Some(v) = live else {
                    return Ok(OpResult::Int(0));
                };
                let current = v.expire_at();
                let allowed = match (cond, at_ms) {
                    (ExpireCond::Always, _) => true,
                    (ExpireCond::Nx, _) => current.is_none(),
                    (ExpireCond::Xx, _) => current.is_some(),
                    // No expiry counts as infinite.
                    (ExpireCond::Gt, Some(new)) => current.is_some_and(|c| *new > c),
                    (ExpireCond::Lt, Some(new)) => current.is_none_or(|c| *new < c),
                    (ExpireCond::XxLt, Some(new)) => current.is_some_and(|c| *new < c),
                    (ExpireCond::Gt | ExpireCond::Lt | ExpireCond::XxLt, None) => false,
                };
                if !allowed {
                    return Ok(OpResult::Int(0));
                }
                match at_ms {
                    None if current.is_none() => OpResult::Int(0),
                    None => {
                        self.write(*db, key, raw.as_ref(), Some(v.with_expire(None)));
                        OpResult::Int(1)
                    }
                    Some(at) if *at <= self.now_ms => {
                        self.write(*db, key, raw.as_ref(), None);
                        OpResult::Int(1)
                    }
                    Some(at) => {
                        self.write(*db, key, raw.as_ref(), Some(v.with_expire(Some(*at))));
                        OpResult::Int(1)
                    }
                }
            }
            Op::Rename { db, src, dst, nx } => {
                let (src_raw, src_live) = self.read(*db, src)?;
                let Some(v) = src_live else {
                    return Ok(OpResult::Err(OpError::NoSuchKey));
                };
                if src == dst {
                    return Ok(if *nx { OpResult::Int(0) } else { OpResult::Ok });
                }
                let (dst_raw, dst_live) = self.read(*db, dst)?;
                if *nx && dst_live.is_some() {
                    return Ok(OpResult::Int(0));
                }
                self.write(*db, src, src_raw.as_ref(), None);
                self.write(*db, dst, dst_raw.as_ref(), Some(v));
                if *nx {
                    OpResult::Int(1)
                } else {
                    OpResult::Ok
                }
            }
            Op::Copy {
                db,
                src,
                dst_db,
                dst,
                replace,
            } => {
                let (_, src_live) = self.read(*db, src)?;
                let Some(v) = src_live else {
                    return Ok(OpResult::Int(0));
                };
                if db == dst_db && src == dst {
                    return Ok(OpResult::Int(0));
                }
                let (dst_raw, dst_live) = self.read(*dst_db, dst)?;
                if dst_live.is_some() && !replace {
                    return Ok(OpResult::Int(0));
                }
                self.write(*dst_db, dst, dst_raw.as_ref(), Some(v));
                OpResult::Int(1)
            }
            Op::ExpireIfDue { db, key, at_ms } => {
                let raw = self.read_raw(*db, key)?;
                match raw {
                    Some(v) if v.expire_at() == Some(*at_ms) && *at_ms <= self.now_ms => {
                        self.write(*db, key, Some(&v), None);
                        OpResult::Int(1)
                    }
                    Some(_) => OpResult::Int(0),
                    None => {
                        // A stale index entry (should not happen): drop it.
                        self.batch.delete_cf(
                            self.cf(rocks::CF_EXPIRY),
                            rocks::expiry_key(*db, *at_ms, key),
                        );
                        OpResult::Int(0)
                    }
                }
            }
            Op::FlushDb { db } => {
                if (*db as usize) < DATABASES {
                    self.flush_db(*db);
                }
                OpResult::Ok
            }
            Op::FlushAll => {
                for db in 0..DATABASES as u8 {
                    self.flush_db(db);
                }
                OpResult::Ok
            }
        })
    }

    fn resolve_expire(&self, expire: ExpireSet, live: Option<&StoredValue>) -> Option<u64> {
        match expire {
            ExpireSet::Clear => None,
            ExpireSet::Keep => live.and_then(StoredValue::expire_at),
            ExpireSet::At(at) => Some(at),
        }
    }

    /// Writes the batch and publishes it to the hot cache.
    pub(super) fn commit(mut self, extra_meta: &[(&[u8], Vec<u8>)]) -> Result<(), StorageError> {
        if self.overlay.is_empty()
            && !self.flushed.iter().any(|f| *f)
            && self.batch.is_empty()
            && extra_meta.is_empty()
        {
            return Ok(());
        }
        let meta = self.cf(rocks::CF_META);
        for (k, v) in extra_meta {
            self.batch.put_cf(meta, k, v);
        }
        let mut new_counts = [0i64; DATABASES];
        for (db, delta) in self.count_delta.iter().enumerate() {
            let current = self.ks.counts[db].load(std::sync::atomic::Ordering::Relaxed);
            new_counts[db] = current + delta;
            if *delta != 0 {
                self.batch.put_cf(
                    meta,
                    rocks::count_key(db as u8),
                    new_counts[db].to_be_bytes(),
                );
            }
        }
        self.ks.db.write_opt(self.batch, &self.ks.write_options())?;
        for (db, count) in new_counts.iter().enumerate() {
            self.ks.counts[db].store(*count, std::sync::atomic::Ordering::Relaxed);
        }
        let flushed = self.flushed.iter().any(|f| *f);
        self.ks.hot.publish(flushed, self.overlay.iter());
        Ok(())
    }
}
