//! Decoding byte strings as slices of the buffer a request arrived in, instead of copies.
//!
//! A follower decodes every AppendEntries into ops, and copying each SET's key and value out
//! of the request (an allocation and a copy each, then a shared count allocated on the
//! value's first clone) was about 5 % of a follower's Raft thread at SET -P16. Inside
//! [`with_frame`], the fields marked `#[serde(deserialize_with =
//! "crate::shared_bytes::deserialize")]` become slices of that buffer (one reference count
//! shared by all). The ops then keep the buffer alive as long as any of them lives, as the
//! leader's ops keep the buffers its connections read them into: on a follower, the log's
//! recent entries (4 MiB, counted by their serialized size) can so hold one AppendEntries more
//! than they count, at most 1 MiB (`MAX_APPEND_BYTES`) or one larger entry, whose copy they
//! held before anyway. Outside [`with_frame`], or for bytes that are not in its buffer, they
//! are copied as before.

use std::cell::RefCell;
use std::fmt;

use bytes::Bytes;
use serde::de::{Deserializer, Error, SeqAccess, Visitor};

thread_local! {
    /// The buffer being decoded on this thread, set by [`with_frame`].
    static FRAME: RefCell<Option<Bytes>> = const { RefCell::new(None) };
}

/// Runs `decode` (a deserialisation of `frame`'s contents) with `frame` as the buffer marked
/// fields share.
pub fn with_frame<R>(frame: &Bytes, decode: impl FnOnce() -> R) -> R {
    /// Puts back the buffer of an enclosing [`with_frame`], also on a panic.
    struct Restore(Option<Bytes>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let outer = self.0.take();
            FRAME.with(|f| *f.borrow_mut() = outer);
        }
    }
    let _restore = Restore(FRAME.with(|f| f.borrow_mut().replace(frame.clone())));
    decode()
}

/// A `deserialize_with` for `Bytes` fields: a slice of [`with_frame`]'s buffer where the
/// format lends the bytes out of it, a copy otherwise.
pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<Bytes, D::Error> {
    deserializer.deserialize_bytes(SharedBytes)
}

/// The visitor of [`deserialize`].
struct SharedBytes;

impl<'de> Visitor<'de> for SharedBytes {
    type Value = Bytes;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a byte string")
    }

    fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Bytes, E> {
        Ok(FRAME.with(|f| match f.borrow().as_ref() {
            Some(frame) if holds(frame, v) => frame.slice_ref(v),
            _ => Bytes::copy_from_slice(v),
        }))
    }

    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Bytes, E> {
        Ok(Bytes::copy_from_slice(v))
    }

    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Bytes, E> {
        Ok(Bytes::from(v))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Bytes, A::Error> {
        let mut out = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(4096));
        while let Some(b) = seq.next_element::<u8>()? {
            out.push(b);
        }
        Ok(Bytes::from(out))
    }
}

/// Whether `part` lies inside `frame`'s bytes (what `Bytes::slice_ref` requires).
fn holds(frame: &Bytes, part: &[u8]) -> bool {
    let start = frame.as_ptr() as usize;
    let p = part.as_ptr() as usize;
    !part.is_empty() && p >= start && p + part.len() <= start + frame.len()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Pair {
        #[serde(deserialize_with = "deserialize")]
        key: Bytes,
        #[serde(deserialize_with = "deserialize")]
        value: Bytes,
    }

    fn pair() -> Pair {
        Pair {
            key: Bytes::from_static(b"key"),
            value: Bytes::from(vec![7u8; 100]),
        }
    }

    #[test]
    fn fields_share_the_frame_they_were_decoded_from() {
        let frame = Bytes::from(bincode::serialize(&pair()).unwrap());
        let back: Pair = with_frame(&frame, || bincode::deserialize(&frame)).unwrap();
        assert_eq!(back, pair());
        assert!(holds(&frame, &back.key) && holds(&frame, &back.value));
        // Nothing is left behind for the next decode on this thread.
        let copied: Pair = bincode::deserialize(&frame).unwrap();
        assert_eq!(copied, pair());
        assert!(!holds(&frame, &copied.value));
    }

    #[test]
    fn bytes_from_elsewhere_are_copied() {
        let frame = Bytes::from_static(b"unrelated");
        let other = bincode::serialize(&pair()).unwrap();
        let back: Pair = with_frame(&frame, || bincode::deserialize(&other)).unwrap();
        assert_eq!(back, pair());
        assert!(!holds(&frame, &back.value));
    }

    #[test]
    fn owned_formats_still_decode() {
        let json = serde_json::to_vec(&pair()).unwrap();
        let back: Pair = serde_json::from_slice(&json).unwrap();
        assert_eq!(back, pair());
    }
}
