//! Client-facing errors: every failure a command can hit ends up as one [`RespError`], which
//! alone decides the wire text (Redis's exact wording where Redis has the same error).

use bytes::Bytes;
use proto_resp::Reply;

use crate::keyspace::StorageError;
use crate::op::OpError;
use crate::write::WriteError;

/// An error answered to the client as a RESP error reply; the connection carries on.
#[derive(Debug, thiserror::Error)]
pub enum RespError {
    /// `-WRONGTYPE`.
    #[error("WRONGTYPE Operation against a key holding the wrong kind of value")]
    WrongType,
    /// Generic syntax error.
    #[error("ERR syntax error")]
    Syntax,
    /// An argument that must be an integer is not one.
    #[error("ERR value is not an integer or out of range")]
    NotInteger,
    /// An argument that must be a float is not one.
    #[error("ERR value is not a valid float")]
    NotFloat,
    /// Integer overflow in INCR and friends.
    #[error("ERR increment or decrement would overflow")]
    Overflow,
    /// INCRBYFLOAT producing NaN or infinity.
    #[error("ERR increment would produce NaN or Infinity")]
    NanOrInfinity,
    /// Wrong number of arguments.
    #[error("ERR wrong number of arguments for '{cmd}' command")]
    WrongArity {
        /// The command name, lower case as Redis prints it.
        cmd: String,
    },
    /// Unknown command.
    #[error("{}", String::from_utf8_lossy(&unknown_command_text(.name, .args)))]
    UnknownCommand {
        /// The name as sent (its bytes are echoed as they are: see [`RespError::to_reply`]).
        name: Bytes,
        /// The first arguments, quoted like Redis does.
        args: Bytes,
    },
    /// Unknown subcommand of a container command.
    #[error("{}", String::from_utf8_lossy(&unknown_subcommand_text(.cmd, .sub)))]
    UnknownSubcommand {
        /// The container command, upper case.
        cmd: String,
        /// The subcommand as echoed (bytes as sent: see [`RespError::to_reply`]).
        sub: Bytes,
    },
    /// A known subcommand with arguments its handler refuses (Redis's
    /// `addReplySubcommandSyntaxError`).
    #[error("{}", String::from_utf8_lossy(&subcommand_syntax_text(.cmd, .sub)))]
    SubcommandSyntax {
        /// The container command, upper case.
        cmd: String,
        /// The subcommand as echoed (bytes as sent: see [`RespError::to_reply`]).
        sub: Bytes,
    },
    /// `-NOAUTH`.
    #[error("NOAUTH Authentication required.")]
    NoAuth,
    /// `-WRONGPASS`.
    #[error("WRONGPASS invalid username-password pair or user is disabled.")]
    WrongPass,
    /// AUTH sent while no password is configured.
    #[error("ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?")]
    AuthNotConfigured,
    /// Missing key where the command needs one.
    #[error("ERR no such key")]
    NoSuchKey,
    /// SELECT out of range.
    #[error("ERR DB index is out of range")]
    DbIndexOutOfRange,
    /// Invalid expire time.
    #[error("ERR invalid expire time in '{cmd}' command")]
    InvalidExpire {
        /// Lower-case command name.
        cmd: String,
    },
    /// An offset out of range (SETRANGE).
    #[error("ERR offset is out of range")]
    OffsetOutOfRange,
    /// The resulting string exceeds the configured maximum (512 MB like Redis).
    #[error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")]
    StringTooLong,
    /// Any other `-ERR` text with Redis's wording, chosen by the caller.
    #[error("ERR {0}")]
    Other(&'static str),
    /// An `-ERR` message built at run time.
    #[error("ERR {0}")]
    Message(String),
    /// EXEC of a transaction that had a command refused while queuing.
    #[error("EXECABORT Transaction discarded because of previous errors.")]
    ExecAbort,
    /// EXEC refused inside MULTI (wrong arity): the transaction is discarded, as in Redis.
    #[error("EXECABORT Transaction discarded because of: {0}")]
    ExecAbortBecause(String),
    /// No leader / no quorum / timeout: the cluster cannot take the request right now.
    #[error("CLUSTERDOWN {0}")]
    ClusterDown(String),
    /// A storage failure (disk, corruption): reported, never hidden.
    #[error("ERR internal storage error: {0}")]
    Storage(String),
}

impl RespError {
    /// The wrong-arity error for `cmd`, worded like Redis (lower-case name).
    pub fn arity(cmd: &str) -> RespError {
        RespError::WrongArity {
            cmd: cmd.to_ascii_lowercase(),
        }
    }

    /// Turns the error into the reply frame sent to the client.
    ///
    /// Errors that echo what the client sent carry its bytes as they are, not as UTF-8 (Redis
    /// copies them; the encoder turns CR and LF into spaces, as Redis does).
    pub fn to_reply(&self) -> Reply {
        let text = match self {
            RespError::UnknownCommand { name, args } => unknown_command_text(name, args),
            RespError::UnknownSubcommand { cmd, sub } => unknown_subcommand_text(cmd, sub),
            RespError::SubcommandSyntax { cmd, sub } => subcommand_syntax_text(cmd, sub),
            _ => return Reply::Error(Bytes::from(self.to_string())),
        };
        Reply::Error(Bytes::from(text))
    }
}

/// [`RespError::UnknownCommand`]'s text, with the bytes the client sent.
fn unknown_command_text(name: &[u8], args: &[u8]) -> Vec<u8> {
    [
        b"ERR unknown command '",
        name,
        b"', with args beginning with: ",
        args,
    ]
    .concat()
}

/// [`RespError::UnknownSubcommand`]'s text, with the bytes the client sent.
fn unknown_subcommand_text(cmd: &str, sub: &[u8]) -> Vec<u8> {
    [
        b"ERR unknown subcommand '",
        sub,
        b"'. Try ",
        cmd.as_bytes(),
        b" HELP.",
    ]
    .concat()
}

/// [`RespError::SubcommandSyntax`]'s text, with the bytes the client sent.
fn subcommand_syntax_text(cmd: &str, sub: &[u8]) -> Vec<u8> {
    [
        b"ERR unknown subcommand or wrong number of arguments for '",
        sub,
        b"'. Try ",
        cmd.as_bytes(),
        b" HELP.",
    ]
    .concat()
}

impl RespError {
    /// The unknown-subcommand error of container command `cmd` (upper case), quoting the
    /// subcommand as sent.
    pub fn unknown_subcommand(cmd: &str, sent: &[u8]) -> RespError {
        RespError::UnknownSubcommand {
            cmd: cmd.into(),
            sub: echoed(sent),
        }
    }

    /// Redis's "unknown subcommand or wrong number of arguments" error for `cmd`'s subcommand
    /// `sent` (echoed at most 128 bytes).
    pub fn subcommand_syntax(cmd: &str, sent: &[u8]) -> RespError {
        RespError::SubcommandSyntax {
            cmd: cmd.into(),
            sub: echoed(sent),
        }
    }
}

/// A subcommand or command name as sent, for an error text, as Redis's `%.128s` prints it: at
/// most 128 bytes, up to the first NUL byte.
pub(crate) fn echoed(sent: &[u8]) -> Bytes {
    let c_string = up_to_nul(sent);
    Bytes::copy_from_slice(&c_string[..c_string.len().min(128)])
}

/// `bytes` as C's `%s` prints them: up to the first NUL byte.
pub(crate) fn up_to_nul(bytes: &[u8]) -> &[u8] {
    bytes.split(|&b| b == 0).next().unwrap_or(bytes)
}

impl From<OpError> for RespError {
    fn from(e: OpError) -> Self {
        match e {
            OpError::WrongType => RespError::WrongType,
            OpError::NotInteger => RespError::NotInteger,
            OpError::NotFloat => RespError::NotFloat,
            OpError::Overflow => RespError::Overflow,
            OpError::NanOrInfinity => RespError::NanOrInfinity,
            OpError::NoSuchKey => RespError::NoSuchKey,
            OpError::StringTooLong => RespError::StringTooLong,
            OpError::OffsetOutOfRange => RespError::OffsetOutOfRange,
            OpError::DbIndexOutOfRange => RespError::DbIndexOutOfRange,
            OpError::CorruptState => RespError::Other("corrupt replicated state"),
            OpError::InvalidGetexExpire => RespError::InvalidExpire {
                cmd: "getex".into(),
            },
            OpError::ShippedBatchTooLarge => RespError::Other(
                "write refused: the writes merged into this Raft entry already ship 24 MB of \
                 changes to the other regions; retry it",
            ),
        }
    }
}

impl From<StorageError> for RespError {
    fn from(e: StorageError) -> Self {
        RespError::Storage(e.to_string())
    }
}

impl From<WriteError> for RespError {
    fn from(e: WriteError) -> Self {
        match e {
            WriteError::Storage(s) => RespError::Storage(s.to_string()),
            too_large @ WriteError::TooLarge { .. } => RespError::Message(too_large.to_string()),
            other => RespError::ClusterDown(other.to_string()),
        }
    }
}
