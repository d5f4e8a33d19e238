//! What the workers' replies must satisfy, and the final state after the faults. Every check
//! is sound for a linearizable store (a region), and those used across regions for Meridian's
//! convergence rules: a request that got no answer (a timeout, a lost connection,
//! `-CLUSTERDOWN`) may have been applied, at any time after it was sent, or not at all, so it
//! only widens what later replies may show.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Mutex;

use serde::Serialize;

/// One violation.
#[derive(Debug, Clone, Serialize)]
pub struct Anomaly {
    /// Seconds since the start of the run.
    pub at_s: f64,
    /// Which check: `STALE_READ`, `INCR_DUP`, `READBACK`, `REGISTER`, `COUNTER`, …
    pub kind: String,
    /// What was seen and what was allowed.
    pub detail: String,
}

/// The anomalies found so far (the first 1,000 kept in full, the rest counted).
#[derive(Default)]
pub struct Anomalies {
    list: Mutex<(Vec<Anomaly>, u64)>,
}

impl Anomalies {
    /// Records one (and prints the first fifty).
    pub fn report(&self, at_s: f64, kind: &str, detail: String) {
        let mut list = self.list.lock().unwrap_or_else(|e| e.into_inner());
        list.1 += 1;
        if list.1 <= 50 {
            eprintln!("ANOMALY {at_s:.1}s {kind} {detail}");
        }
        if list.0.len() < 1000 {
            list.0.push(Anomaly {
                at_s,
                kind: kind.to_string(),
                detail,
            });
        }
    }

    /// How many were found.
    pub fn count(&self) -> u64 {
        self.list.lock().unwrap_or_else(|e| e.into_inner()).1
    }

    /// The ones kept.
    pub fn kept(&self) -> Vec<Anomaly> {
        self.list
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .clone()
    }
}

/// A counter every worker INCRs.
#[derive(Default, Debug)]
pub struct Counter {
    /// INCRs sent.
    pub attempted: u64,
    /// INCRs answered with a number.
    pub acked: u64,
    /// The highest number answered: a later linearizable GET may not read less.
    pub max_acked: i64,
    /// Every number answered: two INCRs can not both have made the same one.
    pub seen: HashSet<i64>,
}

impl Counter {
    /// One counter's figures over several regions' (the numbers answered are not merged:
    /// regions answer from their own replicas).
    pub fn merged<'a>(parts: impl IntoIterator<Item = &'a Counter>) -> Counter {
        parts.into_iter().fold(Counter::default(), |mut all, part| {
            all.attempted += part.attempted;
            all.acked += part.acked;
            all.max_acked = all.max_acked.max(part.max_acked);
            all
        })
    }

    /// Checks the counter's final value: at least every acknowledged INCR, at most every one
    /// sent.
    pub fn check_final(&self, value: i64) -> Result<(), String> {
        if value < self.acked as i64 || value < self.max_acked || value > self.attempted as i64 {
            return Err(format!(
                "final {value}, acked {} (highest answer {}), sent {}",
                self.acked, self.max_acked, self.attempted
            ));
        }
        Ok(())
    }
}

/// A key that only one worker writes with GETSET and DEL, and reads with GET: every value
/// read must be one the key can hold at that point of some linearization.
#[derive(Default, Debug)]
pub struct Register {
    /// The value of the last acknowledged write (`None` after a DEL).
    last: Option<String>,
    /// Values of GETSETs that got no answer: each may apply once, later.
    pending_sets: HashSet<String>,
    /// DELs that got no answer and have not been used to explain a nil yet.
    pending_dels: u64,
    /// A pending DEL was placed after the last acknowledged write to explain a nil read.
    nil_explained: bool,
    /// Pending values read since the last acknowledged write (they may be read again).
    seen_since_write: HashSet<String>,
}

impl Register {
    /// A read (GET, or the old value a GETSET returned, `overwritten`) saw `value`.
    pub fn observe(&mut self, value: Option<&str>, overwritten: bool) -> Result<(), String> {
        let ok = match value {
            v if v == self.last.as_deref() => true,
            None if self.nil_explained => true,
            None if self.pending_dels > 0 => {
                self.pending_dels -= 1;
                self.nil_explained = true;
                true
            }
            None => false,
            Some(v) if self.seen_since_write.contains(v) => true,
            Some(v) => {
                let pending = self.pending_sets.remove(v);
                if pending && !overwritten {
                    // Applied once; it may be read again until the next write.
                    self.seen_since_write.insert(v.to_string());
                }
                pending
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!(
                "read {value:?}; last acknowledged write {:?}, {} unanswered GETSETs, {} unanswered DELs",
                self.last,
                self.pending_sets.len(),
                self.pending_dels
            ))
        }
    }

    /// A DEL answered 1: the key held some value.
    pub fn observe_some(&mut self) -> Result<(), String> {
        if self.last.is_some() || !self.pending_sets.is_empty() || !self.seen_since_write.is_empty()
        {
            Ok(())
        } else {
            Err("DEL removed a key that can not exist".into())
        }
    }

    /// A write was acknowledged: the key holds `value` now.
    pub fn written(&mut self, value: Option<String>) {
        self.last = value;
        self.nil_explained = false;
        self.seen_since_write.clear();
    }

    /// A GETSET of `value` got no answer.
    pub fn unanswered_set(&mut self, value: String) {
        self.pending_sets.insert(value);
    }

    /// A DEL got no answer.
    pub fn unanswered_del(&mut self) {
        self.pending_dels += 1;
    }

    /// Checks the final value as a read.
    pub fn check_final(&mut self, value: Option<&str>) -> Result<(), String> {
        self.observe(value, false)
    }
}

/// A key one worker APPENDs unique tokens (`<seq>,`) to.
#[derive(Default, Debug)]
pub struct AppendLog {
    /// Tokens answered.
    pub acked: HashSet<u64>,
    /// Tokens not answered.
    pub unknown: HashSet<u64>,
}

impl AppendLog {
    /// Checks the final value: each acknowledged token once, no token that was never sent,
    /// in the order they were sent.
    pub fn check_final(&self, value: &str) -> Result<(), String> {
        let tokens: Vec<u64> = value
            .split(',')
            .filter(|t| !t.is_empty())
            .map(|t| t.parse().map_err(|_| format!("bad token {t:?}")))
            .collect::<Result<_, _>>()?;
        let mut counts: HashMap<u64, u32> = HashMap::new();
        for t in &tokens {
            *counts.entry(*t).or_default() += 1;
        }
        let dups: Vec<_> = counts
            .iter()
            .filter(|(_, &n)| n > 1)
            .map(|(t, _)| t)
            .collect();
        let missing: Vec<_> = self
            .acked
            .iter()
            .filter(|t| !counts.contains_key(t))
            .collect();
        let extra: Vec<_> = counts
            .keys()
            .filter(|t| !self.acked.contains(t) && !self.unknown.contains(t))
            .collect();
        // Each acknowledged token was appended before the next was sent: they are in order.
        // An unanswered one may have been applied at any time after it was sent: after every
        // token acknowledged before it, anywhere among the later ones.
        let position: HashMap<u64, usize> =
            tokens.iter().enumerate().map(|(i, t)| (*t, i)).collect();
        let mut by_value: Vec<u64> = tokens.clone();
        by_value.sort_unstable();
        let mut last_acked: Option<usize> = None;
        let mut ordered = true;
        for t in by_value {
            let at = position[&t];
            if last_acked.is_some_and(|p| p > at) {
                ordered = false;
            }
            if self.acked.contains(&t) {
                last_acked = Some(last_acked.map_or(at, |p| p.max(at)));
            }
        }
        if dups.is_empty() && missing.is_empty() && extra.is_empty() && ordered {
            Ok(())
        } else {
            Err(format!(
                "{} tokens: duplicated {dups:?}, acknowledged but missing {missing:?}, never sent {extra:?}, in order {ordered}",
                tokens.len()
            ))
        }
    }
}

/// Seconds by which a write must have been sent after another was answered to be ordered
/// after it across regions: HLC stamps are taken between the two on one machine's clock,
/// and are whole milliseconds.
pub const LWW_MARGIN_S: f64 = 0.005;

/// One write (SET or a DEL that answered 1) of a key that every region writes.
#[derive(Debug, Clone)]
pub struct LwwWrite {
    /// The value written, `None` for a DEL.
    pub value: Option<String>,
    /// When it was sent (seconds since the start of the run).
    pub sent_s: f64,
    /// When it was answered; `None` if it got no answer.
    pub acked_s: Option<f64>,
}

/// A key that workers in every region SET (each time to a value of its own) and DEL: after
/// the regions converge it holds what the last writer wrote, by (HLC stamp, region).
#[derive(Default, Debug)]
pub struct LwwKey {
    writes: Vec<LwwWrite>,
}

impl LwwKey {
    /// Records a write; a DEL that answered 0 wrote nothing (as in Redis, it records no
    /// tombstone) and is not recorded.
    pub fn record(&mut self, write: LwwWrite) {
        self.writes.push(write);
    }

    /// Writes answered.
    pub fn acked(&self) -> usize {
        self.writes.iter().filter(|w| w.acked_s.is_some()).count()
    }

    /// Checks the value the regions converged to: it must be what a write wrote that no
    /// acknowledged write followed in real time (sent more than [`LWW_MARGIN_S`] after it was
    /// answered, hence stamped later); unanswered writes may have been stamped at any time.
    /// Nil is also the value of a key no acknowledged SET wrote.
    pub fn check_final(&self, value: Option<&str>) -> Result<(), String> {
        let last_acked_sent = self
            .writes
            .iter()
            .filter(|w| w.acked_s.is_some())
            .map(|w| w.sent_s)
            .fold(f64::NEG_INFINITY, f64::max);
        let followed = |w: &LwwWrite| {
            w.acked_s
                .is_some_and(|a| last_acked_sent > a + LWW_MARGIN_S)
        };
        let never_set = !self
            .writes
            .iter()
            .any(|w| w.value.is_some() && w.acked_s.is_some());
        let explained = (value.is_none() && never_set)
            || self
                .writes
                .iter()
                .any(|w| w.value.as_deref() == value && !followed(w));
        if explained {
            return Ok(());
        }
        let unfollowed: Vec<String> = self
            .writes
            .iter()
            .filter(|w| !followed(w))
            .map(|w| {
                format!(
                    "{:?} sent {:.3}s answered {:?}",
                    w.value, w.sent_s, w.acked_s
                )
            })
            .collect();
        let source = self.writes.iter().find(|w| w.value.as_deref() == value);
        Err(format!(
            "converged to {value:?} ({}); the last writes: {unfollowed:?}",
            source.map_or("written by no one".to_string(), |w| format!(
                "sent {:.3}s answered {:?}, followed by an acknowledged write",
                w.sent_s, w.acked_s
            ))
        ))
    }
}

/// A reset writes a multiple of this (a SET of `n * RESET_UNIT`, `n` its own, or a DEL: 0), so
/// a counter's converged value tells which reset won (its quotient) and how many increments
/// count on top of it (its remainder; far fewer than this are sent).
pub const RESET_UNIT: i64 = 1_000_000_000;

/// One request to a [`ResetCounter`].
#[derive(Debug, Clone)]
pub struct Sent {
    /// The region of the node it was sent to (see [`Model::counters`]).
    pub group: usize,
    /// When it was sent (seconds since the start of the run).
    pub sent_s: f64,
    /// When it was answered; `None` if it got no answer.
    pub acked_s: Option<f64>,
}

/// A counter that every region INCRs and now and then resets (a SET of a base of its own, or a
/// DEL). A reset sets the counter *as it observed it*: the increments it had not seen (made
/// after it, or concurrently in other regions) count on top of its base, those it had seen do
/// not.
#[derive(Default, Debug)]
pub struct ResetCounter {
    /// Each reset with its base (0 for a DEL that answered 1; one that answered 0 wrote
    /// nothing and is not recorded).
    resets: Vec<(i64, Sent)>,
    incrs: Vec<Sent>,
}

impl ResetCounter {
    /// Records a reset to `base`.
    pub fn reset(&mut self, base: i64, sent: Sent) {
        self.resets.push((base, sent));
    }

    /// Records an INCR.
    pub fn incr(&mut self, sent: Sent) {
        self.incrs.push(sent);
    }

    /// INCRs and resets answered.
    pub fn acked(&self) -> (usize, usize) {
        let answered = |s: &&Sent| s.acked_s.is_some();
        (
            self.incrs.iter().filter(answered).count(),
            self.resets.iter().map(|(_, r)| r).filter(answered).count(),
        )
    }

    /// Checks the value the regions converged to (nil read as 0). The reset it comes from (its
    /// quotient by [`RESET_UNIT`]; 0 is also no reset at all, if none was acknowledged) must be
    /// one no acknowledged reset followed in real time, as for [`LwwKey`]; the increments
    /// counted on top of it (the remainder) at least those sent after it was answered (it
    /// could not have seen them), at most every INCR sent but those answered in its own
    /// region before it was sent (it saw them: a region is linearizable, and an answered
    /// write was made in the region it was sent to). An unanswered reset may have been made
    /// at any time, in another region (forwarded after the write timeout): it bounds nothing.
    pub fn check_final(&self, value: i64) -> Result<(), String> {
        let base = value.div_euclid(RESET_UNIT) * RESET_UNIT;
        let counted = (value - base) as usize;
        let last_acked_sent = self
            .resets
            .iter()
            .filter(|(_, r)| r.acked_s.is_some())
            .map(|(_, r)| r.sent_s)
            .fold(f64::NEG_INFINITY, f64::max);
        let followed = |r: &Sent| {
            r.acked_s
                .is_some_and(|a| last_acked_sent > a + LWW_MARGIN_S)
        };
        let acked_incrs = self.incrs.iter().filter(|i| i.acked_s.is_some()).count();
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        if base == 0 && last_acked_sent == f64::NEG_INFINITY {
            ranges.push((acked_incrs, self.incrs.len()));
        }
        for (_, r) in self
            .resets
            .iter()
            .filter(|(b, r)| *b == base && !followed(r))
        {
            let Some(acked) = r.acked_s else {
                ranges.push((0, self.incrs.len()));
                continue;
            };
            let after = self
                .incrs
                .iter()
                .filter(|i| i.acked_s.is_some() && i.sent_s > acked + LWW_MARGIN_S)
                .count();
            let seen = self
                .incrs
                .iter()
                .filter(|i| i.group == r.group && i.acked_s.is_some_and(|a| a < r.sent_s))
                .count();
            ranges.push((after, self.incrs.len() - seen));
        }
        if ranges.iter().any(|(lo, hi)| (*lo..=*hi).contains(&counted)) {
            return Ok(());
        }
        Err(format!(
            "converged to {value}: base {base} (a reset {}), {counted} increments on top; \
             allowed for that base: {ranges:?}; {} INCRs sent, {acked_incrs} answered, {} resets",
            if ranges.is_empty() {
                "that is unknown or was followed by an acknowledged one"
            } else {
                "not followed"
            },
            self.incrs.len(),
            self.resets.len()
        ))
    }
}

/// Everything the workers learned, shared.
#[derive(Default)]
pub struct Model {
    /// The shared counters, `[group][counter]`: a group is a region (a region's INCRs answer
    /// from its own replica, so duplicates and floors hold within it, not across regions).
    pub counters: Mutex<Vec<Vec<Counter>>>,
    /// Keys that workers in every region SET and DEL (with several regions only).
    pub lww: Mutex<Vec<LwwKey>>,
    /// Counters that workers in every region INCR and reset (with several regions only).
    pub reset_counters: Mutex<Vec<ResetCounter>>,
    /// Acknowledged SETs of unique keys: key → value.
    pub sets: Mutex<BTreeMap<String, String>>,
    /// Acknowledged SETs with a short expiry: key → when it is surely gone (seconds since the
    /// start of the run).
    pub expiring: Mutex<Vec<(String, f64)>>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_nil_needs_a_delete_after_the_last_write() {
        let mut r = Register::default();
        r.observe(None, false).unwrap();
        r.written(Some("a".into()));
        assert!(r.observe(None, false).is_err());
        // One unanswered DEL explains nils until the next write, not after it.
        r.unanswered_del();
        r.observe(None, false).unwrap();
        r.observe(None, false).unwrap();
        r.written(Some("b".into()));
        assert!(r.observe(None, false).is_err());
        // Two unanswered DELs explain nils after two writes.
        r.unanswered_del();
        r.unanswered_del();
        r.observe(None, true).unwrap();
        r.written(Some("c".into()));
        r.observe(None, true).unwrap();
        r.written(Some("d".into()));
        assert!(r.observe(None, false).is_err());
    }

    #[test]
    fn an_unanswered_getset_may_be_read_until_overwritten() {
        let mut r = Register::default();
        r.written(Some("a".into()));
        assert!(r.observe(Some("x"), false).is_err());
        r.unanswered_set("x".into());
        r.observe(Some("x"), false).unwrap();
        r.observe(Some("x"), false).unwrap();
        // A GETSET that returned it overwrote it: it can not come back.
        r.observe(Some("x"), true).unwrap();
        r.written(Some("b".into()));
        assert!(r.observe(Some("x"), false).is_err());
        r.observe(Some("b"), false).unwrap();
        assert!(r.observe_some().is_ok());
        r.written(None);
        assert!(r.observe_some().is_err());
    }

    #[test]
    fn a_converged_key_holds_a_last_write() {
        let w = |value: Option<&str>, sent_s: f64, acked_s: Option<f64>| LwwWrite {
            value: value.map(str::to_string),
            sent_s,
            acked_s,
        };
        let mut k = LwwKey::default();
        // Only an unanswered SET: it may or may not have applied.
        k.record(w(Some("a"), 1.0, None));
        k.check_final(None).unwrap();
        k.check_final(Some("a")).unwrap();
        // b answered, then c sent after it: c wins; b only if c was concurrent with it.
        k.record(w(Some("b"), 2.0, Some(2.1)));
        k.record(w(Some("c"), 2.2, Some(2.3)));
        k.check_final(Some("c")).unwrap();
        assert!(k.check_final(Some("b")).is_err());
        assert!(k.check_final(None).is_err());
        assert!(k.check_final(Some("zz")).is_err());
        // The unanswered a may have been stamped last.
        k.check_final(Some("a")).unwrap();
        // A DEL concurrent with c (sent before c was answered): either may win.
        k.record(w(None, 2.25, Some(2.4)));
        k.check_final(None).unwrap();
        k.check_final(Some("c")).unwrap();
        // Within the margin, writes count as concurrent.
        k.record(w(Some("d"), 2.4 + LWW_MARGIN_S / 2.0, Some(2.5)));
        k.check_final(None).unwrap();
        k.check_final(Some("d")).unwrap();
        assert!(k.check_final(Some("c")).is_err());
    }

    #[test]
    fn a_reset_counter_counts_what_its_winning_reset_did_not_see() {
        let sent = |group, sent_s, acked_s| Sent {
            group,
            sent_s,
            acked_s,
        };
        let mut c = ResetCounter::default();
        // Two increments answered in region 0, one unanswered in region 1.
        c.incr(sent(0, 1.0, Some(1.1)));
        c.incr(sent(0, 1.2, Some(1.3)));
        c.incr(sent(1, 1.4, None));
        c.check_final(2).unwrap();
        c.check_final(3).unwrap();
        assert!(c.check_final(1).is_err());
        // A reset in region 0 after them saw both; the unanswered one may count.
        let base = 7 * RESET_UNIT;
        c.reset(base, sent(0, 2.0, Some(2.1)));
        c.check_final(base).unwrap();
        c.check_final(base + 1).unwrap();
        assert!(c.check_final(base + 2).is_err());
        assert!(c.check_final(2).is_err(), "the reset was answered: it won");
        // An increment sent after the reset was answered counts on top.
        c.incr(sent(1, 3.0, Some(3.1)));
        assert!(c.check_final(base).is_err());
        c.check_final(base + 1).unwrap();
        c.check_final(base + 2).unwrap();
        // A DEL after that: nothing seen before it counts again.
        c.reset(0, sent(1, 4.0, Some(4.1)));
        c.check_final(0).unwrap();
        assert!(c.check_final(base + 1).is_err());
        assert!(
            c.check_final(4).is_err(),
            "the DEL saw region 1's answered INCR"
        );
        // Region 0's INCRs may not have reached region 1 (nor the unanswered one applied).
        c.check_final(3).unwrap();
        c.check_final(2).unwrap();
        // An unknown base is never right.
        assert!(c.check_final(9 * RESET_UNIT).is_err());
    }

    #[test]
    fn counters_and_appends() {
        let c = Counter {
            attempted: 10,
            acked: 8,
            max_acked: 9,
            seen: HashSet::new(),
        };
        assert!(c.check_final(9).is_ok() && c.check_final(10).is_ok());
        assert!(c.check_final(8).is_err() && c.check_final(11).is_err());
        let log = AppendLog {
            acked: [1, 2, 4].into(),
            unknown: [3].into(),
        };
        assert!(log.check_final("1,2,4,").is_ok());
        assert!(log.check_final("1,2,3,4,").is_ok());
        assert!(log.check_final("1,2,").is_err());
        assert!(log.check_final("1,2,2,4,").is_err());
        assert!(log.check_final("1,2,4,5,").is_err());
        assert!(log.check_final("2,1,4,").is_err());
        // The unanswered 3 applied late, after 4: allowed; before 2: not.
        assert!(log.check_final("1,2,4,3,").is_ok());
        assert!(log.check_final("1,3,2,4,").is_err());
    }
}
