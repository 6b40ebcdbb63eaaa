//! What the tests share: `spawn_app` and its `TestApp` (in `app`) and the calls most
//! tests make (in `calls`), both re-exported here; the PostgreSQL fixtures
//! (`postgres`, `cluster`); direct database access (`storage`, `locks`); `/metrics`
//! (`metrics`); waiting for an observable state (`wait`); a raw HTTP/2 client
//! (`raw`); the table of every RPC (`requests`); ImportContacts streams (`imports`);
//! and the outside tools some tests drive (`tools`); PgBouncer in front of the test
//! PostgreSQL (`pgbouncer`).

mod app;
mod calls;
pub mod cluster;
pub mod imports;
pub mod locks;
pub mod metrics;
pub mod nginx;
pub mod pgbouncer;
pub mod postgres;
pub mod raw;
pub mod replica;
pub mod replica_reads;
pub mod requests;
pub mod standby;
pub mod storage;
pub mod tools;
pub mod wait;

pub use app::*;
pub use calls::*;
