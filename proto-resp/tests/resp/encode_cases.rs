//! Every `Reply` variant in both protocol versions, byte for byte.

use bytes::{Bytes, BytesMut};
use proto_resp::{decode_reply, encode_reply, ProtocolVersion, Reply};

use ProtocolVersion::{Resp2, Resp3};

fn enc(reply: &Reply, v: ProtocolVersion) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_reply(reply, v, &mut out);
    out.to_vec()
}

fn b(s: &'static str) -> Bytes {
    Bytes::from_static(s.as_bytes())
}

#[test]
fn every_variant_both_versions() {
    let nested = Reply::Array(vec![
        Reply::Integer(1),
        Reply::Array(vec![Reply::bulk("a"), Reply::Null]),
        Reply::Array(vec![]),
    ]);
    let map = Reply::Map(vec![
        (Reply::bulk("k1"), Reply::Integer(1)),
        (Reply::bulk("k2"), Reply::Bool(true)),
    ]);
    // (reply, RESP2, RESP3)
    let cases: Vec<(Reply, &str, &str)> = vec![
        (Reply::ok(), "+OK\r\n", "+OK\r\n"),
        (Reply::pong(), "+PONG\r\n", "+PONG\r\n"),
        (Reply::status(""), "+\r\n", "+\r\n"),
        (
            Reply::error("ERR syntax error"),
            "-ERR syntax error\r\n",
            "-ERR syntax error\r\n",
        ),
        (
            Reply::Error(b(
                "WRONGTYPE Operation against a key holding the wrong kind of value",
            )),
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
            "-WRONGTYPE Operation against a key holding the wrong kind of value\r\n",
        ),
        (
            Reply::error("ERR unknown command 'a\r\nb'"),
            "-ERR unknown command 'a  b'\r\n",
            "-ERR unknown command 'a  b'\r\n",
        ),
        (Reply::status("a\nb"), "+a b\r\n", "+a b\r\n"),
        (Reply::Integer(0), ":0\r\n", ":0\r\n"),
        (Reply::Integer(-42), ":-42\r\n", ":-42\r\n"),
        (
            Reply::Integer(i64::MIN),
            ":-9223372036854775808\r\n",
            ":-9223372036854775808\r\n",
        ),
        (
            Reply::Integer(i64::MAX),
            ":9223372036854775807\r\n",
            ":9223372036854775807\r\n",
        ),
        (Reply::bulk("foo"), "$3\r\nfoo\r\n", "$3\r\nfoo\r\n"),
        (Reply::bulk(""), "$0\r\n\r\n", "$0\r\n\r\n"),
        (
            Reply::bulk("a\r\nb"),
            "$4\r\na\r\nb\r\n",
            "$4\r\na\r\nb\r\n",
        ),
        (Reply::Null, "$-1\r\n", "_\r\n"),
        (Reply::bulk_or_null(None), "$-1\r\n", "_\r\n"),
        (
            Reply::bulk_or_null(Some(b("v"))),
            "$1\r\nv\r\n",
            "$1\r\nv\r\n",
        ),
        (Reply::NullArray, "*-1\r\n", "_\r\n"),
        (Reply::Array(vec![]), "*0\r\n", "*0\r\n"),
        (
            nested,
            "*3\r\n:1\r\n*2\r\n$1\r\na\r\n$-1\r\n*0\r\n",
            "*3\r\n:1\r\n*2\r\n$1\r\na\r\n_\r\n*0\r\n",
        ),
        (Reply::Map(vec![]), "*0\r\n", "%0\r\n"),
        (
            map,
            "*4\r\n$2\r\nk1\r\n:1\r\n$2\r\nk2\r\n:1\r\n",
            "%2\r\n$2\r\nk1\r\n:1\r\n$2\r\nk2\r\n#t\r\n",
        ),
        (Reply::Set(vec![]), "*0\r\n", "~0\r\n"),
        (
            Reply::Set(vec![Reply::bulk("a"), Reply::bulk("b")]),
            "*2\r\n$1\r\na\r\n$1\r\nb\r\n",
            "~2\r\n$1\r\na\r\n$1\r\nb\r\n",
        ),
        (Reply::Double(1.5), "$3\r\n1.5\r\n", ",1.5\r\n"),
        (Reply::Double(1.0), "$1\r\n1\r\n", ",1\r\n"),
        (Reply::Double(0.1), "$3\r\n0.1\r\n", ",0.1\r\n"),
        (Reply::Double(-0.0), "$2\r\n-0\r\n", ",-0\r\n"),
        (Reply::Double(1e20), "$5\r\n1e+20\r\n", ",1e+20\r\n"),
        (Reply::Double(2.5e-10), "$7\r\n2.5e-10\r\n", ",2.5e-10\r\n"),
        (Reply::Double(f64::INFINITY), "$3\r\ninf\r\n", ",inf\r\n"),
        (
            Reply::Double(f64::NEG_INFINITY),
            "$4\r\n-inf\r\n",
            ",-inf\r\n",
        ),
        (Reply::Double(f64::NAN), "$3\r\nnan\r\n", ",nan\r\n"),
        (Reply::Bool(true), ":1\r\n", "#t\r\n"),
        (Reply::Bool(false), ":0\r\n", "#f\r\n"),
        (
            Reply::Verbatim(b("# Server\r\nx:1")),
            "$13\r\n# Server\r\nx:1\r\n",
            "=17\r\ntxt:# Server\r\nx:1\r\n",
        ),
        (Reply::Verbatim(b("")), "$0\r\n\r\n", "=4\r\ntxt:\r\n"),
    ];
    let mut failures = Vec::new();
    for (reply, want2, want3) in &cases {
        for (v, want) in [(Resp2, want2), (Resp3, want3)] {
            let got = enc(reply, v);
            if got != want.as_bytes() {
                failures.push(format!(
                    "{reply:?} {v:?}: got {:?}, want {want:?}",
                    String::from_utf8_lossy(&got)
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn appends_to_existing_output() {
    let mut out = BytesMut::from(&b"+OK\r\n"[..]);
    encode_reply(&Reply::Integer(7), Resp2, &mut out);
    assert_eq!(&out[..], b"+OK\r\n:7\r\n");
}

#[test]
fn protocol_version_numbers() {
    assert_eq!(ProtocolVersion::default(), Resp2);
    assert_eq!(ProtocolVersion::from_protover(2), Some(Resp2));
    assert_eq!(ProtocolVersion::from_protover(3), Some(Resp3));
    assert_eq!(ProtocolVersion::from_protover(4), None);
    assert_eq!(Resp3.number(), 3);
}

#[test]
fn decode_reply_reads_what_redis_sends() {
    // Bytes captured from redis-server 7.0.15 (HELLO 3, then ZSCOREs, GET of a missing key).
    let mut buf = BytesMut::from(
        &b",inf\r\n,0.10000000000000001\r\n,1e+20\r\n_\r\n%1\r\n$5\r\nproto\r\n:3\r\n~0\r\n"[..],
    );
    let mut got = Vec::new();
    while let Some(r) = decode_reply(&mut buf, Resp3).unwrap() {
        got.push(r);
    }
    assert_eq!(
        got,
        vec![
            Reply::Double(f64::INFINITY),
            Reply::Double(0.1),
            Reply::Double(1e20),
            Reply::Null,
            Reply::Map(vec![(Reply::bulk("proto"), Reply::Integer(3))]),
            Reply::Set(vec![]),
        ]
    );
    let mut buf = BytesMut::from(&b"$-1\r\n*-1\r\n-ERR x\r\n$3\r\nab"[..]);
    assert_eq!(decode_reply(&mut buf, Resp2).unwrap(), Some(Reply::Null));
    assert_eq!(decode_reply(&mut buf, Resp2).unwrap(), Some(Reply::Null));
    assert_eq!(
        decode_reply(&mut buf, Resp2).unwrap(),
        Some(Reply::error("ERR x"))
    );
    assert_eq!(decode_reply(&mut buf, Resp2).unwrap(), None);
    assert_eq!(&buf[..], b"$3\r\nab");
    assert!(decode_reply(&mut BytesMut::from(&b"?x\r\n"[..]), Resp2).is_err());
}
