//! What the tests share: `spawn_app` and its `TestApp` (in `app`, re-exported here),
//! the PostgreSQL fixtures, database locks, a raw HTTP/2 client, the table of every
//! RPC, and the outside tools some tests drive.

mod app;
pub mod cluster;
pub mod locks;
pub mod postgres;
pub mod raw;
pub mod requests;
pub mod tools;

pub use app::*;
