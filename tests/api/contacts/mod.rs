//! ContactsService: create, read, update and delete; lists, search and the timeline;
//! validation errors; tenants and their isolation; concurrent callers; the Rust client.

mod batch_get;
mod client;
mod concurrency;
mod crud;
mod errors;
mod etags;
mod filter_calls;
mod filter_indexes;
mod filter_orders;
mod filter_props;
mod filter_refusals;
mod filters;
mod import;
mod import_gin;
mod import_scale;
mod import_search;
mod isolation;
mod list;
mod lookups;
mod reasons;
mod request_ids;
mod search_paths;
mod tenancy;
mod timeline;
mod upsert;
mod watch;
