//! Generates the gRPC code from `proto/` at build time.
//!
//! `protox` parses the `.proto` files in pure Rust (no `protoc` needed) and hands the
//! descriptors to `tonic-prost-build`, which writes the messages, client and server into
//! `OUT_DIR`. Nothing generated is committed.

use std::path::PathBuf;

/// The proto files compiled, relative to the proto root.
const PROTOS: &[&str] = &["butterfly/addressbook/v1/addressbook.proto"];

fn main() {
    let manifest = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let root = manifest.join("../../proto");
    println!("cargo:rerun-if-changed={}", root.display());

    let fds = match protox::compile(PROTOS, [&root]) {
        Ok(fds) => fds,
        Err(e) => {
            // protox's Display names the file, line and column.
            eprintln!("error: {e}");
            std::process::exit(1);
        }
    };
    if let Err(e) = tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .compile_fds(fds)
    {
        eprintln!("error: generating gRPC code: {e}");
        std::process::exit(1);
    }
}
