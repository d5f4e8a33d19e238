//! A blocking RESP client for the chaos workers: one request at a time, every read and write
//! bounded by a timeout. A transport error means the request's outcome is unknown.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::resp::{self, Reply};

/// One connection to a node.
pub struct Client {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
}

impl Client {
    /// Connects to `addr` (`host:port`); `timeout` bounds the connect and every later read and
    /// write.
    pub fn connect(addr: &str, timeout: Duration) -> io::Result<Client> {
        let sock = addr
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| io::Error::other(format!("no address for {addr}")))?;
        let stream = TcpStream::connect_timeout(&sock, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Client {
            stream,
            buf: Vec::with_capacity(4096),
        })
    }

    /// Sends one command and reads its reply (an error reply is a `Reply::Error`, not an `Err`).
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> io::Result<Reply> {
        let mut out = Vec::with_capacity(64);
        resp::encode_command(&mut out, args);
        self.stream.write_all(&out)?;
        loop {
            match resp::parse(&self.buf).map_err(io::Error::other)? {
                Some((Reply::Push(_), used)) => {
                    self.buf.drain(..used);
                }
                Some((reply, used)) => {
                    self.buf.drain(..used);
                    return Ok(reply);
                }
                None => {
                    let mut chunk = [0u8; 16 * 1024];
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::ErrorKind::UnexpectedEof.into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}

/// One command on a fresh connection.
pub fn call_once<A: AsRef<[u8]>>(addr: &str, args: &[A], timeout: Duration) -> io::Result<Reply> {
    Client::connect(addr, timeout)?.call(args)
}

/// The fields of a flat `[name, value, …]` reply (`MERIDIAN RAFT`) as text.
pub fn fields(reply: &Reply) -> Vec<(String, String)> {
    let text = |r: &Reply| match r {
        Reply::Bulk(b) => String::from_utf8_lossy(b).into_owned(),
        Reply::Simple(s) => s.clone(),
        Reply::Integer(i) => i.to_string(),
        _ => String::new(),
    };
    match reply {
        Reply::Array(items) => items
            .chunks(2)
            .filter(|kv| kv.len() == 2)
            .map(|kv| (text(&kv[0]), text(&kv[1])))
            .collect(),
        Reply::Map(pairs) => pairs.iter().map(|(k, v)| (text(k), text(v))).collect(),
        _ => Vec::new(),
    }
}
