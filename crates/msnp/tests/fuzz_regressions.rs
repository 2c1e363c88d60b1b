//! Replays saved fuzz inputs through the same checks as the `decode` fuzz target.
//!
//! To keep a crash as a regression test: copy the artifact (after `cargo fuzz tmin`) into
//! `tests/fuzz_artifacts/decode/` under a name that says what it caught, fix the bug,
//! and `replay_saved_inputs` runs it from then on. See docs/FUZZING.md.
//!
//! Saved so far:
//! - `split-overlong-line-drops-next-line`: setup byte 0x0a (client to server, 17-byte
//!   chunks, dialect 3), then 49 bytes without a line end (`max_line` + 1), `\n`,
//!   `99 \n`. Fed a byte at a time: `LineTooLong`, then `BadVerb` for `99`. Fed 17 bytes
//!   at a time, the `\n` arrived in the same read as the 50th byte, past the
//!   `max_line + 2` window: before db71200 `decode` rejected the line and cleared the
//!   whole buffer, `\n` included, and `DiscardLine` then swallowed `99 \n` as the long
//!   line's tail.

mod fuzz_support;

use std::path::Path;

fn saved_inputs() -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz_artifacts/decode");
    let mut inputs: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|entry| {
            let path = entry.expect("directory entry").path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&path).expect("readable artifact"))
        })
        .collect();
    inputs.sort();
    inputs
}

/// Every saved input passes the fuzz target's checks.
#[test]
fn replay_saved_inputs() {
    let inputs = saved_inputs();
    assert!(!inputs.is_empty());
    for (name, data) in inputs {
        eprintln!("replaying {name} ({} bytes)", data.len());
        fuzz_support::check_decode(&data);
    }
}
