//! The wire: inline commands, pipelining, partial frames, malformed and oversize frames (error,
//! then close), RESP3 reply types, QUIT, and other clients being served throughout.

use std::io::Write;
use std::net::TcpStream;
use std::time::Duration;

use meridian_tests::{encode_command, q, Node, NodeOpts, RawConn, Reply};

const CLOSE_WAIT: Duration = Duration::from_secs(5);

#[test]
fn inline_commands() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    c.send(b"PING\r\n");
    assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
    c.send(b"ping hello\r\n");
    assert_eq!(c.read_reply(), Reply::bulk("hello"));
    // Quoting, escapes, empty lines, a bare LF line ending (telnet/nc users).
    c.send(b"set greeting \"hello world\"\r\n\r\n\r\nget greeting\r\n");
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.read_reply(), Reply::bulk("hello world"));
    c.send(b"set q 'single \"quoted\"'\nGET q\n");
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.read_reply(), Reply::bulk("single \"quoted\""));
    c.send(b"set hex \"a\\x41\\n\"\r\nget hex\r\n");
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.read_reply(), Reply::bulk("aA\n"));
    // Inline and multibulk mixed in one write.
    c.send(b"INCR n\r\n*2\r\n$4\r\nINCR\r\n$1\r\nn\r\nINCR n\r\n");
    assert_eq!(c.read_reply(), Reply::Int(1));
    assert_eq!(c.read_reply(), Reply::Int(2));
    assert_eq!(c.read_reply(), Reply::Int(3));
    // Errors from inline commands are ordinary replies.
    c.send(b"get\r\n");
    assert_eq!(
        c.read_reply(),
        Reply::err("ERR wrong number of arguments for 'get' command")
    );
    c.send(b"PING\r\n");
    assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
}

#[test]
fn inline_unbalanced_quotes_close() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    c.send(b"set a \"unbalanced\r\n");
    assert_eq!(
        c.read_reply(),
        Reply::err("ERR Protocol error: unbalanced quotes in request")
    );
    c.expect_closed(CLOSE_WAIT);
    assert!(node.ping_answers());
}

#[test]
fn pipelined_requests_answered_in_order() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    let mut burst = Vec::new();
    for i in 0..2000 {
        burst.extend_from_slice(&encode_command(&["INCR", "ctr"]));
        if i % 100 == 0 {
            burst.extend_from_slice(&encode_command(&["GET", "nokey"]));
            burst.extend_from_slice(b"PING\r\n");
            burst.extend_from_slice(&encode_command(&["GET"]));
        }
    }
    c.send(&burst);
    for i in 0..2000 {
        assert_eq!(c.read_reply(), Reply::Int(i + 1));
        if i % 100 == 0 {
            assert_eq!(c.read_reply(), Reply::NilBulk);
            assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
            assert_eq!(
                c.read_reply(),
                Reply::err("ERR wrong number of arguments for 'get' command")
            );
        }
    }
    // Many SETs, then many GETs, in one write each.
    let mut sets = Vec::new();
    let mut gets = Vec::new();
    for i in 0..1000 {
        sets.extend_from_slice(&encode_command(&[
            "SET",
            &format!("p{i}"),
            &format!("v{i}"),
        ]));
        gets.extend_from_slice(&encode_command(&["GET", &format!("p{i}")]));
    }
    c.send(&sets);
    for _ in 0..1000 {
        assert_eq!(c.read_reply(), Reply::ok());
    }
    c.send(&gets);
    for i in 0..1000 {
        assert_eq!(c.read_reply(), Reply::bulk(format!("v{i}")));
    }
}

#[test]
fn partial_frames_across_writes() {
    let node = Node::start(NodeOpts::default());
    let mut stream = TcpStream::connect(("127.0.0.1", node.port())).unwrap();
    stream.set_nodelay(true).unwrap();
    let req = encode_command(&["SET", "split", "a value split into bytes"]);
    for b in &req {
        stream.write_all(std::slice::from_ref(b)).unwrap();
        stream.flush().unwrap();
        std::thread::sleep(Duration::from_millis(1));
    }
    let mut c = node.raw();
    // Another connection is served while the first request trickles in.
    c.send(b"*3\r\n$3\r\nSET\r\n$4\r\npart\r\n$5\r\nhel");
    c.expect_silence(Duration::from_millis(200));
    assert!(node.ping_answers());
    c.send(b"lo\r\n");
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.cmd(&["GET", "part"]), Reply::bulk("hello"));
    assert_eq!(
        c.cmd(&["GET", "split"]),
        Reply::bulk("a value split into bytes")
    );
    // A 3 MB value in uneven chunks.
    let big = vec![b'x'; 3 * 1024 * 1024 + 17];
    let mut req = format!("*3\r\n$3\r\nSET\r\n$3\r\nbig\r\n${}\r\n", big.len()).into_bytes();
    req.extend_from_slice(&big);
    req.extend_from_slice(b"\r\n");
    for chunk in req.chunks(65_521) {
        c.send(chunk);
    }
    assert_eq!(c.read_reply(), Reply::ok());
    assert_eq!(c.cmd(&["STRLEN", "big"]), Reply::Int(big.len() as i64));
}

/// Sends `bytes` on a fresh connection and expects `error`, then a close; the node keeps
/// serving another connection opened before the bad one.
fn expect_protocol_error(node: &Node, bytes: &[u8], error: &str) {
    let mut bystander = node.raw();
    assert_eq!(bystander.cmd(&["SET", "by", "stander"]), Reply::ok());
    let mut bad = node.raw();
    bad.send(bytes);
    assert_eq!(bad.read_reply(), Reply::err(error), "reply to {bytes:?}");
    bad.expect_closed(CLOSE_WAIT);
    assert_eq!(bystander.cmd(&["GET", "by"]), Reply::bulk("stander"));
    assert!(node.ping_answers());
}

#[test]
fn malformed_frames_get_protocol_error_and_close() {
    let node = Node::start(NodeOpts::default());
    expect_protocol_error(
        &node,
        b"*1\r\n$x\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    expect_protocol_error(
        &node,
        b"*1\r\n$-1\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    expect_protocol_error(
        &node,
        b"*abc\r\n",
        "ERR Protocol error: invalid multibulk length",
    );
    expect_protocol_error(
        &node,
        b"*1\r\n+PING\r\n",
        "ERR Protocol error: expected '$', got '+'",
    );
    // Good requests before the bad one in the same write are answered first.
    let mut c = node.raw();
    c.send(b"*1\r\n$4\r\nPING\r\nPING\r\n*1\r\n$x\r\n");
    assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
    assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
    assert_eq!(
        c.read_reply(),
        Reply::err("ERR Protocol error: invalid bulk length")
    );
    c.expect_closed(CLOSE_WAIT);
}

#[test]
fn oversize_bulk_length_rejected_without_buffering() {
    let node = Node::start(NodeOpts::default());
    // 600 MB is above the 512 MB proto-max-bulk-len: refused at the header, before any data.
    expect_protocol_error(
        &node,
        b"*1\r\n$600000000\r\n",
        "ERR Protocol error: invalid bulk length",
    );
    expect_protocol_error(
        &node,
        b"*2\r\n$3\r\nGET\r\n$99999999999\r\n",
        "ERR Protocol error: invalid bulk length",
    );
}

#[test]
fn empty_and_null_multibulk_are_ignored() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    c.send(b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.read_reply(), Reply::Simple("PONG".into()));
}

#[test]
fn unknown_command_wording() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    assert_eq!(
        c.cmd(&["foo"]),
        Reply::err("ERR unknown command 'foo', with args beginning with: ")
    );
    assert_eq!(
        c.cmd(&["foo", ""]),
        Reply::err("ERR unknown command 'foo', with args beginning with: '' ")
    );
    assert_eq!(
        c.cmd(&["Foo", "a", "b c"]),
        Reply::err("ERR unknown command 'Foo', with args beginning with: 'a' 'b c' ")
    );
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

#[test]
fn resp3_reply_types_after_hello() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    assert_eq!(c.cmd(&["GET", "missing"]), Reply::NilBulk);
    let hello = c.cmd(&["HELLO", "3"]);
    let Reply::Map(pairs) = &hello else {
        panic!("HELLO 3 must answer a map, got {hello:?}");
    };
    let keys: Vec<String> = pairs.iter().filter_map(|(k, _)| k.as_text()).collect();
    assert_eq!(
        keys,
        ["server", "version", "proto", "id", "mode", "role", "modules"]
    );
    assert!(pairs.contains(&(Reply::bulk("proto"), Reply::Int(3))));
    assert_eq!(c.cmd(&["GET", "missing"]), Reply::Null);
    assert_eq!(c.cmd(&["MGET", "missing"]), Reply::Array(vec![Reply::Null]));
    assert_eq!(c.cmd(&["SET", "k", "v", "NX", "GET"]), Reply::Null);
    assert_eq!(c.cmd(&["SET", "k", "v", "XX", "GET"]), Reply::bulk("v"));
    assert_eq!(c.cmd(&["SET", "f", "1.5"]), Reply::ok());
    assert_eq!(c.cmd(&["INCRBYFLOAT", "f", "1"]), Reply::bulk("2.5"));
    // INFO is a verbatim string in RESP3.
    match c.cmd(&["INFO", "server"]) {
        Reply::Verbatim(fmt, text) => {
            assert_eq!(fmt, "txt");
            assert!(String::from_utf8_lossy(&text).contains("redis_version:"));
        }
        other => panic!("INFO in RESP3: {other:?}"),
    }
    // Back to RESP2.
    let hello2 = c.cmd(&["HELLO", "2"]);
    assert!(
        matches!(hello2, Reply::Array(ref a) if a.len() == 14),
        "{hello2:?}"
    );
    assert_eq!(c.cmd(&["GET", "missing"]), Reply::NilBulk);
}

#[test]
fn quit_replies_ok_then_closes() {
    let node = Node::start(NodeOpts::default());
    let mut c = node.raw();
    c.send(b"*1\r\n$4\r\nQUIT\r\n*1\r\n$4\r\nPING\r\n");
    assert_eq!(c.read_reply(), Reply::ok());
    c.expect_closed(CLOSE_WAIT);
    // Through the redis crate too.
    let mut con = node.client();
    assert_eq!(q::<String>(&mut con, &["QUIT"]), "OK");
    assert!(node.ping_answers());
}

#[test]
fn many_clients_concurrently() {
    let node = Node::start(NodeOpts::default());
    let port = node.port();
    let threads: Vec<_> = (0..16)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = RawConn::connect(port).unwrap();
                for i in 0..300 {
                    let key = format!("t{t}:{i}");
                    assert_eq!(c.cmd(&["SET", &key, &i.to_string()]), Reply::ok());
                    assert_eq!(c.cmd(&["INCR", "shared"]).as_err(), None);
                    assert_eq!(c.cmd(&["GET", &key]), Reply::bulk(i.to_string()));
                }
            })
        })
        .collect();
    // A client that sends garbage meanwhile does not disturb them.
    for _ in 0..20 {
        let mut bad = node.raw();
        bad.send(b"*1\r\n$x\r\n");
        let _ = bad.try_read_reply(CLOSE_WAIT);
    }
    for t in threads {
        t.join().expect("client thread");
    }
    let mut c = node.raw();
    assert_eq!(c.cmd(&["GET", "shared"]), Reply::bulk("4800"));
    assert_eq!(c.cmd(&["DBSIZE"]), Reply::Int(16 * 300 + 1));
}

#[test]
fn abrupt_disconnects_mid_frame() {
    let node = Node::start(NodeOpts::default());
    for cut in [
        &b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$100\r\nshort"[..],
        b"*2\r\n$3\r\nGET",
        b"PING",
    ] {
        let mut s = TcpStream::connect(("127.0.0.1", node.port())).unwrap();
        s.write_all(cut).unwrap();
        drop(s);
    }
    let mut c = node.raw();
    assert_eq!(c.cmd(&["EXISTS", "k"]), Reply::Int(0));
    assert_eq!(c.cmd(&["PING"]), Reply::Simple("PONG".into()));
}

/// `connected_clients` from INFO.
/// True while CLIENT LIST (asked through `c`) shows a connection from `addr`.
fn client_listed(c: &mut redis::Connection, addr: std::net::SocketAddr) -> bool {
    let list: String = redis::cmd("CLIENT").arg("LIST").query(c).unwrap();
    let field = format!(" addr={addr} ");
    list.lines().any(|l| l.contains(&field))
}

#[test]
fn a_client_that_stops_reading_its_replies_is_closed_after_the_write_timeout() {
    let node = Node::start(NodeOpts {
        config_toml: Some("[server]\nclient-write-timeout-ms = 500\n".into()),
        ..NodeOpts::default()
    });
    let mut c = node.client();
    let big = "x".repeat(1 << 20);
    let _: () = redis::cmd("SET")
        .arg("big")
        .arg(&big)
        .query(&mut c)
        .unwrap();
    // GETs of a 1 MB value, sent until the socket's buffers are full both ways; never read.
    let mut stalled = TcpStream::connect(("127.0.0.1", node.port())).unwrap();
    let stalled_addr = stalled.local_addr().unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while !client_listed(&mut c, stalled_addr) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    assert!(client_listed(&mut c, stalled_addr), "the client is listed");
    stalled
        .set_write_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let burst = encode_command(&["GET", "big"]).repeat(64);
    let mut sent = 0;
    while stalled.write_all(&burst).is_ok() && sent < 10_000 {
        sent += 1;
    }
    assert!(
        sent < 10_000,
        "the server kept taking requests it could not answer"
    );
    // The server gives up on it; everyone else is still served meanwhile. (Looked up by its
    // address: a count of connections also counts the harness's own, closing in their time.)
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while client_listed(&mut c, stalled_addr) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        !client_listed(&mut c, stalled_addr),
        "the stalled client was not closed"
    );
    let back: String = redis::cmd("GET").arg("big").query(&mut c).unwrap();
    assert_eq!(back.len(), big.len());
    let timeout: Vec<String> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("client-write-timeout-ms")
        .query(&mut c)
        .unwrap();
    assert_eq!(timeout, vec!["client-write-timeout-ms", "500"]);
}

/// Unknown commands and subcommands echo what the client sent as Redis 7.0.15 does (bytes
/// compared with its replies; found by `meridian-bench diff`): each argument up to its first
/// NUL byte (Redis prints them with `%.*s`), other bytes as sent rather than as UTF-8
/// replacement characters, CR and LF as spaces.
#[test]
fn unknown_commands_echo_the_bytes_sent() {
    let node = Node::start(NodeOpts::default());
    let mut s = TcpStream::connect(("127.0.0.1", node.port())).expect("connecting");
    s.set_read_timeout(Some(CLOSE_WAIT)).expect("timeout");
    for (args, reply) in [
        (
            &[&b"NOSUCH"[..], b"b\x00\xff\r\n", b"a\xffz\r\nq"][..],
            &b"-ERR unknown command 'NOSUCH', with args beginning with: 'b' 'a\xffz  q' \r\n"[..],
        ),
        (
            &[b"NO\x00SUCH", b"x"],
            b"-ERR unknown command 'NO', with args beginning with: 'x' \r\n",
        ),
        (
            &[b"OBJECT", b"NO\x00\xffSUCH", b"x"],
            b"-ERR unknown subcommand 'NO'. Try OBJECT HELP.\r\n",
        ),
        (
            &[b"OBJECT", b"\xffx", b"x"],
            b"-ERR unknown subcommand '\xffx'. Try OBJECT HELP.\r\n",
        ),
    ] {
        s.write_all(&encode_command(args)).expect("writing");
        let mut got = vec![0u8; reply.len()];
        std::io::Read::read_exact(&mut s, &mut got).expect("reading the reply");
        assert_eq!(
            String::from_utf8_lossy(&got),
            String::from_utf8_lossy(reply),
            "{args:?}"
        );
        assert_eq!(got, reply, "{args:?}");
    }
}
