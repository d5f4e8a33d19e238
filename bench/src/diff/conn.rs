//! A blocking connection that hands back each reply's exact bytes besides its parsed form, so
//! the diff can compare two servers' answers byte for byte (a RESP3 set against an array, a
//! double against a bulk string) and fall back to the parsed form only where it normalises.

use std::io::{self, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use anyhow::{bail, Context, Result};

use crate::resp::{self, Reply};

/// One reply as the server sent it.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    /// The reply's bytes on the wire.
    pub raw: Vec<u8>,
    /// The same reply parsed.
    pub reply: Reply,
}

/// One client connection to one server.
pub struct Conn {
    stream: TcpStream,
    /// Bytes read and not yet parsed.
    buf: Vec<u8>,
    /// `host:port`, for error messages.
    addr: String,
}

impl Conn {
    /// Connects to `addr`; `timeout` bounds the connect and every later read and write. With
    /// `resp3` the connection sends `HELLO 3` first (its reply, which names the server and its
    /// version, is not compared).
    pub fn connect(addr: &str, timeout: Duration, resp3: bool) -> Result<Conn> {
        let sock = addr
            .to_socket_addrs()
            .with_context(|| format!("resolving {addr}"))?
            .next()
            .with_context(|| format!("no address for {addr}"))?;
        let stream = TcpStream::connect_timeout(&sock, timeout)
            .with_context(|| format!("connecting to {addr}"))?;
        stream.set_read_timeout(Some(timeout))?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        let mut conn = Conn {
            stream,
            buf: Vec::with_capacity(4096),
            addr: addr.to_string(),
        };
        if resp3 {
            let hello = conn.call(&[b"HELLO".as_slice(), b"3"])?;
            if let Some(e) = hello.reply.as_error() {
                bail!("{addr} refused HELLO 3: {e}");
            }
        }
        Ok(conn)
    }

    /// Sends one command and reads its reply (an error reply is an [`Answer`], not an `Err`;
    /// `Err` means the connection failed). Out-of-band RESP3 pushes are skipped.
    pub fn call<A: AsRef<[u8]>>(&mut self, args: &[A]) -> Result<Answer> {
        let mut out = Vec::with_capacity(64);
        resp::encode_command(&mut out, args);
        self.stream
            .write_all(&out)
            .with_context(|| format!("writing to {}", self.addr))?;
        self.read_answer()
            .with_context(|| format!("reading from {}", self.addr))
    }

    fn read_answer(&mut self) -> Result<Answer> {
        loop {
            match resp::parse(&self.buf)? {
                Some((Reply::Push(_), used)) => {
                    self.buf.drain(..used);
                }
                Some((reply, used)) => {
                    let raw = self.buf.drain(..used).collect();
                    return Ok(Answer { raw, reply });
                }
                None => {
                    let mut chunk = [0u8; 16 * 1024];
                    let n = self.stream.read(&mut chunk)?;
                    if n == 0 {
                        return Err(io::Error::from(io::ErrorKind::UnexpectedEof).into());
                    }
                    self.buf.extend_from_slice(&chunk[..n]);
                }
            }
        }
    }
}
