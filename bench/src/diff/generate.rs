//! The random command stream: a seeded generator of string, bitmap, key, expiry, transaction
//! and connection commands over a small key space, valid ones mixed with malformed ones
//! (wrong arity, bad numbers, out-of-range offsets, conflicting options) so that error texts
//! are compared too.
//!
//! The same seed gives the same stream on every run: nothing here reads a clock. Expiry times
//! are chosen so that the two servers, which run each command a moment apart, cannot decide a
//! comparison differently (see [`Generator::relative_units`]).

use std::collections::HashSet;

use rand::rngs::SmallRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use super::check::Check;

/// Connections per server: commands go to one or the other, so a transaction or a WATCH on
/// one sees the other's writes, and each has its own selected database.
pub const CONNS: usize = 2;

/// Seconds in one unit of relative expiry (see [`Generator::relative_units`]).
const RELATIVE_UNIT_SECS: u64 = 60;
/// Relative expiries are `RELATIVE_UNIT_SECS` × a unit drawn from this range: at least five
/// minutes, so no key expires during a run.
const RELATIVE_UNITS: std::ops::Range<u64> = 5..200_000;
/// Absolute expiries in the future are this unix time plus up to [`FAR_FUTURE_SPREAD`]
/// seconds: year 2096, far beyond any relative expiry, and the same on both servers.
const FAR_FUTURE: u64 = 4_000_000_000;
/// Spread of the absolute expiries in the future, seconds.
const FAR_FUTURE_SPREAD: u64 = 1_000_000;

/// One step of the stream, sent to both servers.
#[derive(Debug, Clone)]
pub struct Step {
    /// Which of the [`CONNS`] connections carries it.
    pub conn: usize,
    /// What to send.
    pub kind: StepKind,
}

/// What a step sends.
#[derive(Debug, Clone)]
pub enum StepKind {
    /// One command, its reply compared by `check`.
    Command {
        /// The command's words, name first.
        args: Vec<Vec<u8>>,
        /// How the two replies are compared.
        check: Check,
    },
    /// `SCAN cursor <opts>` repeated on each server until the cursor comes back 0; the keys
    /// are compared as sets (SCAN's order and batching are the server's own).
    ScanAll {
        /// The options after the cursor (`MATCH p`, `COUNT n`, `TYPE t`, or malformed ones).
        opts: Vec<Vec<u8>>,
    },
}

/// What the generator knows of one connection: whether it is inside MULTI, and how the
/// replies of the commands queued so far are to be compared within EXEC's array.
#[derive(Default)]
struct ConnState {
    /// `Some` between MULTI and EXEC/DISCARD: the checks of the queued commands.
    queued: Option<Vec<Check>>,
}

/// A command being built: its words, its check, and whether the server refuses it before
/// queuing it inside MULTI (unknown command, wrong arity), which makes EXEC fail.
struct Built {
    args: Vec<Vec<u8>>,
    check: Check,
    refused_early: bool,
}

impl Built {
    fn exact(args: Vec<Vec<u8>>) -> Built {
        Built {
            args,
            check: Check::Exact,
            refused_early: false,
        }
    }

    fn with(args: Vec<Vec<u8>>, check: Check) -> Built {
        Built {
            args,
            check,
            refused_early: false,
        }
    }

    fn early_error(args: Vec<Vec<u8>>) -> Built {
        Built {
            args,
            check: Check::Exact,
            refused_early: true,
        }
    }
}

/// The seeded command generator.
pub struct Generator {
    rng: SmallRng,
    /// The key space: plain names `k…` plus awkward ones (empty, binary, glob characters).
    keys: Vec<Vec<u8>>,
    /// How many of `keys` are plain (`k…`); the awkward ones follow.
    plain: usize,
    conns: [ConnState; CONNS],
    /// Relative expiry units handed out so far: each is used once per run.
    used_units: HashSet<u64>,
}

/// Databases the stream uses (SELECT, MOVE, COPY ... DB): Redis's and Meridian's 16.
const DATABASES: u8 = 16;
/// Meridian's WATCH churn slots (`keyspace::CHURN_SLOTS`).
const CHURN_SLOTS: u64 = 4096;

/// Meridian's churn slot of `key` in `db` in the churn epochs a node starts now
/// (`keyspace::churn_slot` with `CHURN_MIXED`: FNV-1a of the database byte and the key, mixed
/// by murmur3's finaliser, modulo the slots), copied so the generator can keep keys apart.
fn churn_slot(db: u8, key: &[u8]) -> usize {
    let mut hash = std::iter::once(&db)
        .chain(key)
        .fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
            (h ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3)
        });
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^= hash >> 33;
    (hash % CHURN_SLOTS) as usize
}

fn w(s: &str) -> Vec<u8> {
    s.as_bytes().to_vec()
}

fn num(n: impl ToString) -> Vec<u8> {
    n.to_string().into_bytes()
}

impl Generator {
    /// A generator over `keys` plain keys (at least 1) plus the awkward ones, for `seed`.
    ///
    /// The plain keys are `k0`, `k1`, … without the names that would share one of Meridian's
    /// WATCH churn slots with another key of the key space in any database: README
    /// ("Transactions") says a key of the same slot created or removed aborts a transaction
    /// that watched a missing key (a needless abort, which Redis does not make). Which names
    /// are left out follows [`churn_slot`], a copy of Meridian's slot function.
    pub fn new(seed: u64, keys: usize) -> Generator {
        let awkward: [Vec<u8>; 3] = [Vec::new(), b"b\x00\xff\r\n".to_vec(), w("k*[x]")];
        let mut slots = HashSet::new();
        let mut take = |name: &[u8]| {
            let own: HashSet<usize> = (0..DATABASES).map(|db| churn_slot(db, name)).collect();
            // Its own databases apart too: one slot per database.
            let free =
                own.len() == usize::from(DATABASES) && own.iter().all(|s| !slots.contains(s));
            if free {
                slots.extend(own);
            }
            free
        };
        let awkward: Vec<Vec<u8>> = awkward.into_iter().filter(|n| take(n)).collect();
        let mut names: Vec<Vec<u8>> = (0..)
            .map(|i| num(format!("k{i}")))
            .filter(|n| take(n))
            .take(keys.max(1))
            .collect();
        let plain = names.len();
        names.extend(awkward);
        Generator {
            rng: SmallRng::seed_from_u64(seed),
            keys: names,
            plain,
            conns: Default::default(),
            used_units: HashSet::new(),
        }
    }

    /// The key space (for checking RANDOMKEY's answer).
    pub fn keys(&self) -> &[Vec<u8>] {
        &self.keys
    }

    /// The next step of the stream.
    pub fn step(&mut self) -> Step {
        let conn = if self.rng.random_bool(0.8) { 0 } else { 1 };
        if self.conns[conn].queued.is_some() {
            return Step {
                conn,
                kind: self.in_multi(conn),
            };
        }
        let kind = if self.rng.random_bool(0.03) {
            self.conns[conn].queued = Some(Vec::new());
            StepKind::Command {
                args: vec![self.name("MULTI")],
                check: Check::Exact,
            }
        } else if self.rng.random_bool(0.02) {
            StepKind::ScanAll {
                opts: self.scan_opts(),
            }
        } else {
            let b = self.command(false);
            if b.args
                .first()
                .is_some_and(|n| n.eq_ignore_ascii_case(b"MULTI"))
                && !b.refused_early
            {
                self.conns[conn].queued = Some(Vec::new());
            }
            StepKind::Command {
                args: b.args,
                check: b.check,
            }
        };
        Step { conn, kind }
    }

    /// A step on a connection inside MULTI: EXEC or DISCARD now and then, else a command to
    /// queue.
    fn in_multi(&mut self, conn: usize) -> StepKind {
        let r = self.rng.random_range(0..100);
        if r < 12 {
            let queued = self.conns[conn].queued.take().unwrap_or_default();
            let (args, check) = if r < 10 {
                (vec![self.name("EXEC")], Check::Exec(queued))
            } else {
                (vec![self.name("DISCARD")], Check::Exact)
            };
            return StepKind::Command { args, check };
        }
        let b = match r {
            12 => Built::exact(vec![self.name("MULTI")]), // nested: refused, not queued
            13 => Built::exact(vec![self.name("WATCH"), self.key()]), // refused inside MULTI
            _ => self.command(true),
        };
        let queued = &mut self.conns[conn].queued;
        if let Some(q) = queued {
            let name = b.args.first().cloned().unwrap_or_default();
            let not_queued = b.refused_early
                || name.eq_ignore_ascii_case(b"MULTI")
                || name.eq_ignore_ascii_case(b"WATCH");
            if !not_queued {
                q.push(b.check.clone());
            }
        }
        StepKind::Command {
            args: b.args,
            check: b.check,
        }
    }

    /// The command name, sometimes in lower or mixed case (names are case-insensitive).
    fn name(&mut self, name: &str) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0 => w(&name.to_ascii_lowercase()),
            1 => name
                .bytes()
                .enumerate()
                .map(|(i, c)| {
                    if i % 2 == 0 {
                        c.to_ascii_lowercase()
                    } else {
                        c
                    }
                })
                .collect(),
            _ => w(name),
        }
    }

    fn pick<'a>(&mut self, options: &[&'a str]) -> &'a str {
        options[self.rng.random_range(0..options.len())]
    }

    fn key(&mut self) -> Vec<u8> {
        let plain = self.plain;
        let i = if self.keys.len() > plain && self.rng.random_bool(0.06) {
            self.rng.random_range(plain..self.keys.len())
        } else {
            self.rng.random_range(0..plain)
        };
        self.keys[i].clone()
    }

    fn keys_n(&mut self, min: usize, max: usize) -> Vec<Vec<u8>> {
        let n = self.rng.random_range(min..=max);
        (0..n).map(|_| self.key()).collect()
    }

    /// A value: short words, integers (near the i64 limits too), floats, empty, binary, long.
    fn value(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..14) {
            0..=3 => self.word(),
            4..=6 => self.int_text(),
            7 => self.float_text(),
            8 => Vec::new(),
            9 => {
                let n = self.rng.random_range(1..12);
                (0..n).map(|_| self.rng.random::<u8>()).collect()
            }
            10 => {
                // Around Redis's embstr/raw boundary (44 bytes) and beyond.
                let n = self.rng.random_range(40..80);
                vec![b'y'; n]
            }
            11 => w(self.pick(&["\x00", "\r\n", " ", "-", "0", "a b", "\u{e9}"])),
            _ => num(self.rng.random_range(0..100)),
        }
    }

    fn word(&mut self) -> Vec<u8> {
        let n = self.rng.random_range(1..9);
        (0..n)
            .map(|_| b"abcdyz"[self.rng.random_range(0..6)])
            .collect()
    }

    /// An integer as text: mostly valid, sometimes at or past the i64 limits or malformed.
    fn int_text(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=7 => num(self.rng.random_range(-100i64..100)),
            8 => num(i64::MAX - self.rng.random_range(0..3)),
            9 => num(i64::MIN + self.rng.random_range(0..3)),
            10 => w(self.pick(&["9223372036854775808", "-9223372036854775809"])),
            11 => w(self.pick(&["+1", "007", "-0", " 1", "1 ", "1e3", "", "1.0"])),
            12 => num(self.rng.random_range(-1_000_000_000i64..1_000_000_000)),
            13 => num(i64::MAX / 2 + self.rng.random_range(0..3)),
            _ => num(self.rng.random_range(0..10)),
        }
    }

    /// A float as text (values never hold hexadecimal floats: Redis's INCRBYFLOAT reads them,
    /// Meridian's does not, as README says): plain, exponent forms, limits, and what Redis refuses (nan, inf, junk).
    fn float_text(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..10) {
            0..=3 => num(format!(
                "{}.{}",
                self.rng.random_range(-100..100),
                self.rng.random_range(0..1000)
            )),
            // No magnitudes near a double's limit: README says Meridian answers "would produce
            // NaN or Infinity" past about 1.8e308, where Redis's long double goes on.
            4 => w(self.pick(&["1e30", "-1e30", "1.5e-7", "5e-324", "1e-5"])),
            5 => w(self.pick(&["inf", "-inf", "nan", "+inf", "infinity"])),
            6 => w(self.pick(&[".5", "5.", "3e5", "-0.0", " 1.5", "1.5 ", "1e", "abc"])),
            7 => w(self.pick(&["0.1", "0.2", "1.1", "3.0e3", "10.5", "-5.25"])),
            _ => num(self.rng.random_range(-1000..1000)),
        }
    }

    /// An INCRBYFLOAT increment: [`Generator::float_text`] without what README documents as
    /// read differently (hexadecimal, magnitudes near the double's limit).
    fn increment_float(&mut self) -> Vec<u8> {
        loop {
            let f = self.float_text();
            let text = String::from_utf8_lossy(&f).to_ascii_lowercase();
            let huge = text.contains("e308") || text.contains("e+308");
            if !huge && !text.contains("0x") {
                return f;
            }
        }
    }

    /// A unique relative expiry, in units of [`RELATIVE_UNIT_SECS`].
    ///
    /// Each unit is handed out once per run and units are a minute apart: two expiries set
    /// from relative times then compare by their units alone (GT/LT, TTLs), never by the few
    /// milliseconds between the two servers running the same command, unless a key kept one
    /// expiry for whole minutes to the millisecond.
    fn relative_units(&mut self) -> u64 {
        loop {
            let u = self.rng.random_range(RELATIVE_UNITS);
            if self.used_units.insert(u) {
                return u;
            }
        }
    }

    /// An expiry argument in `ms` or seconds: relative (future) mostly, else zero, negative,
    /// overflowing or malformed.
    fn relative_expiry(&mut self, ms: bool) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0 => w("0"),
            1 => w(self.pick(&["-1", "-100"])),
            2 => w(self.pick(&[
                "9223372036854775807",
                "9223372036854775",
                "-9223372036854775808",
                "9223372036854776",
            ])),
            3 => w(self.pick(&["abc", "1.5", "", "10 "])),
            _ => {
                let s = self.relative_units() * RELATIVE_UNIT_SECS;
                num(if ms { s * 1000 } else { s })
            }
        }
    }

    /// An absolute expiry (unix seconds or ms): far in the future mostly, else in the past (if
    /// `past`), overflowing or malformed.
    fn absolute_expiry(&mut self, ms: bool, past: bool) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0..=2 if past => {
                let s = self.pick(&["1", "1000", "1600000000", "0", "-5"]);
                let v: i64 = s.parse().unwrap_or(0);
                num(if ms { v.saturating_mul(1000) } else { v })
            }
            3 => w(self.pick(&["9223372036854775807", "9223372036854775"])),
            4 => w(self.pick(&["abc", "4e9"])),
            _ => {
                let s = FAR_FUTURE + self.rng.random_range(0..FAR_FUTURE_SPREAD);
                num(if ms {
                    s * 1000 + self.rng.random_range(0..1000)
                } else {
                    s
                })
            }
        }
    }

    /// A byte offset (`bits`: a bit offset): small mostly, else negative, past the 512 MB
    /// limit or malformed. Never a valid large one: a 64 MB string slows both servers down
    /// for the rest of the run.
    fn offset(&mut self, bits: bool) -> Vec<u8> {
        match self.rng.random_range(0..14) {
            0 => w(self.pick(&["-1", "-100", "-9223372036854775808"])),
            1 if bits => w(self.pick(&["4294967296", "9223372036854775807"])),
            1 => w(self.pick(&["536870912", "4294967296", "9223372036854775807"])),
            2 => w(self.pick(&["abc", "1.5", ""])),
            _ => num(self.rng.random_range(0..40)),
        }
    }

    /// A range bound for GETRANGE, BITCOUNT, BITPOS: small, negative, extreme.
    fn bound(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..14) {
            0 => w(self.pick(&["9223372036854775807", "-9223372036854775808"])),
            1 => w(self.pick(&["abc", "9223372036854775808"])),
            2..=5 => num(self.rng.random_range(-20..0)),
            _ => num(self.rng.random_range(0..20)),
        }
    }

    fn db_index(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..20) {
            0 => w(self.pick(&["16", "-1", "abc", "100000000000"])),
            1..=8 => w("0"),
            _ => num(self.rng.random_range(0..16)),
        }
    }

    /// A KEYS / SCAN MATCH pattern: plain globs, classes, escapes and malformed ones.
    fn pattern(&mut self) -> Vec<u8> {
        if self.rng.random_bool(0.15) {
            return self.key();
        }
        w(self.pick(&[
            "*",
            "k*",
            "k?",
            "k1*",
            "k[0-4]*",
            "k[^0-4]",
            "k[!1]*",
            "*\\*",
            "k\\*\\[x\\]",
            "k[",
            "[",
            "\\",
            "*[",
            "k[a-",
            "k[9-0]",
            "?",
            "",
            "b*",
            "k[\\]]*",
            "**",
            "k1?",
            "*]",
            "k[1-]",
            "[k]*",
            "?*?",
            "k[*",
        ]))
    }

    fn scan_opts(&mut self) -> Vec<Vec<u8>> {
        let mut opts = Vec::new();
        for _ in 0..self.rng.random_range(0..3) {
            match self.rng.random_range(0..12) {
                0..=4 => {
                    opts.push(self.name("MATCH"));
                    opts.push(self.pattern());
                }
                5..=7 => {
                    opts.push(self.name("COUNT"));
                    opts.push(match self.rng.random_range(0..8) {
                        0 => w(self.pick(&["0", "-1", "abc", "9223372036854775808"])),
                        _ => num(self.rng.random_range(1..30)),
                    });
                }
                8..=9 => {
                    opts.push(self.name("TYPE"));
                    opts.push(w(self.pick(&["string", "STRING", "hash", "list", "none"])));
                }
                10 => opts.push(w(self.pick(&["MATCH", "COUNT", "TYPE"]))), // missing value
                _ => opts.push(w("NOSUCHOPTION")),
            }
        }
        opts
    }

    /// `EX s | PX ms | EXAT ts | PXAT ms` for SET and GETEX; `past` allows absolute times in
    /// the past.
    ///
    /// SET gets none: it stores a key already expired, which both servers keep (DBSIZE counts
    /// it) until their active expiry removes it, each at a moment of its own. GETEX, EXPIREAT
    /// and PEXPIREAT delete the key at once.
    fn expiry_option(&mut self, past: bool) -> Vec<Vec<u8>> {
        match self.rng.random_range(0..4) {
            0 => vec![self.name("EX"), self.relative_expiry(false)],
            1 => vec![self.name("PX"), self.relative_expiry(true)],
            2 => vec![self.name("EXAT"), self.absolute_expiry(false, past)],
            _ => vec![self.name("PXAT"), self.absolute_expiry(true, past)],
        }
    }

    /// SET's options: up to three, in any order, sometimes conflicting or unknown.
    fn set_options(&mut self) -> Vec<Vec<u8>> {
        let mut groups: Vec<Vec<Vec<u8>>> = Vec::new();
        let n = match self.rng.random_range(0..10) {
            0..=3 => 0,
            4..=7 => 1,
            8 => 2,
            _ => 3,
        };
        for _ in 0..n {
            groups.push(match self.rng.random_range(0..16) {
                0..=5 => self.expiry_option(false),
                6 | 7 => vec![self.name("NX")],
                8 | 9 => vec![self.name("XX")],
                10 | 11 => vec![self.name("GET")],
                12 | 13 => vec![self.name("KEEPTTL")],
                14 => vec![w(self.pick(&["EX", "PX"]))], // value missing
                _ => vec![w("NOSUCHOPTION")],
            });
        }
        groups.shuffle(&mut self.rng);
        groups.into_iter().flatten().collect()
    }

    /// EXPIRE's and its family's condition flags: none mostly, one, or two (refused).
    fn expire_flags(&mut self) -> Vec<Vec<u8>> {
        let n = match self.rng.random_range(0..10) {
            0..=4 => 0,
            5..=8 => 1,
            _ => 2,
        };
        (0..n)
            .map(|_| {
                let f = self.pick(&["NX", "XX", "GT", "LT", "NX", "XX", "GT", "LT", "YY"]);
                self.name(f)
            })
            .collect()
    }

    /// A BITFIELD type: signed or unsigned widths, some out of range.
    fn bitfield_type(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..12) {
            0 => w(self.pick(&["u64", "i65", "i0", "u0", "x8", "i", "8"])),
            1..=5 => num(format!("i{}", self.rng.random_range(1..=64))),
            _ => num(format!("u{}", self.rng.random_range(1..=63))),
        }
    }

    fn bitfield_offset(&mut self) -> Vec<u8> {
        match self.rng.random_range(0..12) {
            0 => num(format!("#{}", self.rng.random_range(0..8))),
            1 => w(self.pick(&["-1", "4294967296", "abc", "#-1", "#x"])),
            _ => num(self.rng.random_range(0..100)),
        }
    }

    fn bitfield_ops(&mut self, read_only: bool) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        for _ in 0..self.rng.random_range(0..4) {
            let r = if read_only {
                self.rng.random_range(0..10)
            } else {
                self.rng.random_range(0..40)
            };
            match r {
                0..=7 => {
                    out.push(self.name("GET"));
                    out.push(self.bitfield_type());
                    out.push(self.bitfield_offset());
                }
                8 | 9 if read_only => out.push(w(self.pick(&["SET", "INCRBY", "GET"]))),
                8..=9 => out.push(w("BOGUS")),
                10..=19 => {
                    out.push(self.name("SET"));
                    out.push(self.bitfield_type());
                    out.push(self.bitfield_offset());
                    out.push(self.int_text());
                }
                20..=31 => {
                    out.push(self.name("INCRBY"));
                    out.push(self.bitfield_type());
                    out.push(self.bitfield_offset());
                    out.push(self.int_text());
                }
                _ => {
                    out.push(self.name("OVERFLOW"));
                    out.push(w(self.pick(&["WRAP", "SAT", "FAIL", "sat", "NONE"])));
                }
            }
        }
        out
    }

    /// One command (not a step). Inside MULTI (`in_multi`) it leaves out what Meridian refuses
    /// there by design: README ("Transactions"): "Unlike Redis: `KEYS`, `SCAN` and
    /// `RANDOMKEY`, which read the whole keyspace, are refused inside MULTI".
    fn command(&mut self, in_multi: bool) -> Built {
        loop {
            let b = self.any_command(in_multi);
            let name = b.args.first().map(|n| n.to_ascii_uppercase());
            let whole_keyspace = matches!(name.as_deref(), Some(b"KEYS" | b"SCAN" | b"RANDOMKEY"));
            if !(in_multi && whole_keyspace && !b.refused_early) {
                return b;
            }
        }
    }

    fn any_command(&mut self, in_multi: bool) -> Built {
        let r = self.rng.random_range(0..1000);
        match r {
            // strings
            0..=69 => Built::exact(vec![self.name("GET"), self.key()]),
            70..=179 => {
                let mut a = vec![self.name("SET"), self.key(), self.value()];
                a.extend(self.set_options());
                Built::exact(a)
            }
            180..=189 => Built::exact(vec![self.name("SETNX"), self.key(), self.value()]),
            190..=199 => Built::exact(vec![
                self.name("SETEX"),
                self.key(),
                self.relative_expiry(false),
                self.value(),
            ]),
            200..=209 => Built::exact(vec![
                self.name("PSETEX"),
                self.key(),
                self.relative_expiry(true),
                self.value(),
            ]),
            210..=219 => Built::exact(vec![self.name("GETSET"), self.key(), self.value()]),
            220..=229 => Built::exact(vec![self.name("GETDEL"), self.key()]),
            230..=249 => {
                let mut a = vec![self.name("GETEX"), self.key()];
                match self.rng.random_range(0..6) {
                    0 => {}
                    1 => a.push(self.name("PERSIST")),
                    2 => {
                        a.extend(self.expiry_option(true));
                        a.extend(self.expiry_option(true));
                    }
                    3 => {
                        a.extend(self.expiry_option(true));
                        a.push(self.name("PERSIST"));
                    }
                    _ => a.extend(self.expiry_option(true)),
                }
                Built::exact(a)
            }
            250..=269 => {
                let mut a = vec![self.name("MGET")];
                a.extend(self.keys_n(1, 5));
                Built::exact(a)
            }
            270..=289 => {
                let name = if r < 282 { "MSET" } else { "MSETNX" };
                let mut a = vec![self.name(name)];
                for _ in 0..self.rng.random_range(1..4) {
                    a.push(self.key());
                    a.push(self.value());
                }
                if self.rng.random_bool(0.1) {
                    a.push(self.key()); // an odd count
                }
                Built::exact(a)
            }
            290..=309 => Built::exact(vec![self.name("APPEND"), self.key(), self.value()]),
            310..=319 => Built::exact(vec![self.name("STRLEN"), self.key()]),
            320..=334 => {
                let name = if r < 330 { "GETRANGE" } else { "SUBSTR" };
                Built::exact(vec![
                    self.name(name),
                    self.key(),
                    self.bound(),
                    self.bound(),
                ])
            }
            335..=349 => Built::exact(vec![
                self.name("SETRANGE"),
                self.key(),
                self.offset(false),
                if self.rng.random_bool(0.15) {
                    Vec::new()
                } else {
                    self.value()
                },
            ]),
            350..=374 => Built::exact(vec![self.name("INCR"), self.key()]),
            375..=384 => Built::exact(vec![self.name("DECR"), self.key()]),
            385..=404 => {
                let name = if r < 395 { "INCRBY" } else { "DECRBY" };
                Built::exact(vec![self.name(name), self.key(), self.int_text()])
            }
            // INCRBYFLOAT: README ("Where Meridian differs from Redis 7.0"): Meridian adds in
            // decimal where Redis adds in long double, so the last digits of a sum may differ
            // (even of integers past 2^64): the replies are compared as numbers, and the runner
            // then stores a's text on b too. Inside MULTI it could not store anything between
            // the two, so INCRBYFLOAT is not queued there (GET stands in). Increments past
            // 1e300 (Meridian stops at about 1.8e308, Redis at 1e4932) and hexadecimal ones
            // (not read by Meridian) are left out for the same reason.
            405..=424 if in_multi => Built::exact(vec![self.name("GET"), self.key()]),
            405..=424 => {
                let by = if self.rng.random_bool(0.3) {
                    self.int_text()
                } else {
                    self.increment_float()
                };
                let increment = std::str::from_utf8(&by)
                    .ok()
                    .and_then(|t| t.parse().ok())
                    .unwrap_or(0.0);
                Built::with(
                    vec![self.name("INCRBYFLOAT"), self.key(), by],
                    Check::Float { increment },
                )
            }
            // bitmaps
            425..=439 => Built::exact(vec![
                self.name("SETBIT"),
                self.key(),
                self.offset(true),
                w(self.pick(&["0", "1", "1", "0", "2", "-1", "x"])),
            ]),
            440..=449 => Built::exact(vec![self.name("GETBIT"), self.key(), self.offset(true)]),
            450..=464 => {
                let mut a = vec![self.name("BITCOUNT"), self.key()];
                match self.rng.random_range(0..6) {
                    0 => {}
                    1 => a.push(self.bound()), // one bound: a syntax error
                    2 => {
                        a.push(self.bound());
                        a.push(self.bound());
                        a.push(w(self.pick(&["BYTE", "BIT", "bit", "WORD"])));
                    }
                    _ => {
                        a.push(self.bound());
                        a.push(self.bound());
                    }
                }
                Built::exact(a)
            }
            465..=479 => {
                let mut a = vec![
                    self.name("BITPOS"),
                    self.key(),
                    w(self.pick(&["0", "1", "1", "0", "2"])),
                ];
                let n = self.rng.random_range(0..4);
                if n >= 1 {
                    a.push(self.bound());
                }
                if n >= 2 {
                    a.push(self.bound());
                }
                if n >= 3 {
                    a.push(w(self.pick(&["BYTE", "BIT", "bit", "WORD"])));
                }
                Built::exact(a)
            }
            480..=494 => {
                let op = self.pick(&["AND", "OR", "XOR", "NOT", "and", "NOT", "NAND"]);
                let mut a = vec![self.name("BITOP"), w(op), self.key()];
                let n = if op.eq_ignore_ascii_case("NOT") && self.rng.random_bool(0.8) {
                    1
                } else {
                    self.rng.random_range(1..4)
                };
                a.extend((0..n).map(|_| self.key()));
                Built::exact(a)
            }
            495..=509 => {
                let mut a = vec![self.name("BITFIELD"), self.key()];
                a.extend(self.bitfield_ops(false));
                Built::exact(a)
            }
            510..=514 => {
                let mut a = vec![self.name("BITFIELD_RO"), self.key()];
                a.extend(self.bitfield_ops(true));
                Built::exact(a)
            }
            515..=524 => {
                let mut a = vec![self.name("LCS"), self.key(), self.key()];
                for _ in 0..self.rng.random_range(0..3) {
                    match self.rng.random_range(0..5) {
                        0 => a.push(self.name("LEN")),
                        1 => a.push(self.name("IDX")),
                        2 => {
                            a.push(self.name("MINMATCHLEN"));
                            a.push(w(self.pick(&["0", "1", "2", "3", "-1", "x"])));
                        }
                        3 => a.push(self.name("WITHMATCHLEN")),
                        _ => a.push(w("BOGUS")),
                    }
                }
                Built::exact(a)
            }
            // keys
            525..=549 => {
                let name = if r < 540 { "DEL" } else { "UNLINK" };
                let mut a = vec![self.name(name)];
                a.extend(self.keys_n(1, 3));
                Built::exact(a)
            }
            550..=569 => {
                let name = if r < 562 { "EXISTS" } else { "TOUCH" };
                let mut a = vec![self.name(name)];
                a.extend(self.keys_n(1, 4));
                Built::exact(a)
            }
            570..=579 => Built::exact(vec![self.name("TYPE"), self.key()]),
            580..=594 => {
                let name = if r < 588 { "RENAME" } else { "RENAMENX" };
                Built::exact(vec![self.name(name), self.key(), self.key()])
            }
            595..=609 => {
                let mut a = vec![self.name("COPY"), self.key(), self.key()];
                for _ in 0..self.rng.random_range(0..3) {
                    if self.rng.random_bool(0.5) {
                        a.push(self.name("DB"));
                        a.push(self.db_index());
                    } else if self.rng.random_bool(0.9) {
                        a.push(self.name("REPLACE"));
                    } else {
                        a.push(w("BOGUS"));
                    }
                }
                Built::exact(a)
            }
            610..=617 => Built::exact(vec![self.name("MOVE"), self.key(), self.db_index()]),
            // KEYS: the order of the keys is the server's own (Redis: its hash table's).
            618..=629 => Built::with(vec![self.name("KEYS"), self.pattern()], Check::Unordered),
            630..=639 => Built::exact(vec![self.name("DBSIZE")]),
            640..=647 => Built::with(vec![self.name("RANDOMKEY")], Check::AnyKey),
            648..=665 => Built::exact(vec![self.name("SELECT"), self.db_index()]),
            666..=668 => {
                let mut a = vec![self.name("FLUSHDB")];
                match self.rng.random_range(0..5) {
                    0 => a.push(w("ASYNC")),
                    1 => a.push(w("SYNC")),
                    2 => a.push(w("BOGUS")),
                    _ => {}
                }
                Built::exact(a)
            }
            669 => Built::exact(vec![self.name("FLUSHALL")]),
            // expiry
            670..=729 => {
                let (name, ms, absolute) = match r % 4 {
                    0 => ("EXPIRE", false, false),
                    1 => ("PEXPIRE", true, false),
                    2 => ("EXPIREAT", false, true),
                    _ => ("PEXPIREAT", true, true),
                };
                let when = if absolute {
                    self.absolute_expiry(ms, true)
                } else {
                    self.relative_expiry(ms)
                };
                let mut a = vec![self.name(name), self.key(), when];
                a.extend(self.expire_flags());
                Built::exact(a)
            }
            // TTLs: the servers ran the command that set the expiry a moment apart, and this
            // one too; a key's remaining time may differ by the rounding of that moment.
            730..=749 => Built::with(vec![self.name("TTL"), self.key()], Check::Drift(1)),
            750..=764 => Built::with(vec![self.name("PTTL"), self.key()], Check::Drift(1000)),
            765..=772 => Built::with(vec![self.name("EXPIRETIME"), self.key()], Check::Drift(1)),
            773..=779 => Built::with(
                vec![self.name("PEXPIRETIME"), self.key()],
                Check::Drift(1000),
            ),
            780..=794 => Built::exact(vec![self.name("PERSIST"), self.key()]),
            // transactions
            795..=809 => {
                let mut a = vec![self.name("WATCH")];
                a.extend(self.keys_n(1, 3));
                Built::exact(a)
            }
            810..=814 => Built::exact(vec![self.name("UNWATCH")]),
            815..=817 if !in_multi => Built::exact(vec![self.name("EXEC")]), // without MULTI
            818..=819 if !in_multi => Built::exact(vec![self.name("DISCARD")]),
            820..=821 if !in_multi => Built::exact(vec![self.name("MULTI")]),
            // connection
            822..=831 => {
                let mut a = vec![self.name("PING")];
                if self.rng.random_bool(0.5) {
                    a.push(self.value());
                }
                Built::exact(a)
            }
            832..=839 => Built::exact(vec![self.name("ECHO"), self.value()]),
            // refused before queuing: unknown commands and wrong arities
            840..=849 => Built::early_error(vec![
                w(self.pick(&["NOSUCHCMD", "GETT", "SETT"])),
                self.key(),
            ]),
            850..=899 => Built::early_error(self.wrong_arity()),
            // malformed arguments the arity check lets through
            _ => Built::exact(self.bad_arguments()),
        }
    }

    /// A command with too few or too many arguments for its arity.
    fn wrong_arity(&mut self) -> Vec<Vec<u8>> {
        let name = self.pick(&[
            "GET",
            "SET",
            "SETNX",
            "SETEX",
            "PSETEX",
            "GETSET",
            "GETDEL",
            "GETEX",
            "MGET",
            "MSET",
            "MSETNX",
            "APPEND",
            "STRLEN",
            "GETRANGE",
            "SETRANGE",
            "INCR",
            "DECR",
            "INCRBY",
            "DECRBY",
            "INCRBYFLOAT",
            "SETBIT",
            "GETBIT",
            "BITCOUNT",
            "BITPOS",
            "BITOP",
            "BITFIELD",
            "LCS",
            "DEL",
            "EXISTS",
            "TYPE",
            "RENAME",
            "RENAMENX",
            "COPY",
            "MOVE",
            "KEYS",
            "SCAN",
            "DBSIZE",
            "RANDOMKEY",
            "SELECT",
            "EXPIRE",
            "PEXPIRE",
            "EXPIREAT",
            "TTL",
            "PTTL",
            "EXPIRETIME",
            "PERSIST",
            "WATCH",
            "ECHO",
            "SUBSTR",
            "TOUCH",
            "UNLINK",
            "UNWATCH",
        ]);
        // Redis 7.0.15's arity for each, as its COMMAND INFO gives it (positive: exact;
        // negative: at least).
        let arity: i32 = match name {
            "GET" | "GETDEL" | "STRLEN" | "INCR" | "DECR" | "TYPE" | "KEYS" | "TTL" | "PTTL"
            | "EXPIRETIME" | "PERSIST" | "ECHO" | "SELECT" => 2,
            "SETNX" | "GETSET" | "APPEND" | "INCRBY" | "DECRBY" | "INCRBYFLOAT" | "GETBIT"
            | "RENAME" | "RENAMENX" | "MOVE" => 3,
            "SETEX" | "PSETEX" | "GETRANGE" | "SETRANGE" | "SETBIT" | "SUBSTR" => 4,
            "DBSIZE" | "RANDOMKEY" | "UNWATCH" => 1,
            "SET" | "MSET" | "MSETNX" | "BITPOS" | "EXPIRE" | "PEXPIRE" | "EXPIREAT" => -3,
            "LCS" | "COPY" => -3,
            "BITOP" => -4,
            _ => -2,
        };
        let argc = if arity > 0 {
            // one short or one over
            let a = arity as usize;
            if a > 1 && self.rng.random_bool(0.5) {
                a - 1
            } else {
                a + 1
            }
        } else {
            self.rng.random_range(1..(-arity) as usize)
        };
        let mut a = vec![self.name(name)];
        while a.len() < argc {
            a.push(self.key());
        }
        a
    }

    /// Arguments that pass the arity check but not the command's own parsing.
    fn bad_arguments(&mut self) -> Vec<Vec<u8>> {
        let k = self.key();
        let words: Vec<&str> = match self.rng.random_range(0..14) {
            0 => vec!["SET", "_", "v", "EX", "10", "PX", "10000"],
            1 => vec!["SET", "_", "v", "NX", "XX"],
            2 => vec!["SET", "_", "v", "KEEPTTL", "EX", "100"],
            3 => vec!["SET", "_", "v", "EX"],
            4 => vec!["GETEX", "_", "EX", "100", "PX", "100"],
            5 => vec!["GETEX", "_", "PERSIST", "EX", "100"],
            6 => vec!["EXPIRE", "_", "100", "NX", "XX"],
            7 => vec!["EXPIRE", "_", "100", "GT", "LT"],
            8 => vec!["EXPIRE", "_", "100", "GT", "NX"],
            // OBJECT's subcommands themselves are left out: README says ENCODING names the
            // encoding Redis would give the value's content (Redis's depends on its history)
            // and REFCOUNT is not Redis's shared-integer count. Unknown ones echo the key.
            9 => vec!["OBJECT", "_", "_"],
            10 => vec!["BITCOUNT", "_", "0"],
            11 => vec!["LCS", "_", "_", "LEN", "IDX"],
            12 => vec!["SCAN", "abc"],
            _ => vec!["COPY", "_", "_", "DB"],
        };
        let name = words[0];
        let mut a = vec![self.name(name)];
        a.extend(
            words[1..]
                .iter()
                .map(|s| if *s == "_" { k.clone() } else { w(s) }),
        );
        a
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn render(steps: &[Step]) -> Vec<String> {
        steps.iter().map(|s| format!("{s:?}")).collect()
    }

    #[test]
    fn the_same_seed_gives_the_same_stream() {
        let run = |seed| {
            let mut g = Generator::new(seed, 20);
            (0..2000).map(|_| g.step()).collect::<Vec<_>>()
        };
        assert_eq!(render(&run(7)), render(&run(7)));
        assert_ne!(render(&run(7)), render(&run(8)));
    }

    #[test]
    fn no_two_keys_share_a_churn_slot_in_any_database() {
        let g = Generator::new(1, 50);
        assert_eq!(g.plain, 50);
        let mut seen = HashSet::new();
        for key in g.keys() {
            for db in 0..DATABASES {
                assert!(seen.insert(churn_slot(db, key)), "{key:?} in db {db}");
            }
        }
    }

    #[test]
    fn relative_expiries_are_never_repeated() {
        let mut g = Generator::new(1, 20);
        let mut seen = HashSet::new();
        for _ in 0..10_000 {
            assert!(seen.insert(g.relative_units()));
        }
    }

    #[test]
    fn exec_carries_one_check_per_queued_command() {
        let mut g = Generator::new(3, 20);
        let mut queued = [0usize; CONNS];
        let mut in_multi = [false; CONNS];
        let mut execs = 0;
        for _ in 0..20_000 {
            let step = g.step();
            let StepKind::Command { args, check } = step.kind else {
                assert!(!in_multi[step.conn], "SCAN iteration inside MULTI");
                continue;
            };
            let name = String::from_utf8_lossy(&args[0]).to_ascii_uppercase();
            match (in_multi[step.conn], name.as_str()) {
                (false, "MULTI") if args.len() == 1 => {
                    in_multi[step.conn] = true;
                    queued[step.conn] = 0;
                }
                (true, "EXEC") => {
                    let Check::Exec(checks) = check else {
                        panic!("EXEC without its checks")
                    };
                    // Commands refused before queuing (wrong arity) have no check.
                    assert!(checks.len() <= queued[step.conn]);
                    in_multi[step.conn] = false;
                    execs += 1;
                }
                (true, "DISCARD") => in_multi[step.conn] = false,
                (true, "MULTI" | "WATCH") => {}
                (true, _) => queued[step.conn] += 1,
                _ => {}
            }
        }
        assert!(execs > 10, "only {execs} EXECs");
    }
}
