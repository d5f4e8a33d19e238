//! An argument cursor over a request, with typed errors worded like Redis.

use bytes::Bytes;

use crate::error::RespError;
use crate::keyspace::number::{parse_f64_strict, parse_i64_strict};

/// The arguments after the command name, consumed front to back.
pub struct Args {
    items: std::vec::IntoIter<Bytes>,
}

impl Args {
    /// Wraps the arguments (command name already removed).
    pub fn new(items: Vec<Bytes>) -> Args {
        Args {
            items: items.into_iter(),
        }
    }

    /// The arguments left, unconsumed (MONITOR shows them).
    pub fn remaining_args(&self) -> &[Bytes] {
        self.items.as_slice()
    }

    /// Arguments left.
    pub fn remaining(&self) -> usize {
        self.items.len()
    }

    /// The next argument; a missing one is a syntax error (arity was checked before).
    pub fn next_bytes(&mut self) -> Result<Bytes, RespError> {
        self.items.next().ok_or(RespError::Syntax)
    }

    /// The next argument, if any.
    pub fn next_opt(&mut self) -> Option<Bytes> {
        self.items.next()
    }

    /// The next argument as an integer (`-ERR value is not an integer or out of range`).
    pub fn next_i64(&mut self) -> Result<i64, RespError> {
        parse_int(&self.next_bytes()?)
    }

    /// The next argument as a float (`-ERR value is not a valid float`).
    pub fn next_f64(&mut self) -> Result<f64, RespError> {
        parse_f64_strict(&self.next_bytes()?).ok_or(RespError::NotFloat)
    }

    /// The next argument upper-cased as a keyword (for option matching).
    pub fn next_keyword(&mut self) -> Option<Keyword> {
        self.items.next().map(|b| Keyword::new(&b))
    }

    /// All remaining arguments.
    pub fn rest(&mut self) -> Vec<Bytes> {
        self.items.by_ref().collect()
    }

    /// Fails with a syntax error when arguments are left over.
    pub fn finish(&mut self) -> Result<(), RespError> {
        if self.items.len() == 0 {
            Ok(())
        } else {
            Err(RespError::Syntax)
        }
    }
}

/// Parses an integer argument strictly, like Redis's `string2ll`.
pub fn parse_int(bytes: &[u8]) -> Result<i64, RespError> {
    parse_i64_strict(bytes).ok_or(RespError::NotInteger)
}

/// An upper-cased option word, compared without allocation for short words.
pub struct Keyword {
    buf: [u8; 24],
    len: usize,
}

impl Keyword {
    /// Upper-cases `raw` (words longer than the buffer never match a keyword).
    pub fn new(raw: &[u8]) -> Keyword {
        let mut buf = [0u8; 24];
        let len = if raw.len() <= buf.len() {
            for (dst, src) in buf.iter_mut().zip(raw) {
                *dst = src.to_ascii_uppercase();
            }
            raw.len()
        } else {
            usize::MAX
        };
        Keyword { buf, len }
    }

    /// The upper-cased word (empty for over-long input).
    pub fn as_str(&self) -> &str {
        if self.len == usize::MAX {
            return "\u{0}";
        }
        std::str::from_utf8(&self.buf[..self.len]).unwrap_or("\u{0}")
    }
}
