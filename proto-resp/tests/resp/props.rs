//! Property tests: round-trips, arbitrary input, arbitrary read boundaries, and `redis-protocol`
//! as an independent oracle for both directions.

use std::collections::{BTreeMap, BTreeSet};

use bytes::{Bytes, BytesMut};
use proptest::collection::{btree_map, btree_set, vec};
use proptest::prelude::*;
use proptest::sample::Index;
use proto_resp::{decode_reply, encode_reply, Limits, ProtocolVersion, Reply};
use redis_protocol::resp2::{decode::decode_bytes_mut, types::BytesFrame};

use crate::support::{decode_chunked, decode_whole, encode_request, small_limits};

// ---------------------------------------------------------------- request streams

/// One element of a generated request stream.
#[derive(Debug, Clone)]
enum Item {
    /// A multibulk request with these arguments.
    Multi(Vec<Vec<u8>>),
    /// An inline request: plain words, `\r\n` or `\n` line end.
    Inline(Vec<Vec<u8>>, bool),
    /// A blank inline line (skipped by the decoder).
    Blank(Vec<u8>),
    /// `*0` or `*-1` (skipped by the decoder).
    EmptyMulti(bool),
}

fn arg() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => vec(any::<u8>(), 0..24),
        1 => vec(prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'$'), Just(b'*'), Just(0u8)], 0..6),
        1 => vec(any::<u8>(), 100..300),
    ]
}

fn word() -> impl Strategy<Value = Vec<u8>> {
    "[a-zA-Z0-9:_.-]{1,10}".prop_map(String::into_bytes)
}

fn item() -> impl Strategy<Value = Item> {
    prop_oneof![
        6 => vec(arg(), 1..6).prop_map(Item::Multi),
        2 => (vec(word(), 1..4), any::<bool>()).prop_map(|(w, crlf)| Item::Inline(w, crlf)),
        1 => prop_oneof![Just(b"\r\n".to_vec()), Just(b"\n".to_vec()), Just(b" \t \r\n".to_vec())]
            .prop_map(Item::Blank),
        1 => any::<bool>().prop_map(Item::EmptyMulti),
    ]
}

/// The wire bytes of a stream, and the requests it must decode to.
fn render(items: &[Item]) -> (Vec<u8>, Vec<Vec<Vec<u8>>>) {
    let mut out = BytesMut::new();
    let mut want = Vec::new();
    for it in items {
        match it {
            Item::Multi(args) => {
                encode_request(args, &mut out);
                want.push(args.clone());
            }
            Item::Inline(words, crlf) => {
                out.extend_from_slice(&words.join(&b' '));
                out.extend_from_slice(if *crlf { b"\r\n" } else { b"\n" });
                want.push(words.clone());
            }
            Item::Blank(line) => out.extend_from_slice(line),
            Item::EmptyMulti(zero) => {
                out.extend_from_slice(if *zero { b"*0\r\n" } else { b"*-1\r\n" })
            }
        }
    }
    (out.to_vec(), want)
}

/// A protocol-significant byte most of the time, any byte otherwise.
fn nasty_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop_oneof![
            Just(b'\r'), Just(b'\n'), Just(b'*'), Just(b'$'), Just(b'-'), Just(b'0'), Just(b'9'),
            Just(b'"'), Just(b'\''), Just(b'\\'), Just(b'x'), Just(b' '), Just(0u8)
        ],
        1 => any::<u8>(),
    ]
}

/// A valid stream with a few bytes replaced, inserted or removed.
fn mutated_stream() -> impl Strategy<Value = Vec<u8>> {
    (
        vec(item(), 1..5),
        vec((any::<Index>(), nasty_byte(), 0u8..3), 1..6),
    )
        .prop_map(|(items, mutations)| {
            let (mut bytes, _) = render(&items);
            for (at, byte, kind) in mutations {
                if bytes.is_empty() {
                    bytes.push(byte);
                    continue;
                }
                let i = at.index(bytes.len());
                match kind {
                    0 => bytes[i] = byte,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            bytes
        })
}

fn any_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        vec(any::<u8>(), 0..400),
        vec(nasty_byte(), 0..200),
        mutated_stream(),
    ]
}

/// Decoding whole and in pieces agree exactly: same requests, same leftover or same error.
fn check_whole_vs_chunks(input: &[u8], limits: &Limits, chunk: usize) -> Result<(), TestCaseError> {
    let whole = decode_whole(input, limits);
    let split = decode_chunked(input, limits, chunk);
    prop_assert_eq!(whole, split, "chunks of {}", chunk);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// A request encoded as a RESP array of bulk strings decodes back to the same arguments,
    /// and `redis-protocol`'s RESP2 decoder reads the same bytes the same way.
    #[test]
    fn request_round_trip(args in vec(arg(), 1..8)) {
        let mut wire = BytesMut::new();
        encode_request(&args, &mut wire);
        let out = decode_whole(&wire, &Limits::default());
        prop_assert_eq!(out.requests, vec![args.clone()]);
        prop_assert_eq!(out.end, Ok(vec![]));

        let Ok(Some((BytesFrame::Array(frames), used, _))) = decode_bytes_mut(&mut wire) else {
            return Err(TestCaseError::fail("redis-protocol did not decode the request"));
        };
        prop_assert!(wire.is_empty());
        prop_assert!(used > 0);
        let theirs: Vec<Vec<u8>> = frames
            .into_iter()
            .map(|f| match f {
                BytesFrame::BulkString(b) => b.to_vec(),
                other => panic!("not a bulk string: {other:?}"),
            })
            .collect();
        prop_assert_eq!(theirs, args);
    }

    /// A stream of requests (multibulk, inline, blank lines, `*0`) cut at every byte boundary
    /// decodes to the same requests as in one piece, with nothing left over.
    #[test]
    fn split_anywhere(items in vec(item(), 1..6)) {
        let (wire, want) = render(&items);
        let limits = Limits::default();
        let whole = decode_whole(&wire, &limits);
        prop_assert_eq!(&whole.requests, &want);
        prop_assert_eq!(&whole.end, &Ok(vec![]));
        for cut in 0..=wire.len() {
            let mut buf = BytesMut::from(&wire[..cut]);
            let mut got = Vec::new();
            crate::support::decode_all(&mut buf, &limits, &mut got).unwrap();
            buf.extend_from_slice(&wire[cut..]);
            crate::support::decode_all(&mut buf, &limits, &mut got).unwrap();
            prop_assert_eq!(&got, &want, "cut at {}", cut);
            prop_assert!(buf.is_empty());
        }
        let bytewise = decode_chunked(&wire, &limits, 1);
        prop_assert_eq!(bytewise, whole);
    }

    /// No input panics, every success consumes bytes (checked in `decode_all`), and the outcome
    /// does not depend on how the input is cut into reads.
    #[test]
    fn arbitrary_bytes(input in any_input(), chunk in 1usize..9, which in 0u8..3) {
        let limits = match which {
            0 => Limits::default(),
            1 => small_limits(),
            _ => Limits { unauthenticated: true, ..small_limits() },
        };
        check_whole_vs_chunks(&input, &limits, chunk)?;
    }
}

// ---------------------------------------------------------------- replies

fn leaf() -> impl Strategy<Value = Reply> {
    prop_oneof![
        "[ -~]{0,16}".prop_map(Reply::status),
        "[A-Z]{1,9} [ -~]{0,16}".prop_map(Reply::error),
        any::<i64>().prop_map(Reply::Integer),
        vec(any::<u8>(), 0..32).prop_map(Reply::bulk),
        Just(Reply::Null),
        Just(Reply::NullArray),
        any::<f64>().prop_map(Reply::Double),
        any::<bool>().prop_map(Reply::Bool),
        vec(any::<u8>(), 0..32).prop_map(|v| Reply::Verbatim(v.into())),
    ]
}

fn reply() -> impl Strategy<Value = Reply> {
    leaf().prop_recursive(3, 40, 4, |inner| {
        prop_oneof![
            vec(inner.clone(), 0..4).prop_map(Reply::Array),
            btree_map(vec(any::<u8>(), 0..8), inner, 0..4).prop_map(
                |m: BTreeMap<Vec<u8>, Reply>| {
                    Reply::Map(m.into_iter().map(|(k, v)| (Reply::bulk(k), v)).collect())
                }
            ),
            btree_set(vec(any::<u8>(), 0..8), 0..4).prop_map(|s: BTreeSet<Vec<u8>>| {
                Reply::Set(s.into_iter().map(Reply::bulk).collect())
            }),
        ]
    })
}

fn encoded(reply: &Reply, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_reply(reply, v, &mut out);
    out.to_vec()
}

/// What a reply looks like once it went through the wire of version `v` and `decode_reply`.
fn after_wire(reply: &Reply, v: ProtocolVersion) -> Reply {
    let resp3 = v == ProtocolVersion::Resp3;
    match reply {
        Reply::NullArray => Reply::Null,
        Reply::Array(items) => Reply::Array(items.iter().map(|r| after_wire(r, v)).collect()),
        Reply::Map(pairs) if resp3 => Reply::Map(
            pairs
                .iter()
                .map(|(k, x)| (after_wire(k, v), after_wire(x, v)))
                .collect(),
        ),
        Reply::Map(pairs) => Reply::Array(
            pairs
                .iter()
                .flat_map(|(k, x)| [after_wire(k, v), after_wire(x, v)])
                .collect(),
        ),
        Reply::Set(items) if resp3 => Reply::Set(items.iter().map(|r| after_wire(r, v)).collect()),
        Reply::Set(items) => Reply::Array(items.iter().map(|r| after_wire(r, v)).collect()),
        Reply::Double(_) | Reply::Verbatim(_) if !resp3 => {
            // RESP2 sends both as bulk strings.
            let wire = encoded(reply, v);
            let mut buf = BytesMut::from(&wire[..]);
            decode_reply(&mut buf, v).unwrap().unwrap()
        }
        Reply::Bool(b) if !resp3 => Reply::Integer(i64::from(*b)),
        other => other.clone(),
    }
}

/// A comparable form: RESP3 bytes with map pairs and set elements in sorted order (the decoder
/// returns them in hash order). NaN compares equal to NaN this way, as it should here.
fn canonical(reply: &Reply) -> Vec<u8> {
    fn sort(r: &Reply) -> Reply {
        match r {
            Reply::Array(items) => Reply::Array(items.iter().map(sort).collect()),
            Reply::Map(pairs) => {
                let mut p: Vec<(Reply, Reply)> =
                    pairs.iter().map(|(k, v)| (sort(k), sort(v))).collect();
                p.sort_by_key(|(k, _)| canonical(k));
                Reply::Map(p)
            }
            Reply::Set(items) => {
                let mut s: Vec<Reply> = items.iter().map(sort).collect();
                s.sort_by_key(canonical);
                Reply::Set(s)
            }
            other => other.clone(),
        }
    }
    encoded(&sort(reply), ProtocolVersion::Resp3)
}

/// The shortest-digits text of `d` laid out like Redis's `fpconv_dtoa`, computed independently
/// of the crate: digits from Rust's `{:e}` formatting instead of `ryu`.
fn reference_double(d: f64) -> String {
    if d.is_nan() {
        return "nan".into();
    }
    if d.is_infinite() {
        return if d > 0.0 { "inf".into() } else { "-inf".into() };
    }
    if d == 0.0 {
        return if d.is_sign_negative() {
            "-0".into()
        } else {
            "0".into()
        };
    }
    let sci = format!("{:e}", d.abs());
    let (mant, exp) = sci.split_once('e').unwrap();
    let exp: i32 = exp.parse().unwrap();
    let digits: String = mant.chars().filter(|c| *c != '.').collect();
    let nd = digits.len() as i32;
    let k = exp - (nd - 1);
    let e = (k + nd - 1).abs();
    let body = if k >= 0 && e < nd + 7 {
        format!("{digits}{}", "0".repeat(k as usize))
    } else if k < 0 && (k > -7 || e < 4) {
        let offset = nd + k;
        if offset <= 0 {
            format!("0.{}{digits}", "0".repeat((-offset) as usize))
        } else {
            format!(
                "{}.{}",
                &digits[..offset as usize],
                &digits[offset as usize..]
            )
        }
    } else {
        let rest = &digits[1..];
        let sign = if k + nd - 1 < 0 { '-' } else { '+' };
        if rest.is_empty() {
            format!("{}e{sign}{e}", &digits[..1])
        } else {
            format!("{}.{rest}e{sign}{e}", &digits[..1])
        }
    };
    if d < 0.0 {
        format!("-{body}")
    } else {
        body
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// `encode_reply` output read back by `redis-protocol` (an independent decoder) is the same
    /// reply, modulo what each version's wire cannot tell apart.
    #[test]
    fn reply_round_trip_through_redis_protocol(r in reply(), resp3 in any::<bool>()) {
        let v = if resp3 { ProtocolVersion::Resp3 } else { ProtocolVersion::Resp2 };
        let wire = encoded(&r, v);
        let mut buf = BytesMut::from(&wire[..]);
        let back = decode_reply(&mut buf, v);
        prop_assert!(matches!(back, Ok(Some(_))), "{:?} -> {:?} -> {:?}", r, Bytes::from(wire.clone()), back);
        prop_assert!(buf.is_empty());
        let back = back.unwrap().unwrap();
        prop_assert_eq!(canonical(&back), canonical(&after_wire(&r, v)), "{:?}", Bytes::from(wire));

        // Cut anywhere, the reply is incomplete, never an error.
        for cut in 0..wire.len() {
            let mut part = BytesMut::from(&wire[..cut]);
            prop_assert!(matches!(decode_reply(&mut part, v), Ok(None)), "cut at {}", cut);
        }
    }

    /// A double's text reads back as the same `f64` and matches the reference layout.
    #[test]
    fn double_text(bits in any::<u64>()) {
        let d = f64::from_bits(bits);
        let wire = encoded(&Reply::Double(d), ProtocolVersion::Resp3);
        let text = std::str::from_utf8(&wire[1..wire.len() - 2]).unwrap();
        let reference = reference_double(d);
        if text != reference {
            // An exact tie between two shortest candidates (…586.25 -> …586.2 or …586.3): ryu
            // and Rust's formatter may break it differently; both must then read back as `d`.
            let theirs: f64 = reference.parse().unwrap();
            prop_assert_eq!(text.len(), reference.len(), "{} vs {}", text, reference);
            prop_assert_eq!(theirs.to_bits(), d.to_bits(), "{} vs {}", text, reference);
        }
        let back: f64 = text.parse().unwrap();
        prop_assert!(back.to_bits() == d.to_bits() || (d.is_nan() && back.is_nan()), "{} -> {}", d, text);
    }
}
