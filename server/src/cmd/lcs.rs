//! LCS: the longest common subsequence of two string values (Redis 7.0's arguments, replies,
//! error texts and match order).

use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use proto_resp::Reply;

use super::{Args, Ctx, Outcome};
use crate::error::RespError;
use crate::keyspace::ValueType;

/// What LCS answers: the subsequence itself (the default), its length, or the matching ranges.
#[derive(Clone, Copy, Debug, Default)]
struct LcsOptions {
    len: bool,
    idx: bool,
    min_match_len: u64,
    with_match_len: bool,
}

/// LCS key1 key2 [LEN] [IDX] [MINMATCHLEN len] [WITHMATCHLEN]
pub fn lcs(ctx: &mut Ctx<'_>, args: &mut Args) -> Result<Outcome, RespError> {
    let key_a = args.next_bytes()?;
    let key_b = args.next_bytes()?;
    let db = ctx.client.db;
    // As Redis: the keys' types are checked before the options are parsed.
    let (a, b) = (ctx.get(db, &key_a)?, ctx.get(db, &key_b)?);
    if [&a, &b]
        .iter()
        .any(|v| v.as_ref().is_some_and(|v| v.kind() != ValueType::String))
    {
        return Err(RespError::Other(
            "The specified keys must contain string values",
        ));
    }
    let a = a.map_or_else(Bytes::new, |v| v.payload_ref());
    let b = b.map_or_else(Bytes::new, |v| v.payload_ref());
    let mut opts = LcsOptions::default();
    while let Some(word) = args.next_opt() {
        if word.eq_ignore_ascii_case(b"idx") {
            opts.idx = true;
        } else if word.eq_ignore_ascii_case(b"len") {
            opts.len = true;
        } else if word.eq_ignore_ascii_case(b"withmatchlen") {
            opts.with_match_len = true;
        } else if word.eq_ignore_ascii_case(b"minmatchlen") && args.remaining() > 0 {
            opts.min_match_len = args.next_i64()?.max(0) as u64;
        } else {
            return Err(RespError::Syntax);
        }
    }
    if opts.idx && opts.len {
        return Err(RespError::Other(
            "If you want both the length and indexes, please just use IDX.",
        ));
    }
    // The table holds one u32 per pair of prefixes; Redis bounds it by proto-max-bulk-len.
    let cells = (a.len() as u128 + 1) * (b.len() as u128 + 1);
    if cells * 4 > ctx.shared.config.proto_max_bulk_len as u128 {
        return Err(RespError::Other(
            "Insufficient memory, transient memory for LCS exceeds proto-max-bulk-len",
        ));
    }
    let failed =
        || RespError::Other("Insufficient memory, failed allocating transient memory for LCS");
    // Tables of concurrent LCS calls share that bound too (Redis runs one at a time).
    let budget = TableBudget::take(cells as usize * 4, ctx.shared.config.proto_max_bulk_len)
        .ok_or_else(failed)?;
    let table = LcsTable::build(&a, &b).ok_or_else(failed)?;
    let reply = table.reply(&a, &b, opts);
    drop(table);
    drop(budget);
    Ok(reply.into())
}

/// Bytes of LCS tables allocated now, on every connection.
static TABLE_BYTES: AtomicUsize = AtomicUsize::new(0);

/// A share of [`TABLE_BYTES`], given back when dropped.
struct TableBudget(usize);

impl TableBudget {
    /// `bytes` more, unless that takes the total past `max`.
    fn take(bytes: usize, max: usize) -> Option<TableBudget> {
        TABLE_BYTES
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(bytes).filter(|total| *total <= max)
            })
            .ok()
            .map(|_| TableBudget(bytes))
    }
}

impl Drop for TableBudget {
    fn drop(&mut self) {
        TABLE_BYTES.fetch_sub(self.0, Ordering::AcqRel);
    }
}

/// `len[i][j]`: the length of the LCS of `a[..i]` and `b[..j]`, in one flat vector.
struct LcsTable {
    cols: usize,
    len: Vec<u32>,
}

impl LcsTable {
    /// The dynamic-programming table of `a` and `b`; `None` when its memory cannot be had.
    fn build(a: &[u8], b: &[u8]) -> Option<LcsTable> {
        let cols = b.len() + 1;
        let cells = (a.len() + 1).checked_mul(cols)?;
        let mut len: Vec<u32> = Vec::new();
        len.try_reserve_exact(cells).ok()?;
        len.resize(cells, 0);
        for (i, &ai) in a.iter().enumerate() {
            // Row i + 1 from row i; `left` is the cell just filled.
            let (done, rest) = len.split_at_mut((i + 1) * cols);
            let prev = &done[i * cols..];
            let row = &mut rest[..cols];
            let mut left = 0u32;
            for ((cell, &bj), up) in row[1..].iter_mut().zip(b).zip(prev.windows(2)) {
                left = if ai == bj { up[0] + 1 } else { up[1].max(left) };
                *cell = left;
            }
        }
        Some(LcsTable { cols, len })
    }

    fn at(&self, i: usize, j: usize) -> u32 {
        self.len[i * self.cols + j]
    }

    /// Walks the table back from the end as Redis does: the subsequence, and the ranges of
    /// contiguous matches from the last to the first.
    fn reply(&self, a: &[u8], b: &[u8], opts: LcsOptions) -> Reply {
        let total = self.at(a.len(), b.len());
        if opts.len {
            return Reply::Integer(i64::from(total));
        }
        let mut text = vec![0u8; total as usize];
        let mut matches = Vec::new();
        // The range being extended backwards: (a start, a end, b start, b end).
        let mut range: Option<(usize, usize, usize, usize)> = None;
        let (mut i, mut j, mut k) = (a.len(), b.len(), total as usize);
        while i > 0 && j > 0 {
            let emit;
            if a[i - 1] == b[j - 1] {
                text[k - 1] = a[i - 1];
                let r = match range {
                    // A match right before the range's start extends it.
                    Some((a0, a1, b0, b1)) => (a0 - 1, a1, b0 - 1, b1),
                    None => (i - 1, i - 1, j - 1, j - 1),
                };
                range = Some(r);
                // A range that reached the start of either string is complete.
                emit = r.0 == 0 || r.2 == 0;
                k -= 1;
                i -= 1;
                j -= 1;
            } else {
                if self.at(i - 1, j) > self.at(i, j - 1) {
                    i -= 1;
                } else {
                    j -= 1;
                }
                emit = range.is_some();
            }
            if emit {
                if let Some((a0, a1, b0, b1)) = range.take() {
                    let match_len = (a1 - a0 + 1) as u64;
                    if opts.min_match_len == 0 || match_len >= opts.min_match_len {
                        let mut entry = vec![
                            Reply::Array(vec![
                                Reply::Integer(a0 as i64),
                                Reply::Integer(a1 as i64),
                            ]),
                            Reply::Array(vec![
                                Reply::Integer(b0 as i64),
                                Reply::Integer(b1 as i64),
                            ]),
                        ];
                        if opts.with_match_len {
                            entry.push(Reply::Integer(match_len as i64));
                        }
                        matches.push(Reply::Array(entry));
                    }
                }
            }
        }
        if opts.idx {
            Reply::Map(vec![
                (
                    Reply::Bulk(Bytes::from_static(b"matches")),
                    Reply::Array(matches),
                ),
                (
                    Reply::Bulk(Bytes::from_static(b"len")),
                    Reply::Integer(i64::from(total)),
                ),
            ])
        } else {
            Reply::Bulk(Bytes::from(text))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_redis_documented_subsequence_and_ranges() {
        let (a, b) = (b"ohmytext".as_slice(), b"mynewtext".as_slice());
        let table = LcsTable::build(a, b).unwrap();
        assert_eq!(table.at(a.len(), b.len()), 6);
        let Reply::Bulk(text) = table.reply(a, b, LcsOptions::default()) else {
            panic!("bulk expected");
        };
        assert_eq!(&text[..], b"mytext");
        let idx = LcsOptions {
            idx: true,
            with_match_len: true,
            ..LcsOptions::default()
        };
        let Reply::Map(fields) = table.reply(a, b, idx) else {
            panic!("map expected");
        };
        let Reply::Array(matches) = &fields[0].1 else {
            panic!("matches expected");
        };
        // Redis documents [[4,7],[5,8],4] then [[2,3],[0,1],2].
        let ints = |r: &Reply| match r {
            Reply::Array(v) => v
                .iter()
                .map(|x| match x {
                    Reply::Integer(n) => *n,
                    _ => panic!(),
                })
                .collect::<Vec<_>>(),
            _ => panic!(),
        };
        let Reply::Array(first) = &matches[0] else {
            panic!()
        };
        assert_eq!(ints(&first[0]), vec![4, 7]);
        assert_eq!(ints(&first[1]), vec![5, 8]);
        assert!(matches!(first[2], Reply::Integer(4)));
        assert_eq!(matches.len(), 2);
    }
}
