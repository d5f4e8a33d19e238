//! The stored form of a value: a small header (format, type, absolute expiry) and the payload.
//! The same bytes live in RocksDB and in the hot cache, so a cache hit needs no re-encoding.

use bytes::{BufMut, Bytes, BytesMut};

/// Version byte of the value encoding.
const VALUE_FORMAT: u8 = 1;
/// Header length: format, type, expiry (u64 big endian, 0 = none).
pub const HEADER_LEN: usize = 10;

/// The Redis type of a stored value.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ValueType {
    /// A string (also holds integers and floats as text, like Redis).
    String,
}

impl ValueType {
    fn tag(self) -> u8 {
        match self {
            ValueType::String => 0,
        }
    }

    fn from_tag(tag: u8) -> Option<ValueType> {
        match tag {
            0 => Some(ValueType::String),
            _ => None,
        }
    }

    /// The name TYPE prints.
    pub fn name(self) -> &'static str {
        match self {
            ValueType::String => "string",
        }
    }
}

/// An encoded value as stored; cheap to clone (shares the buffer).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StoredValue(Bytes);

impl StoredValue {
    /// Encodes a new value.
    pub fn new(kind: ValueType, expire_at_ms: Option<u64>, payload: &[u8]) -> StoredValue {
        let mut buf = BytesMut::with_capacity(HEADER_LEN + payload.len());
        buf.put_u8(VALUE_FORMAT);
        buf.put_u8(kind.tag());
        buf.put_u64(expire_at_ms.unwrap_or(0));
        buf.put_slice(payload);
        StoredValue(buf.freeze())
    }

    /// Wraps bytes read from storage, checking the header.
    pub fn from_stored(bytes: Bytes) -> Option<StoredValue> {
        if bytes.len() < HEADER_LEN || bytes[0] != VALUE_FORMAT {
            return None;
        }
        ValueType::from_tag(bytes[1])?;
        Some(StoredValue(bytes))
    }

    /// The value's type.
    pub fn kind(&self) -> ValueType {
        // Checked in the constructors.
        ValueType::from_tag(self.0[1]).unwrap_or(ValueType::String)
    }

    /// Absolute expiry in unix ms, if any.
    pub fn expire_at(&self) -> Option<u64> {
        let mut at = [0u8; 8];
        at.copy_from_slice(&self.0[2..HEADER_LEN]);
        match u64::from_be_bytes(at) {
            0 => None,
            ms => Some(ms),
        }
    }

    /// True when the value has expired at `now_ms`.
    pub fn is_expired(&self, now_ms: u64) -> bool {
        self.expire_at().is_some_and(|at| at <= now_ms)
    }

    /// The payload, sharing the buffer.
    pub fn payload(&self) -> Bytes {
        self.0.slice(HEADER_LEN..)
    }

    /// The payload as a slice.
    pub fn payload_ref(&self) -> &[u8] {
        &self.0[HEADER_LEN..]
    }

    /// The same payload with another expiry.
    pub fn with_expire(&self, expire_at_ms: Option<u64>) -> StoredValue {
        StoredValue::new(self.kind(), expire_at_ms, self.payload_ref())
    }

    /// The whole encoding (header + payload).
    pub fn as_bytes(&self) -> &Bytes {
        &self.0
    }

    /// Bytes the value occupies (for the cache weigher and INFO).
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// True for an empty payload.
    pub fn is_empty(&self) -> bool {
        self.0.len() == HEADER_LEN
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let v = StoredValue::new(ValueType::String, Some(42), b"hello");
        let back = StoredValue::from_stored(v.as_bytes().clone()).unwrap();
        assert_eq!(back.expire_at(), Some(42));
        assert_eq!(back.payload_ref(), b"hello");
        assert!(back.is_expired(42));
        assert!(!back.is_expired(41));
        assert_eq!(
            StoredValue::new(ValueType::String, None, b"").expire_at(),
            None
        );
        assert!(StoredValue::from_stored(Bytes::from_static(b"\x09\x00")).is_none());
    }
}
