//! Keyspace notifications (`notify-keyspace-events`, as in Redis 7.0): Pub/Sub messages on
//! `__keyspace@<db>__:<key>` (the event's name) and `__keyevent@<db>__:<event>` (the key) for
//! the changes an applied batch made.
//!
//! Every node applies every batch of its region, so each node notifies its own subscribers
//! when it applies one; nothing is sent between nodes. A write merged from another region
//! raises `set` (a new value) or `del` (the key gone). The classes Meridian raises are generic
//! (`g`: del, expire, persist, rename_from/to, copy_to, move_from/to), string (`$`: set,
//! setrange, incrby, incrbyfloat, append, setbit) and expired (`x`). The other classes are
//! accepted, as Redis accepts them, and never fire: there are no other types, keys are never
//! evicted (the hot cache only drops its copy), and key misses are not reported.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};

use bytes::{BufMut, Bytes, BytesMut};

use crate::pubsub::PubSub;

/// Generic commands (`g`).
pub const GENERIC: u32 = 1 << 0;
/// String commands (`$`).
pub const STRING: u32 = 1 << 1;
const LIST: u32 = 1 << 2;
const SET: u32 = 1 << 3;
const HASH: u32 = 1 << 4;
const ZSET: u32 = 1 << 5;
/// Expired keys (`x`).
pub const EXPIRED: u32 = 1 << 6;
const EVICTED: u32 = 1 << 7;
const STREAM: u32 = 1 << 8;
const MODULE: u32 = 1 << 9;
const NEW: u32 = 1 << 10;
const KEYSPACE: u32 = 1 << 11;
const KEYEVENT: u32 = 1 << 12;
const KEY_MISS: u32 = 1 << 13;
/// `A`: every class but new keys and key misses.
const ALL: u32 = GENERIC | STRING | LIST | SET | HASH | ZSET | EXPIRED | EVICTED | STREAM | MODULE;

/// Class letters in the order Redis prints them.
const CLASSES: [(u32, char); 11] = [
    (GENERIC, 'g'),
    (STRING, '$'),
    (LIST, 'l'),
    (SET, 's'),
    (HASH, 'h'),
    (ZSET, 'z'),
    (EXPIRED, 'x'),
    (EVICTED, 'e'),
    (STREAM, 't'),
    (MODULE, 'd'),
    (NEW, 'n'),
];

/// Parses a `notify-keyspace-events` value; `None` for a character Redis refuses.
pub fn parse_flags(text: &str) -> Option<u32> {
    let mut flags = 0;
    for c in text.chars() {
        flags |= match c {
            'A' => ALL,
            'K' => KEYSPACE,
            'E' => KEYEVENT,
            'm' => KEY_MISS,
            c => CLASSES.iter().find(|(_, l)| *l == c)?.0,
        };
    }
    Some(flags)
}

/// The value CONFIG GET shows for `flags` (Redis's normal form).
pub fn flags_to_string(flags: u32) -> String {
    let mut out = String::new();
    if flags & ALL == ALL {
        out.push('A');
    } else {
        out.extend(
            CLASSES
                .iter()
                .filter(|(bit, _)| flags & bit != 0)
                .map(|(_, l)| *l),
        );
    }
    for (bit, letter) in [(KEYSPACE, 'K'), (KEYEVENT, 'E'), (KEY_MISS, 'm')] {
        if flags & bit != 0 {
            out.push(letter);
        }
    }
    out
}

/// One change to notify: the key, its class and the event's name.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// Database.
    pub db: u8,
    /// Key.
    pub key: Bytes,
    /// Class bit ([`GENERIC`], [`STRING`], [`EXPIRED`]).
    pub class: u32,
    /// Event name (`set`, `del`, `expired` …).
    pub name: &'static str,
}

/// The configured classes and where to publish.
#[derive(Default)]
pub struct Notifier {
    flags: AtomicU32,
    pubsub: OnceLock<Arc<PubSub>>,
}

impl Notifier {
    /// Publishes to `pubsub` from now on (set once at start).
    pub fn attach(&self, pubsub: Arc<PubSub>) {
        let _ = self.pubsub.set(pubsub);
    }

    /// Sets the `notify-keyspace-events` flags.
    pub fn set_flags(&self, flags: u32) {
        self.flags.store(flags, Ordering::Relaxed);
    }

    /// The `notify-keyspace-events` flags.
    pub fn flags(&self) -> u32 {
        self.flags.load(Ordering::Relaxed)
    }

    /// Whether a batch should collect events (a channel kind and a class are on).
    pub fn enabled(&self) -> bool {
        let flags = self.flags();
        flags & (KEYSPACE | KEYEVENT) != 0 && flags & (GENERIC | STRING | EXPIRED) != 0
    }

    /// Publishes the events of a committed batch to this node's subscribers.
    pub fn publish(&self, events: &[Event]) {
        let Some(pubsub) = self.pubsub.get() else {
            return;
        };
        let flags = self.flags();
        for event in events.iter().filter(|e| flags & e.class != 0) {
            let name = Bytes::from_static(event.name.as_bytes());
            if flags & KEYSPACE != 0 {
                let channel = channel("__keyspace@", event.db, &event.key);
                pubsub.publish(&channel, &name);
            }
            if flags & KEYEVENT != 0 {
                let channel = channel("__keyevent@", event.db, event.name.as_bytes());
                pubsub.publish(&channel, &event.key);
            }
        }
    }
}

/// `<prefix><db>__:<suffix>`.
fn channel(prefix: &str, db: u8, suffix: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(prefix.len() + 6 + suffix.len());
    out.put_slice(prefix.as_bytes());
    out.put_slice(db.to_string().as_bytes());
    out.put_slice(b"__:");
    out.put_slice(suffix);
    out.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_print_as_redis_prints_them() {
        for (given, shown) in [
            ("KEA", "AKE"),
            ("Ex", "xE"),
            ("d$g", "g$d"),
            ("etxzhsl$g", "g$lshzxet"),
            ("nK", "nK"),
            ("AKEmn", "AKEm"),
            ("", ""),
        ] {
            assert_eq!(
                flags_to_string(parse_flags(given).unwrap()),
                shown,
                "{given}"
            );
        }
        assert_eq!(parse_flags("Q"), None);
    }

    #[test]
    fn events_go_to_keyspace_and_keyevent_channels() {
        let pubsub = Arc::new(PubSub::default());
        let notifier = Notifier::default();
        notifier.attach(pubsub.clone());
        notifier.set_flags(parse_flags("KEA").unwrap());
        assert!(notifier.enabled());
        let mut sub = crate::pubsub::Subscription::new(1, Default::default());
        pubsub.subscribe(&mut sub, Bytes::from("__key*__:*"), true);
        notifier.publish(&[Event {
            db: 3,
            key: Bytes::from("k"),
            class: STRING,
            name: "set",
        }]);
        let a = sub.try_next().unwrap();
        assert_eq!(
            (&a.channel[..], &a.payload[..]),
            (&b"__keyspace@3__:k"[..], &b"set"[..])
        );
        let b = sub.try_next().unwrap();
        assert_eq!(
            (&b.channel[..], &b.payload[..]),
            (&b"__keyevent@3__:set"[..], &b"k"[..])
        );
        notifier.set_flags(parse_flags("Kg").unwrap());
        notifier.publish(&[Event {
            db: 0,
            key: Bytes::from("k"),
            class: STRING,
            name: "set",
        }]);
        assert!(sub.try_next().is_none(), "class not selected");
    }
}
