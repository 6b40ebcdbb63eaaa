//! What the tests share: `spawn_app` and its `TestApp` (in `app`), the calls most tests
//! make (in `calls`; both re-exported here),
//! the PostgreSQL fixtures, database locks, a raw HTTP/2 client, the table of every
//! RPC, and the outside tools some tests drive.

mod app;
mod calls;
pub mod cluster;
pub mod locks;
pub mod metrics;
pub mod postgres;
pub mod raw;
pub mod requests;
pub mod storage;
pub mod tools;
pub mod wait;

pub use app::*;
pub use calls::*;
