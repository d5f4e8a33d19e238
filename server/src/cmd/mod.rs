//! The command table: one [`CommandSpec`] row per command (name, arity, flags) and the
//! dispatch from a decoded request to the function that runs it.
//!
//! Commands are grouped by family, one file each (`string.rs`, `keys.rs`, `expire.rs`,
//! `connection.rs`, `server.rs`, `meridian.rs`): each function parses its arguments with
//! [`Args`], runs against the node, and returns an [`Outcome`]. Writes do not touch the
//! keyspace here: they return an [`Op`](crate::op::Op) that the connection batches and submits
//! through the [`Writer`](crate::write::Writer).

pub mod args;
mod bits;
mod connection;
mod expire;
mod introspect;
mod keys;
mod lcs;
mod meridian;
pub mod pubsub;
pub(crate) mod server;
mod string;
pub mod tracking;
pub mod transaction;

use std::collections::HashMap;
use std::sync::OnceLock;

use bytes::Bytes;
use proto_resp::Reply;

pub use args::Args;
pub use connection::REDIS_COMPAT_VERSION;

use crate::client::ClientState;
use crate::error::RespError;
use crate::keyspace::StoredValue;
use crate::node::Shared;
use crate::op::Op;

/// What running a command produced.
pub enum Outcome {
    /// A reply, ready to send.
    Reply(Reply),
    /// A write to submit; its result becomes the reply.
    Write(Op),
    /// Send the reply, then close the connection (QUIT).
    Close(Reply),
    /// A reply that needs waiting (admin commands talking to Raft).
    Async(futures::future::BoxFuture<'static, Reply>),
    /// The reply is already in [`Ctx::out`] (encoded where the value is held, uncopied).
    Written,
    /// Close the connection without a reply (SHUTDOWN, as Redis does).
    Hangup,
}

impl From<Reply> for Outcome {
    fn from(r: Reply) -> Self {
        Outcome::Reply(r)
    }
}

/// Command properties used for dispatch and COMMAND INFO.
pub mod flags {
    /// Changes data (goes through the writer).
    pub const WRITE: u32 = 1;
    /// Reads data (passes the read gate).
    pub const READONLY: u32 = 2;
    /// Allowed before AUTH.
    pub const NOAUTH: u32 = 4;
    /// Administrative.
    pub const ADMIN: u32 = 8;
    /// O(1) or O(log N).
    pub const FAST: u32 = 16;
    /// Connection-level, never touches data.
    pub const CONNECTION: u32 = 32;
}

/// The function that runs a command.
pub type Handler = fn(&mut Ctx<'_>, &mut Args) -> Result<Outcome, RespError>;

/// One row of the command table.
pub struct CommandSpec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis arity: positive = exact argument count including the name, negative = minimum.
    pub arity: i32,
    /// [`flags`] bits.
    pub flags: u32,
    /// Position of the first key (0 = none), last key (-1 = last argument), step.
    pub keys: (i32, i32, i32),
    /// Command group for COMMAND DOCS.
    pub group: &'static str,
    /// One-line summary for COMMAND DOCS.
    pub summary: &'static str,
    /// The implementation.
    pub handler: Handler,
}

impl CommandSpec {
    /// True when the command changes data.
    pub fn is_write(&self) -> bool {
        self.flags & flags::WRITE != 0
    }

    /// True when the command reads data.
    pub fn is_read(&self) -> bool {
        self.flags & flags::READONLY != 0
    }

    /// The key arguments of `argv` (the whole command, name first), by the table's key
    /// positions (COMMAND GETKEYS, and the keys a read inside EXEC reads).
    pub fn key_args<'v>(&self, argv: &'v [Bytes]) -> impl Iterator<Item = &'v Bytes> + 'v {
        let (first, last, step) = self.keys;
        let argc = argv.len() as i32;
        let last = if first == 0 {
            0 // no keys: an empty range
        } else if last < 0 {
            argc + last
        } else {
            last.min(argc - 1)
        };
        (first.max(1)..=last)
            .step_by(step.max(1) as usize)
            .filter_map(move |i| argv.get(i as usize))
    }

    /// The flag names COMMAND INFO prints.
    pub fn flag_names(&self) -> Vec<&'static str> {
        let mut out = Vec::new();
        if self.flags & flags::WRITE != 0 {
            out.push("write");
        }
        if self.flags & flags::READONLY != 0 {
            out.push("readonly");
        }
        if self.flags & flags::ADMIN != 0 {
            out.push("admin");
        }
        if self.flags & flags::NOAUTH != 0 {
            out.push("no_auth");
        }
        if self.flags & flags::FAST != 0 {
            out.push("fast");
        }
        out
    }
}

/// What a command runs against: the node and the calling client.
pub struct Ctx<'a> {
    /// Node-wide state.
    pub shared: &'a Shared,
    /// The connection's state (db, protocol, name, auth).
    pub client: &'a mut ClientState,
    /// Wall clock at dispatch, unix ms.
    pub now_ms: u64,
    /// The command's own row.
    pub spec: &'static CommandSpec,
    /// The connection's reply buffer, for handlers that answer [`Outcome::Written`].
    pub out: &'a mut bytes::BytesMut,
    /// Inside EXEC: what the transaction's batch read for this command, which [`Ctx::get`]
    /// answers from instead of the keyspace.
    pub view: Option<&'a transaction::TxView>,
}

impl Ctx<'_> {
    /// The live value of `key` in `db`: from the keyspace, or inside EXEC from what the
    /// transaction's batch read at this command's place among its writes.
    pub fn get(&self, db: u8, key: &[u8]) -> Result<Option<StoredValue>, RespError> {
        match self.view {
            None => Ok(self.shared.keyspace.get(db, key, self.now_ms)?),
            Some(view) => view.value(key),
        }
    }

    /// The number of keys in the client's database (inside EXEC: at this command's place).
    pub fn dbsize(&self) -> Result<u64, RespError> {
        match self.view {
            None => Ok(self.shared.keyspace.dbsize(self.client.db)),
            Some(view) => view.count(),
        }
    }
}

macro_rules! cmd {
    ($name:literal, $arity:expr, $flags:expr, $keys:expr, $group:literal, $summary:literal, $handler:path) => {
        CommandSpec {
            name: $name,
            arity: $arity,
            flags: $flags,
            keys: $keys,
            group: $group,
            summary: $summary,
            handler: $handler,
        }
    };
}

use flags::{ADMIN, CONNECTION, FAST, NOAUTH, READONLY, WRITE};

const NOKEYS: (i32, i32, i32) = (0, 0, 0);
const KEY1: (i32, i32, i32) = (1, 1, 1);
const KEYS_ALL: (i32, i32, i32) = (1, -1, 1);

/// Every command the node knows.
pub static COMMANDS: &[CommandSpec] = &[
    // connection
    cmd!(
        "ping",
        -1,
        FAST | CONNECTION,
        NOKEYS,
        "connection",
        "Returns the server's liveliness response.",
        connection::ping
    ),
    cmd!(
        "echo",
        2,
        FAST | CONNECTION,
        NOKEYS,
        "connection",
        "Returns the given string.",
        connection::echo
    ),
    cmd!(
        "quit",
        -1,
        FAST | NOAUTH | CONNECTION,
        NOKEYS,
        "connection",
        "Closes the connection.",
        connection::quit
    ),
    cmd!(
        "hello",
        -1,
        FAST | NOAUTH | CONNECTION,
        NOKEYS,
        "connection",
        "Handshakes with the server.",
        connection::hello
    ),
    cmd!(
        "auth",
        -2,
        FAST | NOAUTH | CONNECTION,
        NOKEYS,
        "connection",
        "Authenticates the connection.",
        connection::auth
    ),
    cmd!(
        "select",
        2,
        FAST | CONNECTION,
        NOKEYS,
        "connection",
        "Changes the selected database.",
        connection::select
    ),
    cmd!(
        "client",
        -2,
        CONNECTION,
        NOKEYS,
        "connection",
        "A container for client connection commands.",
        connection::client
    ),
    cmd!(
        "reset",
        1,
        FAST | NOAUTH | CONNECTION,
        NOKEYS,
        "connection",
        "Resets the connection.",
        connection::reset
    ),
    // transactions
    cmd!(
        "subscribe",
        -2,
        CONNECTION,
        NOKEYS,
        "pubsub",
        "Listens for messages published to channels.",
        pubsub::subscribe
    ),
    cmd!(
        "unsubscribe",
        -1,
        CONNECTION,
        NOKEYS,
        "pubsub",
        "Stops listening to messages posted to channels.",
        pubsub::unsubscribe
    ),
    cmd!(
        "psubscribe",
        -2,
        CONNECTION,
        NOKEYS,
        "pubsub",
        "Listens for messages published to channels that match one or more patterns.",
        pubsub::subscribe
    ),
    cmd!(
        "punsubscribe",
        -1,
        CONNECTION,
        NOKEYS,
        "pubsub",
        "Stops listening to messages published to channels that match one or more patterns.",
        pubsub::unsubscribe
    ),
    cmd!(
        "monitor",
        1,
        ADMIN,
        NOKEYS,
        "server",
        "Listens for all requests received by the server in real-time.",
        pubsub::monitor
    ),
    cmd!(
        "publish",
        3,
        FAST,
        NOKEYS,
        "pubsub",
        "Posts a message to a channel.",
        pubsub::publish
    ),
    cmd!(
        "pubsub",
        -2,
        0,
        NOKEYS,
        "pubsub",
        "A container for Pub/Sub commands.",
        pubsub::pubsub
    ),
    cmd!(
        "multi",
        1,
        FAST | CONNECTION,
        NOKEYS,
        "transactions",
        "Starts a transaction.",
        transaction::multi
    ),
    cmd!(
        "exec",
        1,
        CONNECTION,
        NOKEYS,
        "transactions",
        "Executes all commands in a transaction.",
        transaction::exec
    ),
    cmd!(
        "discard",
        1,
        FAST | CONNECTION,
        NOKEYS,
        "transactions",
        "Discards a transaction.",
        transaction::discard
    ),
    cmd!(
        "watch",
        -2,
        FAST | CONNECTION,
        KEYS_ALL,
        "transactions",
        "Monitors changes to keys to determine the execution of a transaction.",
        transaction::watch
    ),
    cmd!(
        "unwatch",
        1,
        FAST | CONNECTION,
        NOKEYS,
        "transactions",
        "Forgets about watched keys of a transaction.",
        transaction::unwatch
    ),
    cmd!(
        "readonly",
        1,
        FAST | CONNECTION,
        NOKEYS,
        "cluster",
        "Enables local (possibly stale) reads for the connection.",
        connection::readonly
    ),
    cmd!(
        "readwrite",
        1,
        FAST | CONNECTION,
        NOKEYS,
        "cluster",
        "Turns local reads off again.",
        connection::readwrite
    ),
    // server
    cmd!(
        "command",
        -1,
        CONNECTION,
        NOKEYS,
        "server",
        "Returns detailed information about all commands.",
        server::command
    ),
    cmd!(
        "config",
        -2,
        ADMIN,
        NOKEYS,
        "server",
        "A container for server configuration commands.",
        server::config
    ),
    cmd!(
        "info",
        -1,
        0,
        NOKEYS,
        "server",
        "Returns information and statistics about the server.",
        server::info
    ),
    cmd!(
        "dbsize",
        1,
        READONLY | FAST,
        NOKEYS,
        "server",
        "Returns the number of keys in the database.",
        server::dbsize
    ),
    cmd!(
        "flushdb",
        -1,
        WRITE,
        NOKEYS,
        "server",
        "Removes all keys from the current database.",
        server::flushdb
    ),
    cmd!(
        "flushall",
        -1,
        WRITE,
        NOKEYS,
        "server",
        "Removes all keys from all databases.",
        server::flushall
    ),
    cmd!(
        "time",
        1,
        FAST,
        NOKEYS,
        "server",
        "Returns the server time.",
        server::time
    ),
    cmd!(
        "latency",
        -2,
        ADMIN,
        NOKEYS,
        "server",
        "A container for latency diagnostics commands.",
        server::latency
    ),
    cmd!(
        "slowlog",
        -2,
        ADMIN,
        NOKEYS,
        "server",
        "A container for slow log commands.",
        server::slowlog
    ),
    cmd!(
        "role",
        1,
        FAST,
        NOKEYS,
        "server",
        "Returns the replication role.",
        server::role
    ),
    cmd!(
        "lastsave",
        1,
        FAST,
        NOKEYS,
        "server",
        "Returns the unix time of the last sync to disk.",
        server::lastsave
    ),
    cmd!(
        "shutdown",
        -1,
        ADMIN,
        NOKEYS,
        "server",
        "Stops the node gracefully.",
        server::shutdown
    ),
    cmd!(
        "save",
        1,
        ADMIN,
        NOKEYS,
        "server",
        "Syncs the data to disk.",
        server::save
    ),
    cmd!(
        "bgsave",
        -1,
        ADMIN,
        NOKEYS,
        "server",
        "Syncs the data to disk.",
        server::save
    ),
    cmd!(
        "wait",
        3,
        0,
        NOKEYS,
        "generic",
        "Waits for other regions to apply this connection's last write.",
        server::wait
    ),
    cmd!(
        "meridian",
        -2,
        ADMIN,
        NOKEYS,
        "server",
        "Meridian-specific commands (regions, Raft, digest).",
        meridian::meridian
    ),
    // keys
    cmd!(
        "type",
        2,
        READONLY | FAST,
        KEY1,
        "generic",
        "Determines the type of value stored at a key.",
        keys::type_
    ),
    cmd!(
        "exists",
        -2,
        READONLY | FAST,
        KEYS_ALL,
        "generic",
        "Determines whether one or more keys exist.",
        keys::exists
    ),
    cmd!(
        "touch",
        -2,
        READONLY | FAST,
        KEYS_ALL,
        "generic",
        "Returns the number of existing keys out of those specified.",
        keys::exists
    ),
    cmd!(
        "del",
        -2,
        WRITE,
        KEYS_ALL,
        "generic",
        "Deletes one or more keys.",
        keys::del
    ),
    cmd!(
        "unlink",
        -2,
        WRITE | FAST,
        KEYS_ALL,
        "generic",
        "Deletes one or more keys.",
        keys::del
    ),
    cmd!(
        "keys",
        2,
        READONLY,
        NOKEYS,
        "generic",
        "Returns all key names that match a pattern.",
        keys::keys
    ),
    cmd!(
        "scan",
        -2,
        READONLY,
        NOKEYS,
        "generic",
        "Iterates over the key names in the database.",
        keys::scan
    ),
    cmd!(
        "randomkey",
        1,
        READONLY,
        NOKEYS,
        "generic",
        "Returns a random key name from the database.",
        keys::randomkey
    ),
    cmd!(
        "rename",
        3,
        WRITE,
        (1, 2, 1),
        "generic",
        "Renames a key and overwrites the destination.",
        keys::rename
    ),
    cmd!(
        "renamenx",
        3,
        WRITE | FAST,
        (1, 2, 1),
        "generic",
        "Renames a key only when the target key name doesn't exist.",
        keys::renamenx
    ),
    cmd!(
        "copy",
        -3,
        WRITE,
        (1, 2, 1),
        "generic",
        "Copies the value of a key to a new key.",
        keys::copy
    ),
    cmd!(
        "object",
        -2,
        READONLY,
        (2, 2, 1),
        "generic",
        "A container for object introspection commands.",
        introspect::object
    ),
    cmd!(
        "memory",
        -2,
        READONLY,
        (2, 2, 1),
        "server",
        "A container for memory diagnostics commands.",
        introspect::memory
    ),
    cmd!(
        "move",
        3,
        WRITE | FAST,
        KEY1,
        "generic",
        "Moves a key to another database.",
        keys::move_
    ),
    // expiry
    cmd!(
        "expire",
        -3,
        WRITE | FAST,
        KEY1,
        "generic",
        "Sets the expiration time of a key in seconds.",
        expire::expire
    ),
    cmd!(
        "pexpire",
        -3,
        WRITE | FAST,
        KEY1,
        "generic",
        "Sets the expiration time of a key in milliseconds.",
        expire::pexpire
    ),
    cmd!(
        "expireat",
        -3,
        WRITE | FAST,
        KEY1,
        "generic",
        "Sets the expiration time of a key to a Unix timestamp.",
        expire::expireat
    ),
    cmd!(
        "pexpireat",
        -3,
        WRITE | FAST,
        KEY1,
        "generic",
        "Sets the expiration time of a key to a Unix milliseconds timestamp.",
        expire::pexpireat
    ),
    cmd!(
        "ttl",
        2,
        READONLY | FAST,
        KEY1,
        "generic",
        "Returns the expiration time in seconds of a key.",
        expire::ttl
    ),
    cmd!(
        "pttl",
        2,
        READONLY | FAST,
        KEY1,
        "generic",
        "Returns the expiration time in milliseconds of a key.",
        expire::pttl
    ),
    cmd!(
        "expiretime",
        2,
        READONLY | FAST,
        KEY1,
        "generic",
        "Returns the expiration time of a key as a Unix timestamp.",
        expire::expiretime
    ),
    cmd!(
        "pexpiretime",
        2,
        READONLY | FAST,
        KEY1,
        "generic",
        "Returns the expiration time of a key as a Unix milliseconds timestamp.",
        expire::pexpiretime
    ),
    cmd!(
        "persist",
        2,
        WRITE | FAST,
        KEY1,
        "generic",
        "Removes the expiration time of a key.",
        expire::persist
    ),
    // strings
    cmd!(
        "get",
        2,
        READONLY | FAST,
        KEY1,
        "string",
        "Returns the string value of a key.",
        string::get
    ),
    cmd!(
        "set",
        -3,
        WRITE,
        KEY1,
        "string",
        "Sets the string value of a key, ignoring its type.",
        string::set
    ),
    cmd!(
        "setnx",
        3,
        WRITE | FAST,
        KEY1,
        "string",
        "Set the string value of a key only when the key doesn't exist.",
        string::setnx
    ),
    cmd!(
        "setex",
        4,
        WRITE,
        KEY1,
        "string",
        "Sets the string value and expiration time of a key.",
        string::setex
    ),
    cmd!(
        "psetex",
        4,
        WRITE,
        KEY1,
        "string",
        "Sets both string value and expiration time in milliseconds of a key.",
        string::psetex
    ),
    cmd!(
        "getset",
        3,
        WRITE | FAST,
        KEY1,
        "string",
        "Returns the previous string value of a key after setting it to a new value.",
        string::getset
    ),
    cmd!(
        "getdel",
        2,
        WRITE | FAST,
        KEY1,
        "string",
        "Returns the string value of a key after deleting the key.",
        string::getdel
    ),
    cmd!(
        "getex",
        -2,
        WRITE | FAST,
        KEY1,
        "string",
        "Returns the string value of a key after setting its expiration time.",
        string::getex
    ),
    cmd!(
        "mget",
        -2,
        READONLY | FAST,
        KEYS_ALL,
        "string",
        "Atomically returns the string values of one or more keys.",
        string::mget
    ),
    cmd!(
        "mset",
        -3,
        WRITE,
        (1, -1, 2),
        "string",
        "Atomically creates or modifies the string values of one or more keys.",
        string::mset
    ),
    cmd!(
        "msetnx",
        -3,
        WRITE,
        (1, -1, 2),
        "string",
        "Atomically modifies the string values of one or more keys only when all keys don't exist.",
        string::msetnx
    ),
    cmd!(
        "append",
        3,
        WRITE | FAST,
        KEY1,
        "string",
        "Appends a string to the value of a key. Creates the key if it doesn't exist.",
        string::append
    ),
    cmd!(
        "strlen",
        2,
        READONLY | FAST,
        KEY1,
        "string",
        "Returns the length of a string value.",
        string::strlen
    ),
    cmd!(
        "getrange",
        4,
        READONLY,
        KEY1,
        "string",
        "Returns a substring of the string stored at a key.",
        string::getrange
    ),
    cmd!(
        "substr",
        4,
        READONLY,
        KEY1,
        "string",
        "Returns a substring from a string value.",
        string::getrange
    ),
    cmd!(
        "lcs",
        -3,
        READONLY,
        (1, 2, 1),
        "string",
        "Finds the longest common substring.",
        lcs::lcs
    ),
    cmd!(
        "getbit",
        3,
        READONLY | FAST,
        KEY1,
        "bitmap",
        "Returns a bit value by offset.",
        bits::getbit
    ),
    cmd!(
        "setbit",
        4,
        WRITE,
        KEY1,
        "bitmap",
        "Sets or clears the bit at offset of the string value. Creates the key if it doesn't exist.",
        bits::setbit
    ),
    cmd!(
        "bitcount",
        -2,
        READONLY,
        KEY1,
        "bitmap",
        "Counts the number of set bits (population counting) in a string.",
        bits::bitcount
    ),
    cmd!(
        "bitpos",
        -3,
        READONLY,
        KEY1,
        "bitmap",
        "Finds the first set (1) or clear (0) bit in a string.",
        bits::bitpos
    ),
    cmd!(
        "bitop",
        -4,
        WRITE,
        (2, -1, 1),
        "bitmap",
        "Performs bitwise operations on multiple strings, and stores the result.",
        bits::bitop
    ),
    cmd!(
        "bitfield",
        -2,
        WRITE,
        KEY1,
        "bitmap",
        "Performs arbitrary bitfield integer operations on strings.",
        bits::bitfield
    ),
    cmd!(
        "bitfield_ro",
        -2,
        READONLY | FAST,
        KEY1,
        "bitmap",
        "Performs arbitrary read-only bitfield integer operations on strings.",
        bits::bitfield_ro
    ),
    cmd!(
        "setrange",
        4,
        WRITE,
        KEY1,
        "string",
        "Overwrites a part of a string value with another by an offset.",
        string::setrange
    ),
    cmd!(
        "incr",
        2,
        WRITE | FAST,
        KEY1,
        "string",
        "Increments the integer value of a key by one.",
        string::incr
    ),
    cmd!(
        "decr",
        2,
        WRITE | FAST,
        KEY1,
        "string",
        "Decrements the integer value of a key by one.",
        string::decr
    ),
    cmd!(
        "incrby",
        3,
        WRITE | FAST,
        KEY1,
        "string",
        "Increments the integer value of a key by a number.",
        string::incrby
    ),
    cmd!(
        "decrby",
        3,
        WRITE | FAST,
        KEY1,
        "string",
        "Decrements a number from the integer value of a key.",
        string::decrby
    ),
    cmd!(
        "incrbyfloat",
        3,
        WRITE | FAST,
        KEY1,
        "string",
        "Increment the floating point value of a key by a number.",
        string::incrbyfloat
    ),
];

/// Looks a command up by name, case-insensitively, without allocating.
pub fn lookup(name: &[u8]) -> Option<&'static CommandSpec> {
    // ahash: SipHash was about 2 % of a GET's CPU time under load.
    static INDEX: OnceLock<HashMap<&'static [u8], usize, ahash::RandomState>> = OnceLock::new();
    let index = INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .enumerate()
            .map(|(i, c)| (c.name.as_bytes(), i))
            .collect()
    });
    let mut buf = [0u8; 16];
    if name.len() > buf.len() {
        return None;
    }
    for (d, s) in buf.iter_mut().zip(name) {
        *d = s.to_ascii_lowercase();
    }
    index.get(&buf[..name.len()]).map(|&i| &COMMANDS[i])
}

/// The index of a command in [`COMMANDS`] (for per-command statistics).
pub fn index_of(spec: &'static CommandSpec) -> usize {
    let offset = (spec as *const CommandSpec as usize).wrapping_sub(COMMANDS.as_ptr() as usize);
    offset / std::mem::size_of::<CommandSpec>()
}

/// Checks the arity of a request against its command's row.
pub fn check_arity(spec: &CommandSpec, argc: usize) -> Result<(), RespError> {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(spec.arity);
    if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return Err(RespError::arity(spec.name));
    }
    Ok(())
}

/// A container's subcommands: (name, arity).
type Subcommands = &'static [(&'static str, i32)];

/// The subcommands of the container commands Meridian implements, with Redis's arity (7.0;
/// 7.2 for CLIENT SETINFO and NO-TOUCH)
/// (counting the container and the subcommand; negative: at least). Checked before a
/// container runs and when it is queued in MULTI (Redis refuses a bad one at queue time).
const SUBCOMMANDS: &[(&str, Subcommands)] = &[
    (
        "client",
        &[
            ("id", 2),
            ("setname", 3),
            ("getname", 2),
            ("list", -2),
            ("info", 2),
            ("setinfo", 4),
            ("no-evict", 3),
            ("no-touch", 3),
            ("reply", 3),
            ("kill", -3),
            ("pause", -3),
            ("unpause", 2),
            ("tracking", -3),
            ("caching", 3),
            ("getredir", 2),
            ("trackinginfo", 2),
            ("help", 2),
        ],
    ),
    (
        "config",
        &[
            ("get", -3),
            ("set", -4),
            ("resetstat", 2),
            ("rewrite", 2),
            ("help", 2),
        ],
    ),
    (
        "command",
        &[
            ("count", 2),
            ("info", -2),
            ("docs", -2),
            ("list", -2),
            ("getkeys", -4),
            ("help", 2),
        ],
    ),
    (
        "object",
        &[
            ("encoding", 3),
            ("refcount", 3),
            ("idletime", 3),
            ("freq", 3),
            ("help", 2),
        ],
    ),
    ("memory", &[("usage", -3), ("help", 2)]),
    (
        "slowlog",
        &[("get", -2), ("len", 2), ("reset", 2), ("help", 2)],
    ),
    (
        "pubsub",
        &[("channels", -2), ("numsub", -2), ("numpat", 2), ("help", 2)],
    ),
    (
        "latency",
        &[
            ("latest", 2),
            ("history", 3),
            ("reset", -2),
            ("doctor", 2),
            ("graph", 3),
            ("histogram", -2),
            ("help", 2),
        ],
    ),
];

/// Checks a container command's subcommand (`sub`: the request's second argument; `argc`: its
/// arguments, name included): Redis's unknown-subcommand and `'container|sub'` arity errors.
/// Other commands pass.
pub fn check_subcommand(
    spec: &'static CommandSpec,
    sub: Option<&Bytes>,
    argc: usize,
) -> Result<(), RespError> {
    static BY_INDEX: OnceLock<Vec<Option<Subcommands>>> = OnceLock::new();
    let table = BY_INDEX.get_or_init(|| {
        COMMANDS
            .iter()
            .map(|c| {
                SUBCOMMANDS
                    .iter()
                    .find(|(name, _)| *name == c.name)
                    .map(|(_, subs)| *subs)
            })
            .collect()
    });
    let Some(subs) = table.get(index_of(spec)).copied().flatten() else {
        return Ok(());
    };
    // COMMAND alone lists every command.
    let Some(sub) = sub else {
        return Ok(());
    };
    let Some((name, arity)) = subs
        .iter()
        .find(|(name, _)| sub.eq_ignore_ascii_case(name.as_bytes()))
    else {
        return Err(RespError::unknown_subcommand(
            &spec.name.to_ascii_uppercase(),
            sub,
        ));
    };
    let (argc, arity) = (argc as i64, i64::from(*arity));
    if (arity > 0 && argc != arity) || (arity < 0 && argc < -arity) {
        return Err(RespError::arity(&format!("{}|{name}", spec.name)));
    }
    Ok(())
}

/// The reply of a `<COMMAND> HELP` subcommand: one status line per entry.
pub fn help_reply(lines: &[&'static str]) -> Reply {
    Reply::Array(
        lines
            .iter()
            .map(|l| Reply::Status(Bytes::from_static(l.as_bytes())))
            .collect(),
    )
}

/// A command's arguments with its secrets replaced by `(redacted)`, for MONITOR and SLOWLOG:
/// AUTH's, HELLO's AUTH username and password, and the value of CONFIG SET requirepass.
pub fn redact(mut argv: Vec<Bytes>) -> Vec<Bytes> {
    let redacted = || Bytes::from_static(b"(redacted)");
    let name = argv
        .first()
        .map(|n| n.to_ascii_lowercase())
        .unwrap_or_default();
    match name.as_slice() {
        b"auth" => argv.iter_mut().skip(1).for_each(|a| *a = redacted()),
        b"hello" => {
            // HELLO [protover [AUTH username password] [SETNAME clientname]], by position.
            let mut i = 2;
            while i < argv.len() {
                if argv[i].eq_ignore_ascii_case(b"auth") {
                    for a in argv.iter_mut().skip(i + 1).take(2) {
                        *a = redacted();
                    }
                    i += 3;
                } else {
                    i += 2; // SETNAME name (or anything else with one value)
                }
            }
        }
        b"config" if argv.get(1).is_some_and(|s| s.eq_ignore_ascii_case(b"set")) => {
            for pair in argv[2..].chunks_mut(2) {
                if pair.len() == 2 && pair[0].eq_ignore_ascii_case(b"requirepass") {
                    pair[1] = redacted();
                }
            }
        }
        _ => {}
    }
    argv
}

/// The unknown-command error, quoting the first arguments like Redis: while the quoted text
/// is under 128 bytes, the next argument, cut to the bytes left of those 128. Redis prints them
/// with `%.*s`, so each (and the name, `%.128s`) also ends at its first NUL byte; other bytes
/// are echoed as sent.
pub fn unknown_command(args: &[Bytes]) -> RespError {
    const QUOTE_MAX: usize = 128;
    let mut quoted = Vec::new();
    for a in args.iter().skip(1) {
        if quoted.len() >= QUOTE_MAX {
            break;
        }
        let room = QUOTE_MAX - quoted.len();
        let a = crate::error::up_to_nul(a);
        quoted.push(b'\'');
        quoted.extend_from_slice(&a[..a.len().min(room)]);
        quoted.extend_from_slice(b"' ");
    }
    RespError::UnknownCommand {
        name: crate::error::echoed(args.first().map_or(&b""[..], |b| &b[..])),
        args: Bytes::from(quoted),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_is_case_insensitive_and_names_are_unique() {
        assert_eq!(lookup(b"GeT").map(|c| c.name), Some("get"));
        assert!(lookup(b"nosuchcommand").is_none());
        let mut names: Vec<_> = COMMANDS.iter().map(|c| c.name).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COMMANDS.len());
    }

    #[test]
    fn secrets_are_redacted_by_position() {
        let argv = |args: &[&str]| {
            args.iter()
                .map(|a| Bytes::from(a.to_string()))
                .collect::<Vec<_>>()
        };
        assert_eq!(
            redact(argv(&["AUTH", "u", "p"])),
            argv(&["AUTH", "(redacted)", "(redacted)"])
        );
        assert_eq!(
            redact(argv(&[
                "HELLO", "3", "SETNAME", "auth", "AUTH", "user", "pass"
            ])),
            argv(&[
                "HELLO",
                "3",
                "SETNAME",
                "auth",
                "AUTH",
                "(redacted)",
                "(redacted)"
            ])
        );
        assert_eq!(
            redact(argv(&[
                "config",
                "set",
                "maxclients",
                "5",
                "requirepass",
                "pw"
            ])),
            argv(&[
                "config",
                "set",
                "maxclients",
                "5",
                "requirepass",
                "(redacted)"
            ])
        );
        assert_eq!(redact(argv(&["GET", "auth"])), argv(&["GET", "auth"]));
    }

    #[test]
    fn arity() {
        let get = lookup(b"get").unwrap();
        assert!(check_arity(get, 2).is_ok());
        assert_eq!(
            check_arity(get, 3).unwrap_err().to_string(),
            "ERR wrong number of arguments for 'get' command"
        );
        let set = lookup(b"set").unwrap();
        assert!(check_arity(set, 5).is_ok());
        assert!(check_arity(set, 2).is_err());
    }
}
