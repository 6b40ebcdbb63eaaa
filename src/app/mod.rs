//! The use cases: each write of ContactsService and ActivityService as one function
//! over the store's traits. Idempotent replay, auto-creation by email, the order in
//! which rows are locked, and which timeline entries a write leaves are decided here,
//! once for every backend; the pure rules (merges, state machines) are the domain's.
//! Reads need no rules and go to the store directly.

pub mod activity;
pub mod contacts;
pub mod import;
mod requests;
