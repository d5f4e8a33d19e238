//! Hand-written wire cases for `decode_request`, checked against what redis-server 7.0.15 does
//! with the same bytes (error texts included).

use bytes::BytesMut;
use proto_resp::{decode_request, Limits, ProtoError};

use crate::support::{decode_chunked, decode_whole, small_limits, Outcome};

/// Expected outcome: the requests, then either the leftover bytes or the error.
fn reqs(list: &[&[&[u8]]]) -> Vec<Vec<Vec<u8>>> {
    list.iter()
        .map(|r| r.iter().map(|a| a.to_vec()).collect())
        .collect()
}

fn ok(list: &[&[&[u8]]], leftover: &[u8]) -> Outcome {
    Outcome {
        requests: reqs(list),
        end: Ok(leftover.to_vec()),
    }
}

fn err(list: &[&[&[u8]]], e: ProtoError) -> Outcome {
    Outcome {
        requests: reqs(list),
        end: Err(e),
    }
}

fn dollar(got: char) -> ProtoError {
    ProtoError::ExpectedDollar { got }
}

use ProtoError::*;

/// (name, input, limits, expected)
fn cases() -> Vec<(&'static str, Vec<u8>, Limits, Outcome)> {
    let d = Limits::default;
    let s = small_limits;
    let u = || Limits {
        unauthenticated: true,
        ..Limits::default()
    };
    let mut big_payload = b"*2\r\n$4\r\nECHO\r\n$70000\r\n".to_vec();
    big_payload.extend(std::iter::repeat_n(b'x', 70000));
    big_payload.extend_from_slice(b"\r\n");
    let big_value = vec![b'x'; 70000];
    vec![
        // --- valid multibulk
        (
            "ping",
            b"*1\r\n$4\r\nPING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        (
            "name as sent",
            b"*1\r\n$4\r\npInG\r\n".to_vec(),
            d(),
            ok(&[&[b"pInG"]], b""),
        ),
        (
            "set with empty value",
            b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$0\r\n\r\n".to_vec(),
            d(),
            ok(&[&[b"SET", b"k", b""]], b""),
        ),
        (
            "binary payload with CRLF, NUL, 0xff",
            b"*2\r\n$4\r\nECHO\r\n$5\r\n\r\n\0\xff*\r\n".to_vec(),
            d(),
            ok(&[&[b"ECHO", b"\r\n\0\xff*"]], b""),
        ),
        (
            "payload > 64 KiB",
            big_payload,
            d(),
            ok(&[&[b"ECHO", &big_value]], b""),
        ),
        (
            "pipeline of three",
            b"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$1\r\na\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"], &[b"GET", b"a"], &[b"PING"]], b""),
        ),
        (
            "multibulk then inline then multibulk",
            b"*1\r\n$4\r\nPING\r\nECHO hi\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"], &[b"ECHO", b"hi"], &[b"PING"]], b""),
        ),
        (
            "empty lines between multibulks",
            b"*1\r\n$4\r\nPING\r\n\r\n\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"], &[b"PING"]], b""),
        ),
        // Redis reads a line up to the first \r and skips the next byte unchecked, and does not
        // check the two bytes after a payload either.
        (
            "CR followed by any byte",
            b"*1\rx$4\r\nPINGxx".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        (
            "payload trailer not checked",
            b"*2\r\n$4\r\nECHO\r\n$0\r\nxx".to_vec(),
            d(),
            ok(&[&[b"ECHO", b""]], b""),
        ),
        (
            "largest bulk allowed",
            b"*1\r\n$64\r\n"
                .iter()
                .copied()
                .chain([b'a'; 64])
                .chain(*b"\r\n")
                .collect(),
            s(),
            ok(&[&[&[b'a'; 64]]], b""),
        ),
        (
            "largest multibulk allowed",
            b"*8\r\n"
                .iter()
                .copied()
                .chain(b"$1\r\na\r\n".repeat(8))
                .collect(),
            s(),
            ok(&[&[b"a", b"a", b"a", b"a", b"a", b"a", b"a", b"a"]], b""),
        ),
        // --- empty multibulks: skipped, like Redis (argc 0 -> resetClient)
        ("*0 alone", b"*0\r\n".to_vec(), d(), ok(&[], b"")),
        ("*-1 alone", b"*-1\r\n".to_vec(), d(), ok(&[], b"")),
        (
            "*-5 is skipped too (Redis 7)",
            b"*-5\r\n".to_vec(),
            d(),
            ok(&[], b""),
        ),
        (
            "*-9223372036854775808 skipped",
            b"*-9223372036854775808\r\n".to_vec(),
            d(),
            ok(&[], b""),
        ),
        (
            "*0 *-1 then PING",
            b"*0\r\n*-1\r\n*1\r\n$4\r\nPING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        (
            "*0 then incomplete",
            b"*0\r\n*1\r\n$4\r\nPI".to_vec(),
            d(),
            ok(&[], b"*1\r\n$4\r\nPI"),
        ),
        // --- truncated: Ok(None), buffer untouched
        ("star only", b"*".to_vec(), d(), ok(&[], b"*")),
        ("count without CR", b"*12".to_vec(), d(), ok(&[], b"*12")),
        (
            "count with CR only",
            b"*1\r".to_vec(),
            d(),
            ok(&[], b"*1\r"),
        ),
        (
            "no bulk header yet",
            b"*1\r\n".to_vec(),
            d(),
            ok(&[], b"*1\r\n"),
        ),
        (
            "bulk header partial",
            b"*1\r\n$4\r".to_vec(),
            d(),
            ok(&[], b"*1\r\n$4\r"),
        ),
        (
            "payload partial",
            b"*1\r\n$4\r\nPIN".to_vec(),
            d(),
            ok(&[], b"*1\r\n$4\r\nPIN"),
        ),
        (
            "trailer partial",
            b"*1\r\n$4\r\nPING\r".to_vec(),
            d(),
            ok(&[], b"*1\r\n$4\r\nPING\r"),
        ),
        (
            "second element missing",
            b"*2\r\n$3\r\nGET\r\n".to_vec(),
            d(),
            ok(&[], b"*2\r\n$3\r\nGET\r\n"),
        ),
        (
            "bad byte waits for its line",
            b"*1\r\nX".to_vec(),
            d(),
            ok(&[], b"*1\r\nX"),
        ),
        // A NUL before the CR hides the line (Redis's strchr): wait, until too big.
        (
            "NUL in count line",
            b"*1\0\r\n".to_vec(),
            d(),
            ok(&[], b"*1\0\r\n"),
        ),
        (
            "NUL in count line, too big",
            [b"*1\0\r\n".as_slice(), &[b'x'; 40]].concat(),
            s(),
            err(&[], TooBigMbulkCount),
        ),
        // --- invalid multibulk length
        (
            "count not a number",
            b"*abc\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count empty",
            b"*\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count with plus",
            b"*+1\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count with leading zero",
            b"*01\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count -0",
            b"*-0\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count with space",
            b"* 1\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count over INT_MAX",
            b"*2147483648\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count over default limit, no payload needed",
            b"*1048577\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count huge",
            b"*99999999\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count overflows i64",
            b"*99999999999999999999\r\n".to_vec(),
            d(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "count over small limit",
            b"*9\r\n".to_vec(),
            s(),
            err(&[], InvalidMultibulkLength),
        ),
        (
            "error after good requests",
            b"*1\r\n$4\r\nPING\r\n*x\r\n".to_vec(),
            d(),
            err(&[&[b"PING"]], InvalidMultibulkLength),
        ),
        // --- invalid bulk length
        (
            "bulk -1",
            b"*1\r\n$-1\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk -5",
            b"*1\r\n$-5\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk empty",
            b"*1\r\n$\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk not a number",
            b"*1\r\n$x\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk leading zero",
            b"*1\r\n$04\r\nPING\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk over proto-max-bulk-len",
            b"*1\r\n$536870913\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk 999999999999 refused before any payload",
            b"*1\r\n$999999999999\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk longer than a number can be",
            b"*1\r\n$99999999999999999999999\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        (
            "bulk over small limit",
            b"*1\r\n$65\r\n".to_vec(),
            s(),
            err(&[], InvalidBulkLength),
        ),
        (
            "second bulk bad",
            b"*2\r\n$3\r\nGET\r\n$-1\r\n".to_vec(),
            d(),
            err(&[], InvalidBulkLength),
        ),
        // --- expected '$'
        (
            "element not a bulk",
            b"*1\r\nX\r\n".to_vec(),
            d(),
            err(&[], dollar('X')),
        ),
        (
            "element is a simple string",
            b"*1\r\n+OK\r\n".to_vec(),
            d(),
            err(&[], dollar('+')),
        ),
        (
            "element is an empty line",
            b"*1\r\n\r\n".to_vec(),
            d(),
            err(&[], dollar(' ')),
        ),
        (
            "element starts with LF",
            b"*1\r\n\n\r\n".to_vec(),
            d(),
            err(&[], dollar(' ')),
        ),
        (
            "element starts with space",
            b"*1\r\n $4\r\n".to_vec(),
            d(),
            err(&[], dollar(' ')),
        ),
        (
            "element starts with 0xe9",
            b"*1\r\n\xe9\r\n".to_vec(),
            d(),
            err(&[], dollar('\u{e9}')),
        ),
        // --- count lines without CR past max_inline_len
        (
            "mbulk count too big",
            [b"*".as_slice(), &[b'1'; 32]].concat(),
            s(),
            err(&[], TooBigMbulkCount),
        ),
        (
            "mbulk count at the limit waits",
            [b"*".as_slice(), &[b'1'; 31]].concat(),
            s(),
            ok(&[], &[b"*".as_slice(), &[b'1'; 31]].concat()),
        ),
        (
            "bulk count too big",
            [b"*1\r\n$".as_slice(), &[b'1'; 32]].concat(),
            s(),
            err(&[], TooBigBulkCount),
        ),
        (
            "bulk count too big, default limit",
            [b"*1\r\n$".as_slice(), &[b'1'; 70000]].concat(),
            d(),
            err(&[], TooBigBulkCount),
        ),
        (
            "mbulk count too big, default limit",
            [b"*".as_slice(), &[b'x'; 70000]].concat(),
            d(),
            err(&[], TooBigMbulkCount),
        ),
        // --- a client that has not authenticated yet (redis-server with requirepass)
        (
            "unauth *11",
            b"*11\r\n".to_vec(),
            u(),
            err(&[], UnauthenticatedMultibulkLength),
        ),
        (
            "unauth *10 waits",
            b"*10\r\n".to_vec(),
            u(),
            ok(&[], b"*10\r\n"),
        ),
        (
            "unauth count over the 1M limit",
            b"*99999999\r\n".to_vec(),
            u(),
            err(&[], UnauthenticatedMultibulkLength),
        ),
        (
            "unauth count over INT_MAX",
            b"*2147483648\r\n".to_vec(),
            u(),
            err(&[], InvalidMultibulkLength),
        ),
        ("unauth *-5 skipped", b"*-5\r\n".to_vec(), u(), ok(&[], b"")),
        (
            "unauth $16385",
            b"*1\r\n$16385\r\n".to_vec(),
            u(),
            err(&[], UnauthenticatedBulkLength),
        ),
        (
            "unauth $16384 waits",
            b"*1\r\n$16384\r\n".to_vec(),
            u(),
            ok(&[], b"*1\r\n$16384\r\n"),
        ),
        (
            "unauth bulk over proto-max-bulk-len",
            b"*1\r\n$999999999999\r\n".to_vec(),
            u(),
            err(&[], InvalidBulkLength),
        ),
        (
            "unauth AUTH fits",
            b"*2\r\n$4\r\nAUTH\r\n$2\r\npw\r\n".to_vec(),
            u(),
            ok(&[&[b"AUTH", b"pw"]], b""),
        ),
        // --- inline
        (
            "inline PING CRLF",
            b"PING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        (
            "inline PING LF",
            b"PING\n".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        ("inline incomplete", b"PIN".to_vec(), d(), ok(&[], b"PIN")),
        (
            "inline CR only",
            b"PING\r".to_vec(),
            d(),
            ok(&[], b"PING\r"),
        ),
        (
            "inline words",
            b"  SET  k\tv  \r\n".to_vec(),
            d(),
            ok(&[&[b"SET", b"k", b"v"]], b""),
        ),
        (
            "inline quoting",
            b"SET \"a b\\x41\\n\" 'c\\'d'\r\n".to_vec(),
            d(),
            ok(&[&[b"SET", b"a bA\n", b"c'd"]], b""),
        ),
        (
            "inline empty quoted",
            b"ECHO \"\"\r\n".to_vec(),
            d(),
            ok(&[&[b"ECHO", b""]], b""),
        ),
        (
            "inline pipeline",
            b"PING\r\nPING\nECHO x\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"], &[b"PING"], &[b"ECHO", b"x"]], b""),
        ),
        (
            "blank lines skipped",
            b"\r\n\n  \t \r\nPING\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        (
            "blank lines only",
            b"\r\n\n \r\n".to_vec(),
            d(),
            ok(&[], b""),
        ),
        (
            "blank lines then incomplete",
            b"\r\n\r\nPI".to_vec(),
            d(),
            ok(&[], b"PI"),
        ),
        (
            "inline CR CR LF",
            b"PING\r\r\n".to_vec(),
            d(),
            ok(&[&[b"PING"]], b""),
        ),
        (
            "inline CR splits words",
            b"ECHO a\rb\r\n".to_vec(),
            d(),
            ok(&[&[b"ECHO", b"a", b"b"]], b""),
        ),
        (
            "inline NUL hides the newline",
            b"PING\0\r\n".to_vec(),
            d(),
            ok(&[], b"PING\0\r\n"),
        ),
        (
            "unbalanced double quote",
            b"ECHO \"abc\r\n".to_vec(),
            d(),
            err(&[], UnbalancedQuotes),
        ),
        (
            "closing quote followed by a letter",
            b"ECHO \"abc\"d\r\n".to_vec(),
            d(),
            err(&[], UnbalancedQuotes),
        ),
        (
            "single quote unbalanced",
            b"PING\r\nECHO 'x\r\n".to_vec(),
            d(),
            err(&[&[b"PING"]], UnbalancedQuotes),
        ),
        (
            "inline too big without newline",
            vec![b'a'; 33],
            s(),
            err(&[], TooBigInlineRequest),
        ),
        (
            "inline at the limit waits",
            vec![b'a'; 32],
            s(),
            ok(&[], &[b'a'; 32]),
        ),
        (
            "inline line over the limit",
            [&[b'a'; 33][..], b"\r\n"].concat(),
            s(),
            err(&[], TooBigInlineRequest),
        ),
        (
            "inline line at the limit, CR counts",
            [&[b'a'; 32][..], b"\r\n"].concat(),
            s(),
            err(&[], TooBigInlineRequest),
        ),
        (
            "inline line at the limit, CRLF",
            [&[b'a'; 31][..], b"\r\n"].concat(),
            s(),
            ok(&[&[&[b'a'; 31]]], b""),
        ),
        (
            "inline line at the limit, LF",
            [&[b'a'; 32][..], b"\n"].concat(),
            s(),
            ok(&[&[&[b'a'; 32]]], b""),
        ),
        (
            "mbulk count line over the limit with its CR",
            [b"*".as_slice(), &[b'1'; 32], b"\r\n"].concat(),
            s(),
            err(&[], TooBigMbulkCount),
        ),
        (
            "bulk count line over the limit with its CR",
            [b"*1\r\n$".as_slice(), &[b'1'; 32], b"\r\n"].concat(),
            s(),
            err(&[], TooBigBulkCount),
        ),
        (
            "inline too big, default limit",
            vec![b'x'; 70000],
            d(),
            err(&[], TooBigInlineRequest),
        ),
        (
            "junk after a payload becomes inline (as in Redis)",
            [b"*1\r\n$4\r\nPINGxx".as_slice(), &[b'x'; 70000]].concat(),
            d(),
            err(&[&[b"PING"]], TooBigInlineRequest),
        ),
    ]
}

#[test]
fn wire_cases() {
    let mut failures = Vec::new();
    for (name, input, limits, want) in cases() {
        let got = decode_whole(&input, &limits);
        if got != want {
            failures.push(format!("{name}: got {got:?}\n    want {want:?}"));
            continue;
        }
        // The same bytes split at every point decode the same way (errors included: none of
        // these cases depends on where reads end).
        let chunks: &[usize] = if input.len() < 4096 {
            &[1, 2, 3, 7]
        } else {
            &[1000, 4096]
        };
        for &chunk in chunks {
            let split = decode_chunked(&input, &limits, chunk);
            if split != want {
                failures.push(format!("{name} (chunks of {chunk}): got {split:?}"));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

#[test]
fn error_texts_are_redis_texts() {
    let texts = [
        (
            InvalidMultibulkLength,
            "Protocol error: invalid multibulk length",
        ),
        (InvalidBulkLength, "Protocol error: invalid bulk length"),
        (dollar('X'), "Protocol error: expected '$', got 'X'"),
        (
            TooBigInlineRequest,
            "Protocol error: too big inline request",
        ),
        (
            TooBigMbulkCount,
            "Protocol error: too big mbulk count string",
        ),
        (TooBigBulkCount, "Protocol error: too big bulk count string"),
        (
            UnbalancedQuotes,
            "Protocol error: unbalanced quotes in request",
        ),
    ];
    for (e, text) in texts {
        assert_eq!(e.to_string(), text);
    }
}

#[test]
fn args_are_zero_copy_slices() {
    let mut buf = BytesMut::from(&b"*2\r\n$3\r\nGET\r\n$3\r\nkey\r\nPING\r\n"[..]);
    let base = buf.as_ptr() as usize;
    let req = decode_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(req.args[0].as_ptr() as usize, base + 8);
    assert_eq!(req.args[1].as_ptr() as usize, base + 17);
    assert_eq!(req.name(), b"GET");
    let ping_at = buf.as_ptr() as usize;
    let req = decode_request(&mut buf, &Limits::default())
        .unwrap()
        .unwrap();
    assert_eq!(req.args[0].as_ptr() as usize, ping_at);
}

#[test]
fn huge_announcements_fail_without_buffering() {
    // The error comes from the header alone: nothing of the payload is there, nothing was waited for.
    for input in [
        &b"*1\r\n$999999999999\r\n"[..],
        b"*99999999\r\n",
        b"*1\r\n$536870913\r\n",
    ] {
        let mut buf = BytesMut::from(input);
        assert!(decode_request(&mut buf, &Limits::default()).is_err());
    }
}
