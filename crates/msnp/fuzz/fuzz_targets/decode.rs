//! Fuzz the MSNP framing codec and the typed command parsers.
//!
//! The checks live in `crates/msnp/tests/fuzz_support/mod.rs`, shared with the
//! regression tests that replay saved inputs (`tests/fuzz_regressions.rs`); that file
//! also documents the input layout.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "../../tests/fuzz_support/mod.rs"]
mod fuzz_support;

fuzz_target!(|data: &[u8]| fuzz_support::check_decode(data));
