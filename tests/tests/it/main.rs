//! Integration tests: real `meridian` processes on loopback ports, driven by the `redis`
//! crate (RESP2 and RESP3), raw sockets, `redis-cli` and `redis-benchmark`.
//!
//! One test binary (one link step); one module per area. Every test starts its own node(s)
//! through `meridian_tests`, so tests run in parallel and leave nothing behind. Expected
//! replies and error strings are Redis 7.0's, checked against redis-server 7.0.15.

mod admin;
mod cluster;
mod compat;
mod expiry;
mod failover;
mod geo;
mod keys;
mod protocol;
mod pubsub;
mod restart;
mod strings;
mod tools;
mod tracking;
mod transaction;
