//! Hostile and excessive input: every string field of every RPC, values that are not
//! strings, cursors, undecodable bytes, and the size, stream, deadline and rate limits.

mod admission;
mod arbitrary;
pub mod cursors;
pub mod fields;
mod limits;
mod rate_limit;
mod stream_ends;
mod streams;
pub mod strings;
mod undecodable;
mod values;
