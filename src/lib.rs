//! cachet: an HTTP caching reverse proxy.
//!
//! Requests come in through [`server`], go down the request path in [`proxy`], are looked up in a
//! [`store::Store`] by keys and rules from [`policy`], and on a miss are fetched once per key
//! ([`coalesce`]) from the [`upstream`]. The store trait is synchronous so that no lock can be
//! held across upstream I/O; see `docs/ARCHITECTURE.md` for the whole picture.
//!
//! The crate is also a library: [`server::start_with`] runs the proxy over a [`store::Store`] of
//! your own (see `examples/custom_store.rs`).

#![deny(clippy::await_holding_lock)]
#![deny(clippy::await_holding_invalid_type)]
#![warn(missing_docs)]

pub mod access_log;
pub mod admin;
pub mod bench;
pub mod body;
pub mod coalesce;
pub mod config;
pub mod metrics;
pub mod origin;
pub mod outcome;
pub mod policy;
pub mod proxy;
pub mod revalidate;
pub mod server;
pub mod shared;
pub mod site;
pub mod store;
pub mod tls;
pub mod units;
pub mod upstream;
