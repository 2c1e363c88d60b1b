//! The MSN Messenger protocol, sans I/O.
//!
//! This crate knows bytes and rules, nothing else: no sockets, no runtime, no database.
//! - [`codec`]: framing for both directions, with hard caps and discard states.
//! - [`command`]: typed client commands; [`reply`]: typed server lines, formatted per dialect.
//! - [`dialect`]: the MSNP2–MSNP18 version table and what changes between versions.
//! - [`auth`]: MD5 login hash, CHL/QRY challenge algorithms, the SSO MBI blob.
//! - [`ml`]: the `<ml>` contact documents of ADL/RML/FQY (MSNP13+).
//! - [`mpop`]: the machine documents of MSNP16+ multiple points of presence.
//! - [`error`]: MSNP numeric error codes.

pub mod auth;
pub mod circle;
pub mod codec;
pub mod command;
pub mod dialect;
pub mod error;
pub mod frame;
pub mod ml;
pub mod mpop;
pub mod oim;
pub mod reply;
pub mod text;
