//! How the two servers' replies to one command are compared.
//!
//! Every reply is compared byte for byte first; only where the two servers may legitimately
//! differ does a [`Check`] other than [`Check::Exact`] look at the parsed replies instead.
//! Each of those normalisations is one variant here, and the generator says which applies to
//! which command.

use crate::resp::Reply;

use super::conn::Answer;

/// The comparison that applies to one command's replies.
#[derive(Debug, Clone, PartialEq)]
pub enum Check {
    /// The same bytes (inside an EXEC array: the same parsed reply).
    Exact,
    /// TTL, PTTL, EXPIRETIME, PEXPIRETIME: each server ran the command that set the expiry,
    /// and this one, at its own moment, a few milliseconds apart; so two non-negative integers
    /// may differ by up to this much (a second, or 1000 ms). Negative answers (-1 no expiry,
    /// -2 no key) must be equal.
    Drift(i64),
    /// INCRBYFLOAT by `increment` (0 when it is no number): README says Meridian adds in
    /// decimal and Redis in long double, so Redis's sum may lose what lies below its 64-bit
    /// mantissa of the larger operand (1e30 + 24696061952 − 1e30 is 0 there): two bulk strings
    /// that read as numbers agree within a relative 1e-12 of the largest of the two results,
    /// the increment and the value added to (errors and everything else must be equal).
    Float {
        /// The increment as a number.
        increment: f64,
    },
    /// KEYS: the same keys in any order (each server lists them in its own table's order).
    Unordered,
    /// RANDOMKEY: both nil, or both a key (each server picks its own at random; the runner
    /// also asks each server whether the key it named exists).
    AnyKey,
    /// EXEC: one check per queued command, applied to the array's elements in order. An
    /// aborted transaction (nil, or an error) is compared exactly.
    Exec(Vec<Check>),
}

/// Whether the two answers agree under `check`.
pub fn agree(check: &Check, a: &Answer, b: &Answer) -> bool {
    a.raw == b.raw || (*check != Check::Exact && replies_agree(check, &a.reply, &b.reply))
}

/// Whether two parsed replies agree under `check`. Parsed replies do not tell a RESP3 set from
/// an array (nor a verbatim string from a bulk string); top-level replies are compared byte for
/// byte by [`agree`] before this.
fn replies_agree(check: &Check, a: &Reply, b: &Reply) -> bool {
    match (check, a, b) {
        (Check::Drift(tolerance), Reply::Integer(x), Reply::Integer(y)) => {
            if *x < 0 || *y < 0 {
                x == y
            } else {
                x.abs_diff(*y) <= tolerance.unsigned_abs()
            }
        }
        (Check::Unordered, Reply::Array(x), Reply::Array(y)) => {
            let mut x = x.clone();
            let mut y = y.clone();
            x.sort_by(order);
            y.sort_by(order);
            x == y
        }
        (Check::AnyKey, Reply::Bulk(_), Reply::Bulk(_)) => true,
        (Check::Float { increment }, Reply::Bulk(x), Reply::Bulk(y)) => {
            match (as_float(x), as_float(y)) {
                (Some(x), Some(y)) => {
                    let scale = [y.abs(), increment.abs(), (x - increment).abs(), 1.0]
                        .into_iter()
                        .fold(x.abs(), f64::max);
                    (x - y).abs() <= FLOAT_TOLERANCE * scale
                }
                _ => x == y,
            }
        }
        // README: Meridian's numbers stop at a double's range (about 1.8e308), Redis's long
        // double goes on to about 1.2e4932; a result between the two is Meridian's "NaN or
        // Infinity" error (the runner then stores a's text on b, as for other digits).
        (Check::Float { .. }, Reply::Bulk(x), Reply::Error(e)) => {
            as_float(x).is_some_and(f64::is_infinite) && e.starts_with(PAST_A_DOUBLE)
        }
        (Check::Exec(checks), Reply::Array(x), Reply::Array(y))
            if x.len() == y.len() && x.len() == checks.len() =>
        {
            checks
                .iter()
                .zip(x.iter().zip(y))
                .all(|(c, (x, y))| replies_agree(c, x, y))
        }
        _ => a == b,
    }
}

/// Relative difference under which two INCRBYFLOAT results count as the same number.
const FLOAT_TOLERANCE: f64 = 1e-12;
/// Meridian's INCRBYFLOAT error for a result past a double's range.
const PAST_A_DOUBLE: &str = "ERR increment would produce NaN or Infinity";

fn as_float(text: &[u8]) -> Option<f64> {
    std::str::from_utf8(text).ok()?.parse().ok()
}

/// A total order on replies for sorting KEYS' answers: bulk strings by their bytes, anything
/// else (never in a KEYS answer) by its debug form.
fn order(a: &Reply, b: &Reply) -> std::cmp::Ordering {
    match (a, b) {
        (Reply::Bulk(x), Reply::Bulk(y)) => x.cmp(y),
        _ => format!("{a:?}").cmp(&format!("{b:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FLOAT: Check = Check::Float { increment: 0.1 };

    fn answer(raw: &[u8]) -> Answer {
        let (reply, used) = crate::resp::parse(raw).unwrap().unwrap();
        assert_eq!(used, raw.len());
        Answer {
            raw: raw.to_vec(),
            reply,
        }
    }

    #[test]
    fn exact_compares_bytes() {
        assert!(agree(
            &Check::Exact,
            &answer(b"+OK\r\n"),
            &answer(b"+OK\r\n")
        ));
        assert!(!agree(
            &Check::Exact,
            &answer(b"+OK\r\n"),
            &answer(b"$2\r\nOK\r\n")
        ));
        // A RESP3 set is not an array, though both parse to the same Reply.
        assert!(!agree(
            &Check::Exact,
            &answer(b"*1\r\n:1\r\n"),
            &answer(b"~1\r\n:1\r\n")
        ));
    }

    #[test]
    fn ttls_may_drift_but_not_change_sign() {
        let c = Check::Drift(1);
        assert!(agree(&c, &answer(b":100\r\n"), &answer(b":99\r\n")));
        assert!(!agree(&c, &answer(b":100\r\n"), &answer(b":98\r\n")));
        assert!(!agree(&c, &answer(b":-1\r\n"), &answer(b":0\r\n")));
        assert!(!agree(&c, &answer(b":-2\r\n"), &answer(b":-1\r\n")));
    }

    #[test]
    fn keys_compare_as_sets_and_exec_elementwise() {
        let a = answer(b"*2\r\n$1\r\na\r\n$1\r\nb\r\n");
        let b = answer(b"*2\r\n$1\r\nb\r\n$1\r\na\r\n");
        assert!(agree(&Check::Unordered, &a, &b));
        assert!(!agree(&Check::Exact, &a, &b));
        let exec = Check::Exec(vec![Check::Exact, Check::Drift(1000)]);
        assert!(agree(
            &exec,
            &answer(b"*2\r\n+OK\r\n:5000\r\n"),
            &answer(b"*2\r\n+OK\r\n:4999\r\n")
        ));
        assert!(!agree(
            &exec,
            &answer(b"*2\r\n+OK\r\n:5000\r\n"),
            &answer(b"*2\r\n:1\r\n:5000\r\n")
        ));
        assert!(!agree(&exec, &answer(b"*-1\r\n"), &answer(b"*0\r\n")));
        assert!(agree(
            &Check::AnyKey,
            &answer(b"$1\r\na\r\n"),
            &answer(b"$1\r\nb\r\n")
        ));
        let tenths = answer(b"$21\r\n146.73999999999999999\r\n");
        assert!(agree(&FLOAT, &tenths, &answer(b"$6\r\n146.74\r\n")));
        assert!(!agree(&FLOAT, &tenths, &answer(b"$6\r\n146.75\r\n")));
        // 1e30 added to -1e30 - 24696061952: Redis's long double loses the small part.
        let large = Check::Float { increment: 1e30 };
        let exact = answer(b"$12\r\n-24696061952\r\n");
        assert!(agree(&large, &answer(b"$1\r\n0\r\n"), &exact));
        assert!(!agree(&FLOAT, &answer(b"$1\r\n0\r\n"), &exact));
        let past_a_double = answer(b"$6\r\n3e+350\r\n");
        let infinity = answer(b"-ERR increment would produce NaN or Infinity\r\n");
        assert!(agree(&FLOAT, &past_a_double, &infinity));
        assert!(
            !agree(&FLOAT, &tenths, &infinity),
            "a double's number must match"
        );
        assert!(!agree(
            &Check::AnyKey,
            &answer(b"$1\r\na\r\n"),
            &answer(b"$-1\r\n")
        ));
    }
}
