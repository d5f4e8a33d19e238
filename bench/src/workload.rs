//! What the bench sends: key distribution, value sizes, the operation mix, custom commands.
//!
//! Keys look like redis-benchmark's (`key:000000001234`, `counter:…` for INCR) so that a mixed
//! run and a `redis-benchmark -r N` run touch comparable key spaces.

use anyhow::{bail, Context, Result};
use bytes::BufMut;
use rand::Rng;
use rand_distr::{Distribution, Zipf};
use serde::Serialize;

use crate::resp::{encode_bulk, encode_header};

/// Digits of the zero-padded key index (redis-benchmark uses 12).
pub const KEY_DIGITS: usize = 12;
/// Largest key space: every index must fit in [`KEY_DIGITS`] digits.
pub const MAX_KEYSPACE: u64 = 1_000_000_000_000;
/// Largest value size accepted on the command line.
pub const MAX_VALUE_SIZE: usize = 64 * 1024 * 1024;
/// Prefix of the keys INCR works on (kept apart from SET's string values, as redis-benchmark does).
pub const COUNTER_PREFIX: &str = "counter:";

/// How key indexes are drawn from `0..n`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Dist {
    /// Every key equally likely.
    Uniform,
    /// Key of rank `k` (from 1) drawn with probability proportional to `1 / k^exponent`.
    Zipf {
        /// The skew: 0 is uniform, ~1 is the classic hot-key web cache shape.
        exponent: f64,
    },
}

/// A key space of `n` keys and the distribution keys are drawn with.
#[derive(Debug, Clone)]
pub struct KeySpace {
    n: u64,
    zipf: Option<Zipf<f64>>,
}

impl KeySpace {
    /// A key space of `n` keys (1 ..= [`MAX_KEYSPACE`]).
    pub fn new(n: u64, dist: Dist) -> Result<Self> {
        if n == 0 || n > MAX_KEYSPACE {
            bail!("key space size must be in 1..={MAX_KEYSPACE}, got {n}");
        }
        let zipf = match dist {
            Dist::Uniform => None,
            Dist::Zipf { exponent } => {
                if !(0.0..=10.0).contains(&exponent) {
                    bail!("zipf exponent must be in 0..=10, got {exponent}");
                }
                // u64 -> f64 is exact below 2^53, and MAX_KEYSPACE is far below.
                Some(Zipf::new(n as f64, exponent).context("zipf parameters")?)
            }
        };
        Ok(Self { n, zipf })
    }

    /// Number of keys.
    pub fn len(&self) -> u64 {
        self.n
    }

    /// Draws one key index in `0..n` (index 0 is the hottest key under zipf).
    pub fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> u64 {
        match &self.zipf {
            None => rng.random_range(0..self.n),
            Some(z) => {
                // Samples are ranks in 1..=n as floats; clamp against rounding at the edges.
                let rank = z.sample(rng) as u64;
                rank.clamp(1, self.n) - 1
            }
        }
    }
}

/// Value size: fixed, or uniform in an inclusive range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct ValueSize {
    /// Smallest size in bytes.
    pub min: usize,
    /// Largest size in bytes.
    pub max: usize,
}

impl ValueSize {
    /// Parses `64` or `32-4096`.
    pub fn parse(s: &str) -> Result<Self> {
        let (min, max) = match s.split_once('-') {
            Some((a, b)) => (a.trim().parse()?, b.trim().parse()?),
            None => {
                let v = s.trim().parse()?;
                (v, v)
            }
        };
        if min > max || max > MAX_VALUE_SIZE {
            bail!("value size {s:?}: need min <= max <= {MAX_VALUE_SIZE}");
        }
        Ok(Self { min, max })
    }

    fn sample<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        if self.min == self.max {
            self.min
        } else {
            rng.random_range(self.min..=self.max)
        }
    }
}

impl std::fmt::Display for ValueSize {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.min == self.max {
            write!(f, "{} B", self.min)
        } else {
            write!(f, "{}-{} B", self.min, self.max)
        }
    }
}

/// One piece of a custom command argument.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    /// Literal bytes.
    Lit(Vec<u8>),
    /// `__key__`: the drawn key with its prefix.
    Key,
    /// `__rand_int__`: the drawn key index, zero padded (redis-benchmark's placeholder).
    RandInt,
    /// `__value__`: a value of the configured size.
    Value,
}

/// What an operation sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OpKind {
    /// `GET key:…`
    Get,
    /// `SET key:… <value>`
    Set,
    /// `INCR counter:…`
    Incr,
    /// A user template: arguments made of literals and placeholders.
    Custom(Vec<Vec<Part>>),
}

/// One entry of the mix.
#[derive(Debug, Clone)]
pub struct Op {
    /// Label in reports (`GET`, `SET`, `INCR`, or the custom command's first word).
    pub name: String,
    /// Relative weight in the mix.
    pub weight: u32,
    /// What to send.
    pub kind: OpKind,
}

/// Parses a mix: `9:1` (GET:SET), `9:1:1` (GET:SET:INCR) or `get=9,set=1,incr=1`.
pub fn parse_ratio(spec: &str) -> Result<Vec<Op>> {
    let mut w = [0u32; 3];
    let names = ["get", "set", "incr"];
    if spec.contains('=') {
        for item in spec.split(',').filter(|s| !s.trim().is_empty()) {
            let (name, weight) = item
                .split_once('=')
                .with_context(|| format!("ratio item {item:?}: expected name=weight"))?;
            let name = name.trim().to_ascii_lowercase();
            let Some(i) = names.iter().position(|n| *n == name) else {
                bail!("ratio: unknown operation {name:?} (known: get, set, incr)");
            };
            w[i] = weight
                .trim()
                .parse()
                .with_context(|| format!("ratio weight {weight:?}"))?;
        }
    } else {
        let parts: Vec<&str> = spec.split(':').collect();
        if parts.len() > 3 {
            bail!("ratio {spec:?}: at most GET:SET:INCR");
        }
        for (i, p) in parts.iter().enumerate() {
            w[i] = p
                .trim()
                .parse()
                .with_context(|| format!("ratio weight {p:?}"))?;
        }
    }
    let kinds = [OpKind::Get, OpKind::Set, OpKind::Incr];
    let ops: Vec<Op> = names
        .iter()
        .zip(kinds)
        .zip(w)
        .filter(|(_, w)| *w > 0)
        .map(|((n, kind), weight)| Op {
            name: n.to_ascii_uppercase(),
            weight,
            kind,
        })
        .collect();
    if ops.is_empty() {
        bail!("ratio {spec:?}: every weight is zero");
    }
    Ok(ops)
}

/// Parses a custom command template such as `HSET __key__ f __value__` (split on whitespace).
pub fn parse_command(template: &str) -> Result<Op> {
    let args: Vec<Vec<Part>> = template.split_whitespace().map(parse_arg).collect();
    let Some(first) = template.split_whitespace().next() else {
        bail!("empty --command");
    };
    Ok(Op {
        name: first.to_ascii_uppercase(),
        weight: 1,
        kind: OpKind::Custom(args),
    })
}

fn parse_arg(token: &str) -> Vec<Part> {
    const HOLES: [(&str, Part); 3] = [
        ("__key__", Part::Key),
        ("__rand_int__", Part::RandInt),
        ("__value__", Part::Value),
    ];
    let mut parts = Vec::new();
    let mut rest = token;
    loop {
        let next = HOLES
            .iter()
            .filter_map(|(pat, part)| rest.find(pat).map(|i| (i, *pat, part)))
            .min_by_key(|(i, _, _)| *i);
        match next {
            None => {
                if !rest.is_empty() {
                    parts.push(Part::Lit(rest.as_bytes().to_vec()));
                }
                return parts;
            }
            Some((i, pat, part)) => {
                if i > 0 {
                    parts.push(Part::Lit(rest.as_bytes()[..i].to_vec()));
                }
                parts.push(part.clone());
                rest = &rest[i + pat.len()..];
            }
        }
    }
}

/// The whole workload: key space, values, mix. Shared read-only by every connection.
#[derive(Debug)]
pub struct Workload {
    keys: KeySpace,
    key_prefix: String,
    values: ValueSize,
    /// Pre-filled value bytes (`max` long); a value of size `s` is its first `s` bytes.
    value_bytes: Vec<u8>,
    ops: Vec<Op>,
    cumulative: Vec<u32>,
}

impl Workload {
    /// Builds a workload; `ops` must have at least one entry with a non-zero weight.
    pub fn new(keys: KeySpace, key_prefix: &str, values: ValueSize, ops: Vec<Op>) -> Result<Self> {
        let mut cumulative = Vec::with_capacity(ops.len());
        let mut total = 0u32;
        for op in &ops {
            total = total
                .checked_add(op.weight)
                .context("ratio weights overflow")?;
            cumulative.push(total);
        }
        if total == 0 {
            bail!("the operation mix is empty");
        }
        Ok(Self {
            keys,
            key_prefix: key_prefix.to_string(),
            values,
            value_bytes: vec![b'x'; values.max],
            ops,
            cumulative,
        })
    }

    /// The operations of the mix, in report order.
    pub fn ops(&self) -> &[Op] {
        &self.ops
    }

    /// The key space.
    pub fn keys(&self) -> &KeySpace {
        &self.keys
    }

    /// Draws an operation index by weight.
    pub fn pick<R: Rng + ?Sized>(&self, rng: &mut R) -> usize {
        if self.ops.len() == 1 {
            return 0;
        }
        let total = self.cumulative.last().copied().unwrap_or(1);
        let x = rng.random_range(0..total);
        self.cumulative.partition_point(|&c| c <= x)
    }

    /// Draws an operation and appends its encoded command to `buf`; returns the op index.
    pub fn encode_next<R: Rng + ?Sized, B: BufMut>(&self, rng: &mut R, buf: &mut B) -> usize {
        let op = self.pick(rng);
        self.encode(op, rng, buf);
        op
    }

    /// Appends one command of operation `op` (random key and value size) to `buf`.
    pub fn encode<R: Rng + ?Sized, B: BufMut>(&self, op: usize, rng: &mut R, buf: &mut B) {
        let idx = self.keys.sample(rng);
        let digits = key_digits(idx);
        match &self.ops[op].kind {
            OpKind::Get => {
                buf.put_slice(b"*2\r\n$3\r\nGET\r\n");
                self.put_key(buf, self.key_prefix.as_bytes(), &digits);
            }
            OpKind::Set => {
                buf.put_slice(b"*3\r\n$3\r\nSET\r\n");
                self.put_key(buf, self.key_prefix.as_bytes(), &digits);
                let size = self.values.sample(rng);
                encode_bulk(buf, &self.value_bytes[..size]);
            }
            OpKind::Incr => {
                buf.put_slice(b"*2\r\n$4\r\nINCR\r\n");
                self.put_key(buf, COUNTER_PREFIX.as_bytes(), &digits);
            }
            OpKind::Custom(args) => {
                let size = self.values.sample(rng);
                encode_header(buf, b'*', args.len());
                for arg in args {
                    let len: usize = arg
                        .iter()
                        .map(|p| match p {
                            Part::Lit(l) => l.len(),
                            Part::Key => self.key_prefix.len() + KEY_DIGITS,
                            Part::RandInt => KEY_DIGITS,
                            Part::Value => size,
                        })
                        .sum();
                    encode_header(buf, b'$', len);
                    for p in arg {
                        match p {
                            Part::Lit(l) => buf.put_slice(l),
                            Part::Key => {
                                buf.put_slice(self.key_prefix.as_bytes());
                                buf.put_slice(&digits);
                            }
                            Part::RandInt => buf.put_slice(&digits),
                            Part::Value => buf.put_slice(&self.value_bytes[..size]),
                        }
                    }
                    buf.put_slice(b"\r\n");
                }
            }
        }
    }

    fn put_key<B: BufMut>(&self, buf: &mut B, prefix: &[u8], digits: &[u8; KEY_DIGITS]) {
        encode_header(buf, b'$', prefix.len() + KEY_DIGITS);
        buf.put_slice(prefix);
        buf.put_slice(digits);
        buf.put_slice(b"\r\n");
    }

    /// Appends `SET <key idx> <value>` (used to preload the key space).
    pub fn encode_preload<B: BufMut>(&self, idx: u64, buf: &mut B) {
        buf.put_slice(b"*3\r\n$3\r\nSET\r\n");
        self.put_key(buf, self.key_prefix.as_bytes(), &key_digits(idx));
        encode_bulk(buf, &self.value_bytes[..self.values.max]);
    }
}

/// `idx` as [`KEY_DIGITS`] zero-padded ASCII digits (indexes are below [`MAX_KEYSPACE`]).
pub fn key_digits(mut idx: u64) -> [u8; KEY_DIGITS] {
    let mut out = [b'0'; KEY_DIGITS];
    for slot in out.iter_mut().rev() {
        *slot = b'0' + (idx % 10) as u8;
        idx /= 10;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resp::{parse, Reply};
    use rand::rngs::SmallRng;
    use rand::SeedableRng;

    fn rng() -> SmallRng {
        SmallRng::seed_from_u64(7)
    }

    #[test]
    fn uniform_stays_in_range_and_covers_it() {
        let ks = KeySpace::new(100, Dist::Uniform).unwrap();
        let mut r = rng();
        let mut seen = [0u32; 100];
        for _ in 0..100_000 {
            let k = ks.sample(&mut r);
            assert!(k < 100);
            seen[k as usize] += 1;
        }
        // Each key expected 1000 times; a fair draw stays well within ±20%.
        assert!(seen.iter().all(|&c| (800..1200).contains(&c)), "{seen:?}");
    }

    #[test]
    fn zipf_is_skewed_towards_low_ranks() {
        let n = 10_000;
        let ks = KeySpace::new(n, Dist::Zipf { exponent: 0.99 }).unwrap();
        let mut r = rng();
        let draws = 200_000;
        let mut hits = vec![0u32; n as usize];
        for _ in 0..draws {
            let k = ks.sample(&mut r);
            assert!(k < n);
            hits[k as usize] += 1;
        }
        // With s≈1 the top 1% of keys take roughly half of the draws; uniform would give 1%.
        let top: u32 = hits[..100].iter().sum();
        let share = f64::from(top) / f64::from(draws);
        assert!(share > 0.4, "top 1% share {share}");
        // Rank 1 ≈ 2× rank 2 ≈ 10× rank 10.
        assert!(hits[0] > hits[1] && hits[1] > hits[9], "{:?}", &hits[..10]);
        let ratio = f64::from(hits[0]) / f64::from(hits[9]);
        assert!((6.0..16.0).contains(&ratio), "rank1/rank10 = {ratio}");
        // Exponent 0 degenerates to uniform.
        let flat = KeySpace::new(100, Dist::Zipf { exponent: 0.0 }).unwrap();
        let mut top = 0;
        for _ in 0..100_000 {
            if flat.sample(&mut r) < 10 {
                top += 1;
            }
        }
        assert!((9_000..11_000).contains(&top), "{top}");
    }

    #[test]
    fn bad_parameters_are_refused() {
        assert!(KeySpace::new(0, Dist::Uniform).is_err());
        assert!(KeySpace::new(10, Dist::Zipf { exponent: -1.0 }).is_err());
        assert!(ValueSize::parse("10-5").is_err());
        assert!(parse_ratio("0:0").is_err());
        assert!(parse_ratio("get=1,del=2").is_err());
        assert!(parse_ratio("1:2:3:4").is_err());
    }

    #[test]
    fn ratio_forms() {
        let ops = parse_ratio("9:1").unwrap();
        assert_eq!(ops.len(), 2);
        assert_eq!((ops[0].name.as_str(), ops[0].weight), ("GET", 9));
        assert_eq!((ops[1].name.as_str(), ops[1].weight), ("SET", 1));
        let ops = parse_ratio("0:1").unwrap();
        assert_eq!(ops.len(), 1);
        assert_eq!(ops[0].kind, OpKind::Set);
        let ops = parse_ratio("incr=2, GET=1").unwrap();
        let names: Vec<_> = ops.iter().map(|o| o.name.as_str()).collect();
        assert_eq!(names, ["GET", "INCR"]);
    }

    #[test]
    fn mix_follows_weights() {
        let ks = KeySpace::new(10, Dist::Uniform).unwrap();
        let w = Workload::new(
            ks,
            "key:",
            ValueSize::parse("8").unwrap(),
            parse_ratio("9:1").unwrap(),
        )
        .unwrap();
        let mut r = rng();
        let mut n = [0u32; 2];
        for _ in 0..100_000 {
            n[w.pick(&mut r)] += 1;
        }
        assert!((85_000..95_000).contains(&n[0]), "{n:?}");
    }

    fn decode_all(buf: &[u8]) -> Vec<Vec<Vec<u8>>> {
        // Commands are arrays of bulk strings: reuse the reply parser on them.
        let mut out = Vec::new();
        let mut at = 0;
        while at < buf.len() {
            let (r, n) = parse(&buf[at..]).unwrap().unwrap();
            at += n;
            let Reply::Array(items) = r else {
                panic!("not an array")
            };
            out.push(
                items
                    .into_iter()
                    .map(|i| match i {
                        Reply::Bulk(b) => b,
                        other => panic!("{other:?}"),
                    })
                    .collect(),
            );
        }
        out
    }

    #[test]
    fn encodes_each_kind() {
        let ks = KeySpace::new(1, Dist::Uniform).unwrap();
        let mut ops = parse_ratio("1:1:1").unwrap();
        ops.push(parse_command("HSET h:__key__ f__rand_int__ __value__").unwrap());
        let w = Workload::new(ks, "key:", ValueSize::parse("3").unwrap(), ops).unwrap();
        let mut r = rng();
        let mut buf = Vec::new();
        for op in 0..4 {
            w.encode(op, &mut r, &mut buf);
        }
        let cmds = decode_all(&buf);
        let s = |v: &[u8]| String::from_utf8(v.to_vec()).unwrap();
        let text: Vec<Vec<String>> = cmds
            .iter()
            .map(|c| c.iter().map(|a| s(a)).collect())
            .collect();
        assert_eq!(text[0], ["GET", "key:000000000000"]);
        assert_eq!(text[1], ["SET", "key:000000000000", "xxx"]);
        assert_eq!(text[2], ["INCR", "counter:000000000000"]);
        assert_eq!(
            text[3],
            ["HSET", "h:key:000000000000", "f000000000000", "xxx"]
        );
        assert_eq!(w.ops()[3].name, "HSET");
    }

    #[test]
    fn key_digits_pad() {
        assert_eq!(&key_digits(42), b"000000000042");
        assert_eq!(&key_digits(MAX_KEYSPACE - 1), b"999999999999");
    }
}
