//! `meridian-bench diff`: a differential compatibility check. The same seeded random command
//! stream goes to a reference server (`--a`, redis-server) and to the server under test
//! (`--b`, Meridian), one command at a time, alternately, and every pair of replies is
//! compared.
//!
//! Both servers are emptied first (`FLUSHALL`), then each step runs on server a, then on
//! server b, on the same one of two connections per server. Replies must be byte-identical
//! except where [`check::Check`] names a normalisation the servers legitimately differ on:
//! TTL drift of a second, KEYS' order, SCAN's order and batching (iterated to the end on each
//! server and compared as sets of keys), RANDOMKEY's choice (nil-ness, and each named key must
//! exist on its own server). The stream keeps expiries minutes to years ahead, so no key
//! expires while it runs and the two servers never decide a timing race differently.

mod check;
mod conn;
mod generate;

use std::collections::BTreeSet;
use std::fmt::Write as _;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use self::check::{agree, Check};
use self::conn::{Answer, Conn};
use self::generate::{Generator, StepKind, CONNS};
use crate::resp::Reply;

/// Most SCAN calls one iteration may take before the server counts as never ending it.
const MAX_SCAN_CALLS: usize = 100_000;

/// What to compare.
pub struct DiffConfig {
    /// The reference server, `host:port`.
    pub a: String,
    /// The server under test, `host:port`.
    pub b: String,
    /// Seed of the command stream.
    pub seed: u64,
    /// Steps to run (a SCAN iteration counts as one).
    pub commands: u64,
    /// Plain keys in the key space (three awkward ones are added).
    pub keys: usize,
    /// Send `HELLO 3` on every connection first.
    pub resp3: bool,
    /// Stop after this many mismatches.
    pub max_mismatches: usize,
    /// Connect timeout and the longest wait for one reply.
    pub timeout: Duration,
    /// Write every step with both replies here (to find where two servers' states parted).
    pub log: Option<std::path::PathBuf>,
}

/// One step whose replies disagreed.
#[derive(Debug, Clone)]
pub struct Mismatch {
    /// The step's index in the stream (from 0).
    pub index: u64,
    /// The connection it ran on.
    pub conn: usize,
    /// The command as words, quoted and escaped.
    pub command: String,
    /// Server a's reply, escaped.
    pub a: String,
    /// Server b's reply, escaped.
    pub b: String,
}

/// The outcome of a run.
#[derive(Debug, Default)]
pub struct DiffReport {
    /// Steps run.
    pub steps: u64,
    /// The mismatches found (at most `max_mismatches`).
    pub mismatches: Vec<Mismatch>,
    /// Wall time of the run.
    pub elapsed: Duration,
}

/// The connections to one server.
struct Server {
    addr: String,
    conns: Vec<Conn>,
}

impl Server {
    fn connect(addr: &str, cfg: &DiffConfig) -> Result<Server> {
        let conns = (0..CONNS)
            .map(|_| Conn::connect(addr, cfg.timeout, cfg.resp3))
            .collect::<Result<Vec<_>>>()?;
        let mut s = Server {
            addr: addr.to_string(),
            conns,
        };
        let flushed = s.conns[0].call(&["FLUSHALL"])?;
        if flushed.reply != Reply::Simple("OK".into()) {
            bail!("{addr}: FLUSHALL answered {}", escape(&flushed.raw));
        }
        Ok(s)
    }
}

/// Runs the stream against both servers, printing each mismatch as it is found.
pub fn run(cfg: &DiffConfig) -> Result<DiffReport> {
    let start = Instant::now();
    let mut a = Server::connect(&cfg.a, cfg).context("server a")?;
    let mut b = Server::connect(&cfg.b, cfg).context("server b")?;
    let mut generator = Generator::new(cfg.seed, cfg.keys);
    let mut report = DiffReport::default();
    let mut log = match &cfg.log {
        Some(path) => Some(std::io::BufWriter::new(
            std::fs::File::create(path).with_context(|| format!("creating {}", path.display()))?,
        )),
        None => None,
    };
    for index in 0..cfg.commands {
        let step = generator.step();
        report.steps += 1;
        let step_start = Instant::now();
        let compared = match &step.kind {
            StepKind::Command { args, check } => {
                compare_command(&mut a, &mut b, step.conn, args, check, &generator)?
            }
            StepKind::ScanAll { opts } => compare_scan(&mut a, &mut b, step.conn, opts)?,
        };
        if let Some(log) = &mut log {
            use std::io::Write as _;
            writeln!(
                log,
                "#{index} c{} {:.1} ms {}{}\n  a: {}\n  b: {}",
                step.conn,
                step_start.elapsed().as_secs_f64() * 1000.0,
                render_step(&step.kind),
                if compared.agree {
                    ""
                } else {
                    "   <<< MISMATCH"
                },
                compared.a,
                compared.b
            )?;
        }
        if !compared.agree {
            let (a_text, b_text) = (compared.a, compared.b);
            let m = Mismatch {
                index,
                conn: step.conn,
                command: render_step(&step.kind),
                a: a_text,
                b: b_text,
            };
            println!(
                "mismatch {}: seed {} command #{} (connection {}): {}\n  a {}: {}\n  b {}: {}",
                report.mismatches.len() + 1,
                cfg.seed,
                m.index,
                m.conn,
                m.command,
                cfg.a,
                m.a,
                cfg.b,
                m.b
            );
            report.mismatches.push(m);
            if report.mismatches.len() >= cfg.max_mismatches {
                break;
            }
        }
    }
    report.elapsed = start.elapsed();
    Ok(report)
}

/// Both servers' replies to one step, rendered, and whether they agree.
struct Compared {
    a: String,
    b: String,
    agree: bool,
}

impl Compared {
    fn new(a: String, b: String, agree: bool) -> Compared {
        Compared { a, b, agree }
    }
}

/// Runs one command on both servers and compares the replies.
fn compare_command(
    a: &mut Server,
    b: &mut Server,
    conn: usize,
    args: &[Vec<u8>],
    check: &Check,
    generator: &Generator,
) -> Result<Compared> {
    let ra = a.conns[conn].call(args)?;
    let rb = b.conns[conn].call(args)?;
    if !agree(check, &ra, &rb) {
        return Ok(Compared::new(escape(&ra.raw), escape(&rb.raw), false));
    }
    if let (Check::Float { .. }, Reply::Bulk(text), Some(key)) = (check, &ra.reply, args.get(1)) {
        if ra.raw != rb.raw {
            // The same number in other digits (see `Check::Float`): b stores a's text, so that
            // later reads of the key compare equal.
            let set = [b"SET".as_slice(), key, text, b"KEEPTTL"];
            let done = b.conns[conn].call(&set)?;
            if done.reply != Reply::Simple("OK".into()) {
                bail!(
                    "{}: realigning {}: {}",
                    b.addr,
                    quote(key),
                    escape(&done.raw)
                );
            }
        }
    }
    if *check == Check::AnyKey {
        // Each server named a key of its own choosing: it must be one of the key space, and
        // exist there.
        for (side, (server, answer)) in [(&mut *a, &ra), (&mut *b, &rb)].into_iter().enumerate() {
            let Reply::Bulk(key) = &answer.reply else {
                continue;
            };
            let known = generator.keys().iter().any(|k| k == key);
            let exists = server.conns[conn].call(&[b"EXISTS".as_slice(), key])?;
            if !known || exists.reply != Reply::Integer(1) {
                let note = format!(
                    "{} (EXISTS: {}, in the key space: {known})",
                    escape(&answer.raw),
                    escape(&exists.raw)
                );
                return Ok(if side == 0 {
                    Compared::new(note, escape(&rb.raw), false)
                } else {
                    Compared::new(escape(&ra.raw), note, false)
                });
            }
        }
    }
    Ok(Compared::new(escape(&ra.raw), escape(&rb.raw), true))
}

/// What one SCAN iteration found on one server: the set of keys, or the first reply that was
/// not a SCAN page (an error).
#[derive(Debug, PartialEq)]
enum Scanned {
    Keys(BTreeSet<Vec<u8>>),
    Refused(Answer),
}

fn scan_all(server: &mut Server, conn: usize, opts: &[Vec<u8>]) -> Result<Scanned> {
    let mut keys = BTreeSet::new();
    let mut cursor = b"0".to_vec();
    for _ in 0..MAX_SCAN_CALLS {
        let mut args = vec![b"SCAN".to_vec(), cursor.clone()];
        args.extend(opts.iter().cloned());
        let answer = server.conns[conn].call(&args)?;
        let Reply::Array(page) = &answer.reply else {
            return Ok(Scanned::Refused(answer));
        };
        match page.as_slice() {
            [Reply::Bulk(next), Reply::Array(found)] => {
                for k in found {
                    match k {
                        Reply::Bulk(k) => keys.insert(k.clone()),
                        _ => return Ok(Scanned::Refused(answer)),
                    };
                }
                if next == b"0" {
                    return Ok(Scanned::Keys(keys));
                }
                cursor = next.clone();
            }
            _ => return Ok(Scanned::Refused(answer)),
        }
    }
    bail!(
        "{}: SCAN did not come back to cursor 0 in {MAX_SCAN_CALLS} calls",
        server.addr
    )
}

/// Iterates SCAN to the end on both servers and compares the key sets (or refusals).
fn compare_scan(a: &mut Server, b: &mut Server, conn: usize, opts: &[Vec<u8>]) -> Result<Compared> {
    let sa = scan_all(a, conn, opts)?;
    let sb = scan_all(b, conn, opts)?;
    let render = |s: &Scanned| match s {
        Scanned::Keys(keys) => {
            let list: Vec<String> = keys.iter().map(|k| quote(k)).collect();
            format!("keys {{{}}}", list.join(", "))
        }
        Scanned::Refused(answer) => escape(&answer.raw),
    };
    Ok(Compared::new(render(&sa), render(&sb), sa == sb))
}

/// A step as words, each quoted and escaped as redis-cli shows them.
fn render_step(kind: &StepKind) -> String {
    match kind {
        StepKind::Command { args, .. } => render_words(args),
        StepKind::ScanAll { opts } => format!("SCAN <every cursor to 0> {}", render_words(opts)),
    }
}

fn render_words(words: &[Vec<u8>]) -> String {
    words.iter().map(|w| quote(w)).collect::<Vec<_>>().join(" ")
}

/// Bytes in double quotes, printable ASCII as is, `"` and `\` escaped, the rest as `\xNN`
/// (`\r`, `\n` by name).
fn quote(bytes: &[u8]) -> String {
    format!("\"{}\"", escape_bytes(bytes))
}

/// A reply's wire bytes, quoted and escaped.
fn escape(raw: &[u8]) -> String {
    quote(raw)
}

fn escape_bytes(bytes: &[u8]) -> String {
    let mut out = String::with_capacity(bytes.len());
    for &c in bytes {
        match c {
            b'\r' => out.push_str("\\r"),
            b'\n' => out.push_str("\\n"),
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            0x20..=0x7e => out.push(char::from(c)),
            _ => {
                let _ = write!(out, "\\x{c:02x}");
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_and_replies_are_escaped() {
        assert_eq!(
            render_words(&[
                b"SET".to_vec(),
                b"b\x00\xff\r\n".to_vec(),
                b"a\"b\\".to_vec()
            ]),
            r#""SET" "b\x00\xff\r\n" "a\"b\\""#
        );
        assert_eq!(escape(b"$-1\r\n"), r#""$-1\r\n""#);
    }
}
