//! The Meridian node: a Redis-protocol cache whose data lives in RocksDB behind a moka hot
//! cache.
//!
//! A request flows `connection` → `cmd` (table lookup, argument parsing) → reads from the
//! `keyspace`, or writes as an [`op::Op`] through the [`write::Writer`] seam, which applies
//! batches to the keyspace (and, in a region, proposes them to Raft first). `node` starts
//! and stops everything in order.
#![warn(missing_docs)]

pub mod client;
pub mod cmd;
pub mod coalesce;
pub mod config;
pub mod connection;
pub mod cpu;
pub mod direct_reply;
pub mod error;
pub mod keyspace;
pub mod latency;
pub mod listener;
pub mod log_limit;
pub mod metrics;
pub mod node;
pub mod op;
pub mod pubsub;
pub mod raft;
pub mod replication;
pub mod shared_bytes;
pub mod shutdown;
pub mod slowlog;
pub mod stats;
pub mod ticks;
pub mod tracking;
pub mod write;
