//! ContactsService: create, read, update and delete; lists, search and the timeline;
//! validation errors; tenants and their isolation; concurrent callers; the Rust client.

mod client;
mod concurrency;
pub mod crud;
mod errors;
mod isolation;
pub mod list;
mod lookups;
mod search_paths;
mod tenancy;
pub mod timeline;
