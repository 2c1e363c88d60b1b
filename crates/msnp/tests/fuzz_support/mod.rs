//! The checks behind the `decode` fuzz target (`crates/msnp/fuzz`), shared with the
//! regression tests in `tests/fuzz_regressions.rs` so that a crash artifact replays
//! exactly as the fuzzer ran it. See docs/FUZZING.md.
//!
//! Input: the first byte picks the setup, the rest is the byte stream.
//! - bit 0: direction (0 = client to server, 1 = server to client);
//! - bits 1-3: chunk size the stream is fed in, from `CHUNKS`;
//! - bits 4-7: dialect 3..=18 (2 reads the payload table like 3 and 4).
//!
//! Checked for every input: no panic; `BadLength` is the only error, after which feeding
//! stops (the server closes the connection); after each `Ok(None)` the decoder holds at
//! most `max(max_line + 1, max_payload - 1)` bytes; each frame keeps to the limits and to
//! the payload table; each frame goes through `NsCommand::parse` and `SbCommand::parse`,
//! whose refusals name the frame's verb and TrID; each frame re-encodes and re-decodes
//! (fresh codec, same setup) to itself, consuming exactly the encoded bytes; and feeding
//! the stream one byte at a time gives the same items and error as the chosen chunk size.

use bytes::BytesMut;
use msnp::codec::{
    DecodeError, Decoded, Direction, Limits, MsnpCodec, PayloadRule, RejectReason, payload_rule,
};
use msnp::command::{NsCommand, SbCommand};
use msnp::frame::{Frame, Verb};
use tokio_util::codec::Decoder;

/// Small limits, so that short inputs reach them.
const LIMITS: Limits = Limits {
    max_line: 48,
    max_payload: 32,
};

const CHUNKS: [usize; 8] = [1, 2, 3, 5, 8, 17, 64, usize::MAX];

/// Run one fuzz input through the codec and the parsers; panics on any violation.
pub(crate) fn check_decode(data: &[u8]) {
    let Some((&sel, input)) = data.split_first() else {
        return;
    };
    let dir = if sel & 1 == 0 {
        Direction::ClientToServer
    } else {
        Direction::ServerToClient
    };
    let chunk = CHUNKS[usize::from((sel >> 1) & 7)];
    let dialect = 3 + (sel >> 4);

    let (items, error) = feed(dir, dialect, input, chunk);
    for item in &items {
        match item {
            Decoded::Frame(f) => check_frame(dir, dialect, f),
            Decoded::Rejected(r) => {
                if let RejectReason::PayloadTooLarge(n) = r.reason {
                    assert!(n > LIMITS.max_payload, "{r:?}");
                }
            }
        }
    }

    if chunk != 1 {
        assert_eq!(
            feed(dir, dialect, input, 1),
            (items, error),
            "1-byte chunks (left) differ from {chunk}-byte chunks (right)"
        );
    }
}

fn codec(dir: Direction, dialect: u8) -> MsnpCodec {
    let mut c = MsnpCodec::new(dir, LIMITS);
    c.set_dialect(dialect);
    c
}

/// Feed `input` in chunks of `chunk` bytes, draining after each; stop at the first error.
fn feed(dir: Direction, dialect: u8, input: &[u8], chunk: usize) -> (Vec<Decoded>, Option<String>) {
    let bound = (LIMITS.max_line + 1).max(LIMITS.max_payload.saturating_sub(1));
    let mut c = codec(dir, dialect);
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut chunks = input.chunks(chunk);
    loop {
        loop {
            match c.decode(&mut buf) {
                Ok(Some(d)) => items.push(d),
                Ok(None) => {
                    assert!(
                        buf.len() <= bound,
                        "{} bytes held, bound {bound}",
                        buf.len()
                    );
                    break;
                }
                Err(e @ DecodeError::BadLength { .. }) => {
                    return (items, Some(format!("{e:?}")));
                }
                Err(e) => panic!("unexpected error {e:?}"),
            }
        }
        match chunks.next() {
            Some(ch) => buf.extend_from_slice(ch),
            None => return (items, None),
        }
    }
}

fn check_frame(dir: Direction, dialect: u8, f: &Frame) {
    assert!(Verb::parse(f.verb.as_str()).is_some(), "verb {:?}", f.verb);
    for a in &f.args {
        assert!(
            !a.is_empty() && !a.contains([' ', '\n']),
            "argument {a:?} in {f:?}"
        );
    }
    // Re-encoding never lengthens the line: spaces collapse, the count is written short.
    let count = f
        .payload
        .as_ref()
        .map_or(0, |p| 1 + p.len().to_string().len());
    let line = 3 + f.args.iter().map(|a| 1 + a.len()).sum::<usize>() + count;
    assert!(line <= LIMITS.max_line, "line of {line} bytes: {f:?}");
    if let Some(p) = &f.payload {
        assert!(
            p.len() <= LIMITS.max_payload,
            "payload of {} bytes",
            p.len()
        );
    }
    match payload_rule(dir, f.verb, dialect) {
        PayloadRule::Never => assert!(f.payload.is_none(), "{f:?}"),
        PayloadRule::Always => assert!(f.payload.is_some(), "{f:?}"),
        PayloadRule::IfLastNumeric => {}
    }

    // The typed parsers: never panic; a refusal names this frame.
    let errors = [NsCommand::parse(f).err(), SbCommand::parse(f).err()];
    for e in errors.into_iter().flatten() {
        assert_eq!(e.verb, f.verb.as_str());
        assert_eq!(e.tr_id, f.tr_id());
    }

    // Re-encode and re-decode to the same frame, consuming exactly what was written.
    let bytes = f.to_bytes();
    let mut buf = BytesMut::from(&bytes[..]);
    let again = codec(dir, dialect)
        .decode(&mut buf)
        .expect("re-decoding a decoded frame");
    assert_eq!(
        again,
        Some(Decoded::Frame(f.clone())),
        "re-encoded as {bytes:?}"
    );
    assert!(buf.is_empty(), "{} bytes left over", buf.len());
}
