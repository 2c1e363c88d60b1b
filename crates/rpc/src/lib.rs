//! Butterfly's gRPC contracts, and the adapters that put the core ports on them.
//!
//! In distributed mode the NS gateways and switchboard shards keep no database: they
//! read and change accounts and contact lists through the `addressbook` role. The
//! contract between them is `proto/butterfly/addressbook/v1/addressbook.proto`, one RPC
//! per method of the [`Store`](butterfly_core::store::Store) port:
//!
//! - [`serve`] runs the `AddressBook` service over any `Store` (the address-book role
//!   passes its database store), with the standard `grpc.health.v1` health service.
//! - [`RemoteStore`] implements `Store` by calling that service, so the roles use it
//!   exactly like the embedded SQLite store. Every call has a deadline.
//!
//! The Rust types, client and server in [`pb`] are generated at build time from
//! `proto/` (by `build.rs`, with the pure-Rust `protox` compiler: no `protoc` needed);
//! no generated code is committed. Conversions between them and the domain types live
//! in one module and run only at the edge: handlers and client calls convert, nothing
//! else sees a wire type.
//!
//! Trace context crosses the wire as W3C `traceparent` metadata (the client injects the
//! current span's context, the server makes it the parent of the request span); this is
//! a no-op unless the binary installs an OpenTelemetry propagator and layer.
//!
//! The contract carries password hashes: it is for the internal network only.

mod client;
mod convert;
mod server;
mod trace;

pub use client::{RemoteOptions, RemoteStore};
pub use convert::InvalidMessage;
pub use server::{AddressBookService, serve};

/// Code generated from `proto/` at build time.
pub mod pb {
    /// `butterfly.addressbook.*`
    pub mod addressbook {
        /// `butterfly.addressbook.v1`: the address-book contract.
        #[allow(clippy::all, missing_docs, unreachable_pub)]
        pub mod v1 {
            tonic::include_proto!("butterfly.addressbook.v1");
        }
    }
}
