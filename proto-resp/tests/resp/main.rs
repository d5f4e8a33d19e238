//! proto-resp's test suite: one binary (link time), one module per area.

mod decode_cases;
mod encode_cases;
mod props;
mod support;
