//! The replicated operations: what a write command turns into, what is stored in the Raft log
//! (later) and applied to the keyspace. Applying an [`OpBatch`] must be deterministic: it reads
//! no clock (the proposer stamps `now_ms`), so every replica computes the same results.

use std::sync::Arc;

use bytes::Bytes;

use crate::keyspace::Stamp;
use serde::{Deserialize, Serialize};

/// Encoding version written in front of every serialized batch.
pub const OP_FORMAT_VERSION: u8 = 2;

/// A database index (0..[`crate::keyspace::DATABASES`]).
pub type DbIndex = u8;

/// How a write changes the key's expiry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireSet {
    /// Drop any expiry (plain SET).
    Clear,
    /// Keep the current expiry (KEEPTTL, APPEND, INCR …).
    Keep,
    /// Absolute expiry in unix milliseconds.
    At(u64),
}

/// SET's NX / XX condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetCond {
    /// Unconditional.
    Always,
    /// Only if the key does not exist.
    Nx,
    /// Only if the key exists.
    Xx,
}

/// Which reply a SET-like op gives.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetReply {
    /// `+OK`, or nil when the condition failed (SET, SET NX/XX, SETEX, PSETEX).
    OkOrNil,
    /// `:1` when set, `:0` when not (SETNX).
    Flag,
    /// The old value or nil (SET … GET, GETSET).
    Old,
}

/// The NX / XX / GT / LT condition of EXPIRE and friends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ExpireCond {
    /// Unconditional.
    Always,
    /// Only if the key has no expiry.
    Nx,
    /// Only if the key has an expiry.
    Xx,
    /// Only if the new expiry is greater than the current one (no expiry = infinite).
    Gt,
    /// Only if the new expiry is less than the current one (no expiry = infinite).
    Lt,
    /// XX and LT: only if the key has an expiry and the new one is less.
    XxLt,
}

/// BITOP's operation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitOpKind {
    /// Bitwise AND of every source.
    And,
    /// Bitwise OR of every source.
    Or,
    /// Bitwise XOR of every source.
    Xor,
    /// Bitwise NOT of the one source.
    Not,
}

/// BITFIELD's rule for a SET or INCRBY that leaves the field's range.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Overflow {
    /// Keep the low bits (the default).
    Wrap,
    /// Stop at the type's minimum or maximum.
    Sat,
    /// Write nothing and answer nil.
    Fail,
}

/// What one BITFIELD subcommand does to its field.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum BitFieldAction {
    /// Read the field.
    Get,
    /// Store the value; answers the old one.
    Set(i64),
    /// Add to the field; answers the new value.
    IncrBy(i64),
}

/// One BITFIELD subcommand on one field: `bits` wide (1-64 signed, 1-63 unsigned) at bit
/// `offset`, most significant bit first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BitFieldOp {
    /// GET, SET or INCRBY.
    pub action: BitFieldAction,
    /// Signed (`i`) or unsigned (`u`) type.
    pub signed: bool,
    /// Field width in bits.
    pub bits: u8,
    /// Bit offset of the field's first bit.
    pub offset: u64,
    /// The OVERFLOW rule in force for this subcommand.
    pub overflow: Overflow,
}

/// One replicated write.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum Op {
    /// SET and its relatives.
    Set {
        /// Database.
        db: DbIndex,
        /// Key (a slice of the request it arrived in, where decoded so: see `shared_bytes`).
        #[serde(deserialize_with = "crate::shared_bytes::deserialize")]
        key: Bytes,
        /// New value (shared with the request in the same way).
        #[serde(deserialize_with = "crate::shared_bytes::deserialize")]
        value: Bytes,
        /// Expiry change.
        expire: ExpireSet,
        /// NX / XX.
        cond: SetCond,
        /// Reply shape.
        reply: SetReply,
    },
    /// MSET (`nx = false`) or MSETNX (`nx = true`, all or nothing).
    MSet {
        /// Database.
        db: DbIndex,
        /// Key / value pairs.
        pairs: Vec<(Bytes, Bytes)>,
        /// MSETNX semantics.
        nx: bool,
    },
    /// DEL / UNLINK: replies the number of keys removed.
    Del {
        /// Database.
        db: DbIndex,
        /// Keys.
        keys: Vec<Bytes>,
    },
    /// GETDEL.
    GetDel {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
    },
    /// GETEX with an expiry change (GETEX without options is a read).
    GetEx {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// `Clear` = PERSIST, `At` = new expiry.
        expire: ExpireSet,
    },
    /// INCR / DECR / INCRBY / DECRBY.
    IncrBy {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// Signed increment.
        delta: i64,
    },
    /// INCRBYFLOAT.
    IncrByFloat {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// Increment.
        delta: f64,
    },
    /// APPEND: replies the new length.
    Append {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// Suffix.
        value: Bytes,
    },
    /// SETRANGE: replies the new length.
    SetRange {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// Byte offset.
        offset: u64,
        /// Bytes to write there.
        value: Bytes,
    },
    /// EXPIRE family (`at_ms` absolute; `None` = PERSIST). Replies 1 / 0.
    Expire {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// New absolute expiry, or `None` to persist.
        at_ms: Option<u64>,
        /// NX / XX / GT / LT.
        cond: ExpireCond,
    },
    /// RENAME (`nx = false`) / RENAMENX (`nx = true`).
    Rename {
        /// Database.
        db: DbIndex,
        /// Source key.
        src: Bytes,
        /// Destination key.
        dst: Bytes,
        /// RENAMENX semantics.
        nx: bool,
    },
    /// COPY src dst [DB n] [REPLACE].
    Copy {
        /// Source database.
        db: DbIndex,
        /// Source key.
        src: Bytes,
        /// Destination database.
        dst_db: DbIndex,
        /// Destination key.
        dst: Bytes,
        /// Overwrite an existing destination.
        replace: bool,
    },
    /// Active expiry: delete `key` if its expiry is still `at_ms` and due at the batch time.
    ExpireIfDue {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// The expiry the index saw.
        at_ms: u64,
    },
    /// FLUSHDB.
    FlushDb {
        /// Database.
        db: DbIndex,
    },
    /// FLUSHALL.
    FlushAll,
    /// Key states shipped from another region's outbox entry `index`: merged, and skipped
    /// when `index` is at or below the watermark already applied from `origin`.
    Merge {
        /// Origin region id.
        origin: u8,
        /// The entry's index in the origin region's log.
        index: u64,
        /// The entry's HLC (the receiving leader's clock observes it).
        hlc: u64,
        /// (database, key, encoded state).
        states: Vec<(DbIndex, Bytes, Bytes)>,
    },
    /// Drops outbox entries up to `upto` (every other region has them).
    TrimOutbox {
        /// Last index to drop.
        upto: u64,
    },
    /// Records what region `from` had merged from each region (HLCs), as of the entries of
    /// `from` merged before it: the input of tombstone collection.
    Seen {
        /// Region that reported.
        from: u8,
        /// (origin region, HLC of its last entry merged in `from`).
        hlcs: Vec<(u8, u64)>,
    },
    /// Removes tombstones every region is known to have merged (each only if the key still
    /// holds exactly that tombstone).
    Forget {
        /// (database, key, register stamp of the tombstone).
        tombstones: Vec<(DbIndex, Bytes, Stamp)>,
    },
    /// EXEC after WATCH: answers OK when every watched key still holds what it held when
    /// watched; otherwise answers nil and the next `then` ops of the batch (the transaction's)
    /// are skipped, each answering nil.
    Unchanged {
        /// (database, key, the fingerprint of its stored encoding when watched; `None`: it did
        /// not exist).
        keys: Vec<(DbIndex, Bytes, Option<u64>)>,
        /// Ops after this one that belong to the transaction.
        then: u32,
    },
    /// A read inside a transaction (changes nothing): answers the key's stored encoding as this
    /// point of the batch sees it when the key is live, nil otherwise. EXEC answers TYPE, TTL,
    /// STRLEN … from it, so they read between the transaction's writes.
    ReadKey {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
    },
    /// DBSIZE inside a transaction (changes nothing): the database's key count at this point
    /// of the batch.
    CountKeys {
        /// Database.
        db: DbIndex,
    },
    /// SETBIT: sets or clears one bit (growing the string with zero bytes); replies the bit's
    /// old value.
    SetBit {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// Bit offset (0: the most significant bit of the first byte).
        offset: u64,
        /// Set (true) or clear.
        on: bool,
    },
    /// MOVE: the key, with its expiry, to another database, unless a live key of that name is
    /// there. Replies 1 / 0.
    Move {
        /// Source database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// Destination database.
        dst_db: DbIndex,
    },
    /// GETEX with an invalid expiry: nil when the key is not live, `error` otherwise (Redis
    /// looks the key up before it checks the expiry).
    FailIfLive {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// The error for a live key.
        error: OpError,
    },
    /// BITOP: `dst` becomes the bitwise combination of the sources' values (missing bytes
    /// count as zeros, the result is as long as the longest source), or is deleted when every
    /// source is empty or missing. Replies the result's length.
    BitOp {
        /// Database.
        db: DbIndex,
        /// The operation.
        kind: BitOpKind,
        /// Destination key.
        dst: Bytes,
        /// Source keys (one for NOT).
        srcs: Vec<Bytes>,
    },
    /// BITFIELD: its subcommands in order on one string; a SET or INCRBY first grows the string
    /// with zero bytes to hold every written field (creating the key). Replies one integer (or
    /// nil, for a write OVERFLOW FAIL refused) per subcommand.
    BitField {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// The subcommands.
        ops: Vec<BitFieldOp>,
    },
    /// INCRBYFLOAT with the increment as the client wrote it (a finite float), so that an
    /// increment of more digits than a double holds is added exactly. (`IncrByFloat`, which
    /// carries a double, stays for entries written before.)
    IncrByDecimal {
        /// Database.
        db: DbIndex,
        /// Key.
        key: Bytes,
        /// The increment's text.
        delta: Bytes,
    },
    /// EXEC after WATCH, as [`Op::Unchanged`], and a key missing when watched must also have
    /// the same churn counter (see `Keyspace::churn`): not created and removed again since.
    /// The counters are compared only in the region that read them and in the churn epoch
    /// they were read in; elsewhere the check is `Unchanged`'s. (`Unchanged` stays for entries
    /// written before.)
    UnchangedSince {
        /// (database, key, the fingerprint of its stored encoding when watched; `None`: it did
        /// not exist).
        keys: Vec<(DbIndex, Bytes, Option<u64>)>,
        /// Each key's (churn epoch, churn counter) when watched, in the order of `keys`.
        churn: Vec<(u64, u64)>,
        /// The region whose counters these are.
        region: u8,
        /// Ops after this one that belong to the transaction.
        then: u32,
    },
    /// Zeroes the churn counters and starts a churn epoch at this entry's log index (proposed
    /// once by a leader that found none, before `ChurnEpochMixed`; still applied from logs).
    ChurnEpoch,
    /// `ChurnEpoch` whose slots come from the mixed hash (`keyspace::churn_slot`): proposed once
    /// by a leader whose region has no epoch of it yet.
    ChurnEpochMixed,
}

impl Op {
    /// Checks what a client's parser would have refused, for ops that may come from another
    /// node (forwarded writes, shipped states): every database index is in range. The apply
    /// answers an op that fails with the error instead of applying it, the same way on every
    /// replica, rather than failing (an index out of range panicked the state machine).
    pub fn check_dbs(&self) -> Result<(), OpError> {
        let ok = |db: DbIndex| (db as usize) < crate::keyspace::DATABASES;
        let fine = match self {
            Op::Set { db, .. }
            | Op::MSet { db, .. }
            | Op::Del { db, .. }
            | Op::GetDel { db, .. }
            | Op::GetEx { db, .. }
            | Op::IncrBy { db, .. }
            | Op::IncrByFloat { db, .. }
            | Op::IncrByDecimal { db, .. }
            | Op::Append { db, .. }
            | Op::SetRange { db, .. }
            | Op::SetBit { db, .. }
            | Op::Expire { db, .. }
            | Op::Rename { db, .. }
            | Op::ExpireIfDue { db, .. }
            | Op::ReadKey { db, .. }
            | Op::CountKeys { db }
            | Op::FailIfLive { db, .. }
            | Op::BitOp { db, .. }
            | Op::BitField { db, .. }
            | Op::FlushDb { db } => ok(*db),
            Op::Copy { db, dst_db, .. } | Op::Move { db, dst_db, .. } => ok(*db) && ok(*dst_db),
            Op::Merge { states, .. } => states.iter().all(|(db, _, _)| ok(*db)),
            Op::Forget { tombstones } => tombstones.iter().all(|(db, _, _)| ok(*db)),
            Op::Unchanged { keys, .. } | Op::UnchangedSince { keys, .. } => {
                keys.iter().all(|(db, _, _)| ok(*db))
            }
            Op::FlushAll
            | Op::TrimOutbox { .. }
            | Op::Seen { .. }
            | Op::ChurnEpoch
            | Op::ChurnEpochMixed => true,
        };
        if fine {
            Ok(())
        } else {
            Err(OpError::DbIndexOutOfRange)
        }
    }

    /// Whether the op may change keys (reads, checks and bookkeeping do not).
    pub fn changes_keys(&self) -> bool {
        !matches!(
            self,
            Op::ReadKey { .. }
                | Op::CountKeys { .. }
                | Op::Unchanged { .. }
                | Op::UnchangedSince { .. }
                | Op::ChurnEpoch
                | Op::ChurnEpochMixed
                | Op::FailIfLive { .. }
                | Op::TrimOutbox { .. }
                | Op::Seen { .. }
        )
    }

    /// About the bytes this op takes on the wire and in the log (its keys and values; a few
    /// bytes of framing are not counted). Bounds the size of Raft entries and replicated writes.
    pub fn approx_size(&self) -> usize {
        let pairs = |p: &[(Bytes, Bytes)]| p.iter().map(|(k, v)| k.len() + v.len() + 16).sum();
        16 + match self {
            Op::Set { key, value, .. } | Op::Append { key, value, .. } => key.len() + value.len(),
            Op::SetRange { key, value, .. } => key.len() + value.len(),
            Op::MSet { pairs: p, .. } => pairs(p),
            Op::Del { keys, .. } => keys.iter().map(|k| k.len() + 8).sum(),
            Op::Merge { states, .. } => states.iter().map(|(_, k, v)| k.len() + v.len() + 16).sum(),
            Op::Unchanged { keys, .. } => keys.iter().map(|(_, k, _)| k.len() + 16).sum(),
            Op::UnchangedSince { keys, .. } => keys.iter().map(|(_, k, _)| k.len() + 24).sum(),
            Op::Forget { tombstones } => tombstones.iter().map(|(_, k, _)| k.len() + 24).sum(),
            Op::Rename { src, dst, .. } | Op::Copy { src, dst, .. } => src.len() + dst.len(),
            Op::BitOp { dst, srcs, .. } => {
                dst.len() + srcs.iter().map(|k| k.len() + 8).sum::<usize>()
            }
            Op::BitField { key, ops, .. } => key.len() + ops.len() * 32,
            other => other.first_key().map_or(0, Bytes::len),
        }
    }

    /// The database and key this op changes first (for logging and routing).
    pub fn first_key(&self) -> Option<&Bytes> {
        match self {
            Op::Set { key, .. }
            | Op::GetDel { key, .. }
            | Op::GetEx { key, .. }
            | Op::IncrBy { key, .. }
            | Op::IncrByFloat { key, .. }
            | Op::IncrByDecimal { key, .. }
            | Op::Append { key, .. }
            | Op::SetRange { key, .. }
            | Op::SetBit { key, .. }
            | Op::BitField { key, .. }
            | Op::Move { key, .. }
            | Op::FailIfLive { key, .. }
            | Op::Expire { key, .. }
            | Op::ReadKey { key, .. }
            | Op::ExpireIfDue { key, .. } => Some(key),
            Op::MSet { pairs, .. } => pairs.first().map(|(k, _)| k),
            Op::Del { keys, .. } => keys.first(),
            Op::Rename { src, .. } | Op::Copy { src, .. } => Some(src),
            Op::BitOp { dst, .. } => Some(dst),
            Op::Merge { states, .. } => states.first().map(|(_, k, _)| k),
            Op::Forget { tombstones } => tombstones.first().map(|(_, k, _)| k),
            // Routed with the transaction's ops, not by the keys it watches.
            Op::Unchanged { .. }
            | Op::UnchangedSince { .. }
            | Op::ChurnEpoch
            | Op::ChurnEpochMixed => None,
            Op::FlushDb { .. }
            | Op::FlushAll
            | Op::CountKeys { .. }
            | Op::TrimOutbox { .. }
            | Op::Seen { .. } => None,
        }
    }
}

/// Ops proposed together, applied in order in one storage write batch.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct OpBatch {
    /// The proposer's clock when it built the batch (unix ms): the "now" every replica uses
    /// for expiry decisions while applying this batch.
    pub now_ms: u64,
    /// The proposer's hybrid logical clock: stamps every value the batch writes.
    pub hlc: u64,
    /// The region that proposed the batch (its id in the topology).
    pub origin: u8,
    /// The ops, applied in order. Shared: the log store's recent entries, the state machine
    /// and replication to followers read the same batch, and a clone of an entry is then a
    /// count increment instead of a copy of every op (a follower's deep copies and their
    /// frees were about a tenth of its Raft thread under SET -P16).
    pub ops: Arc<[Op]>,
}

impl OpBatch {
    /// Serializes the batch with its format version byte.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = vec![OP_FORMAT_VERSION];
        // Serialising plain owned data into a Vec cannot fail.
        bincode::serialize_into(&mut out, self).expect("OpBatch serialises into a Vec");
        out
    }

    /// Decodes a batch written by [`OpBatch::encode`].
    pub fn decode(bytes: &[u8]) -> Result<OpBatch, OpDecodeError> {
        match bytes.split_first() {
            Some((&OP_FORMAT_VERSION, rest)) => {
                bincode::deserialize(rest).map_err(|e| OpDecodeError::Corrupt(e.to_string()))
            }
            Some((&v, _)) => Err(OpDecodeError::UnknownVersion(v)),
            None => Err(OpDecodeError::Corrupt("empty".into())),
        }
    }
}

/// A stored or received batch could not be decoded.
#[derive(Debug, thiserror::Error)]
pub enum OpDecodeError {
    /// Written by a newer version.
    #[error("unknown op format version {0}")]
    UnknownVersion(u8),
    /// Bytes do not decode.
    #[error("corrupt op batch: {0}")]
    Corrupt(String),
}

/// Why an op did not apply; answered to the client, the batch goes on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum OpError {
    /// The key holds another type.
    #[error("wrong type")]
    WrongType,
    /// The stored value is not an integer.
    #[error("not an integer")]
    NotInteger,
    /// The stored value is not a float.
    #[error("not a float")]
    NotFloat,
    /// Integer overflow.
    #[error("overflow")]
    Overflow,
    /// Float result is NaN or infinite.
    #[error("nan or infinity")]
    NanOrInfinity,
    /// The source key does not exist (RENAME).
    #[error("no such key")]
    NoSuchKey,
    /// Result longer than the maximum string size.
    #[error("string too long")]
    StringTooLong,
    /// SETRANGE offset too large.
    #[error("offset out of range")]
    OffsetOutOfRange,
    /// A database index past the last database (only from a faulty or foreign peer: clients'
    /// commands are checked when parsed). Nothing of the op is applied.
    #[error("db index out of range")]
    DbIndexOutOfRange,
    /// A shipped key state that does not decode. Nothing of the op is applied.
    #[error("corrupt shipped state")]
    CorruptState,
    /// An invalid expiry time given to GETEX.
    #[error("invalid expire time")]
    InvalidGetexExpire,
    /// With several regions: the Raft entry's changes to ship already fill an outbox entry.
    #[error("the changes of this entry to ship to other regions are too large")]
    ShippedBatchTooLarge,
}

/// The outcome of one applied op, shaped so the reply follows directly.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum OpResult {
    /// `+OK`.
    Ok,
    /// Nil bulk.
    Nil,
    /// Integer reply.
    Int(i64),
    /// Bulk reply.
    Bulk(Bytes),
    /// Error reply.
    Err(OpError),
    /// An array of integers and nils (BITFIELD).
    Ints(Vec<Option<i64>>),
}

#[cfg(test)]
mod tests {
    use super::*;

    /// bincode writes an enum variant as its position, and the Raft log and the node-to-node
    /// messages hold ops in that form: a new variant goes at the end, never between.
    #[test]
    fn variant_numbers_stay_where_they_were() {
        let number = |op: Op| {
            let bytes = bincode::serialize(&op).unwrap();
            u32::from_le_bytes(bytes[..4].try_into().unwrap())
        };
        let key = Bytes::from_static(b"k");
        assert_eq!(
            number(Op::Expire {
                db: 0,
                key: key.clone(),
                at_ms: None,
                cond: ExpireCond::Always
            }),
            9
        );
        assert_eq!(
            number(Op::ExpireIfDue {
                db: 0,
                key: key.clone(),
                at_ms: 0
            }),
            12
        );
        assert_eq!(number(Op::FlushAll), 14);
        assert_eq!(
            number(Op::Unchanged {
                keys: Vec::new(),
                then: 0
            }),
            19
        );
        assert_eq!(
            number(Op::ReadKey {
                db: 0,
                key: key.clone()
            }),
            20
        );
        assert_eq!(number(Op::CountKeys { db: 0 }), 21);
        assert_eq!(
            number(Op::SetBit {
                db: 0,
                key: key.clone(),
                offset: 0,
                on: true
            }),
            22
        );
        assert_eq!(
            number(Op::Move {
                db: 0,
                key: key.clone(),
                dst_db: 1
            }),
            23
        );
        assert_eq!(
            number(Op::FailIfLive {
                db: 0,
                key,
                error: OpError::NotInteger
            }),
            24
        );
        assert_eq!(
            number(Op::BitOp {
                db: 0,
                kind: BitOpKind::Not,
                dst: Bytes::from_static(b"d"),
                srcs: Vec::new(),
            }),
            25
        );
        assert_eq!(
            number(Op::BitField {
                db: 0,
                key: Bytes::from_static(b"k"),
                ops: Vec::new(),
            }),
            26
        );
        assert_eq!(
            number(Op::IncrByDecimal {
                db: 0,
                key: Bytes::from_static(b"k"),
                delta: Bytes::from_static(b"1"),
            }),
            27
        );
        assert_eq!(
            number(Op::UnchangedSince {
                keys: Vec::new(),
                churn: Vec::new(),
                region: 0,
                then: 0
            }),
            28
        );
        assert_eq!(number(Op::ChurnEpoch), 29);
        assert_eq!(number(Op::ChurnEpochMixed), 30);
        let error = |e: OpError| bincode::serialize(&e).unwrap()[0];
        assert_eq!(error(OpError::CorruptState), 9);
        assert_eq!(error(OpError::InvalidGetexExpire), 10);
        let result = |r: OpResult| bincode::serialize(&r).unwrap()[0];
        assert_eq!(result(OpResult::Err(OpError::WrongType)), 4);
        assert_eq!(result(OpResult::Ints(Vec::new())), 5);
    }
}
