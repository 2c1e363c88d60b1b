//! Property tests for the MSNP framing codec, URL-encoding of names, and typed command
//! parsing. Everything here is deterministic and CPU-only; the whole file runs in a few
//! seconds in debug mode.

use bytes::{Bytes, BytesMut};
use msnp::codec::{
    DecodeError, Decoded, Direction, Limits, MsnpCodec, PayloadRule, RejectReason, Rejection,
    payload_rule,
};
use msnp::command::{NsCommand, SbCommand};
use msnp::frame::{Frame, Verb};
use msnp::text;
use proptest::prelude::*;
use tokio_util::codec::Decoder;

const CASES: u32 = 256;

/// Limits for the round-trip tests: small enough that generated payloads reach the cap,
/// large enough that every generated line fits (3 + 6 × 13 + 1 + 2 = 84 ≤ 128).
const RT: Limits = Limits {
    max_line: 128,
    max_payload: 64,
};

/// Verbs from both directions, with and without payloads in some dialects, plus a few
/// error codes. Whether one carries a payload is read from `payload_rule`.
const VERBS: &[&[u8; 3]] = &[
    b"MSG", b"QRY", b"UUX", b"SDC", b"ADL", b"RML", b"UUN", b"FQY", b"UUM", b"PUT", b"DEL", b"SDG",
    b"NOT", b"IPG", b"UBX", b"GCF", b"UBN", b"UBM", b"NFY", b"CHG", b"ADD", b"ADC", b"REM", b"USR",
    b"SYN", b"PNG", b"VER", b"CVR", b"INF", b"OUT", b"XFR", b"URL", b"IMS", b"BLP", b"GTC", b"PRP",
    b"SBP", b"REA", b"REG", b"ADG", b"RMG", b"SND", b"FND", b"PAG", b"CAL", b"ANS", b"ILN", b"NLN",
    b"FLN", b"CHL", b"QNG", b"BYE", b"JOI", b"IRO", b"ACK", b"NAK", b"911", b"200", b"715",
];

// ---------------------------------------------------------------------------------------
// Feeding helpers
// ---------------------------------------------------------------------------------------

/// What one decoding run produced: the items in order, and the fatal error that ended
/// it, if any (as its `Debug` text: `DecodeError` is neither `Clone` nor `PartialEq`).
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    items: Vec<Decoded>,
    error: Option<String>,
}

/// The most the decoder may hold in its buffer when `decode` returns `Ok(None)`.
///
/// Read off `MsnpCodec::decode` state by state:
/// - `Line`: it looks for `\n` in the first `max_line + 2` bytes. Found: the line is
///   consumed. Not found and `buf.len() > max_line + 1`: the line is rejected and the
///   buffer cleared. So it only waits with `buf.len() <= max_line + 1` (a full-length
///   line plus its `\r`, the `\n` still to come).
/// - `Payload { len }`: waits only while `buf.len() < len`, and `len <= max_payload`
///   (larger counts go to `DiscardPayload`; a count of 0 never waits).
/// - `DiscardLine`: clears the buffer before waiting.
/// - `DiscardPayload`: waits only after consuming everything in the buffer.
///
/// Every caller here drains `decode` until `Ok(None)` after each chunk, so the chunk
/// size does not enter the bound: it is `max(max_line + 1, max_payload - 1)`, tighter than
/// the obvious `max_line + 2 + max_payload + chunk`.
fn buffer_bound(limits: Limits) -> usize {
    (limits.max_line + 1).max(limits.max_payload.saturating_sub(1))
}

fn codec(dir: Direction, dialect: u8, limits: Limits) -> MsnpCodec {
    let mut c = MsnpCodec::new(dir, limits);
    c.set_dialect(dialect);
    c
}

/// Feed `input` in chunks whose sizes cycle through `chunks` (each ≥ 1), draining the
/// decoder after each chunk, and stop at the first error (the server then closes the
/// connection). Asserts the buffering bound after every `Ok(None)`.
fn feed(codec: &mut MsnpCodec, input: &[u8], chunks: &[usize]) -> Outcome {
    assert!(!chunks.is_empty() && chunks.iter().all(|&c| c > 0));
    let bound = buffer_bound(codec.limits());
    let mut buf = BytesMut::new();
    let mut items = Vec::new();
    let mut pos = 0;
    let mut next_chunk = 0;
    loop {
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(d)) => items.push(d),
                Ok(None) => {
                    assert!(
                        buf.len() <= bound,
                        "decoder holds {} bytes after Ok(None), bound {bound}",
                        buf.len()
                    );
                    break;
                }
                Err(e) => {
                    assert!(
                        matches!(e, DecodeError::BadLength { .. }),
                        "only BadLength is expected from a byte slice, got {e:?}"
                    );
                    return Outcome {
                        items,
                        error: Some(format!("{e:?}")),
                    };
                }
            }
        }
        if pos == input.len() {
            return Outcome { items, error: None };
        }
        let n = chunks[next_chunk % chunks.len()].min(input.len() - pos);
        next_chunk += 1;
        buf.extend_from_slice(&input[pos..pos + n]);
        pos += n;
    }
}

fn feed_whole(codec: &mut MsnpCodec, input: &[u8]) -> Outcome {
    feed(codec, input, &[input.len().max(1)])
}

fn encode_all(frames: &[Frame]) -> Vec<u8> {
    let mut out = BytesMut::new();
    for f in frames {
        f.encode_into(&mut out);
    }
    out.to_vec()
}

/// Length of the command line `encode_into` writes for `f`, without `\r\n`.
fn line_len(f: &Frame) -> usize {
    let count = f
        .payload
        .as_ref()
        .map_or(0, |p| 1 + p.len().to_string().len());
    3 + f.args.iter().map(|a| 1 + a.len()).sum::<usize>() + count
}

// ---------------------------------------------------------------------------------------
// Strategies
// ---------------------------------------------------------------------------------------

fn direction() -> impl Strategy<Value = Direction> {
    prop_oneof![
        Just(Direction::ClientToServer),
        Just(Direction::ServerToClient)
    ]
}

fn dialect() -> impl Strategy<Value = u8> {
    msnp::dialect::MIN..=msnp::dialect::MAX
}

fn verb() -> impl Strategy<Value = Verb> {
    prop_oneof![
        4 => prop::sample::select(VERBS).prop_map(Verb::new),
        1 => "[A-Z0-9]{3}".prop_map(|s| Verb::parse(&s).expect("three upper-case/digits")),
    ]
}

/// An argument as the decoder yields them: visible ASCII, no spaces, never empty.
fn arg() -> impl Strategy<Value = String> {
    prop_oneof![
        3 => "[!-~]{1,12}",
        1 => (0u32..100_000).prop_map(|n| n.to_string()),
        1 => prop::sample::select(&["N", "U", "A", "D", "OK", "MSNP12", "CVR0", "+1", "0"][..])
            .prop_map(str::to_owned),
    ]
}

/// Payload bytes, biased towards line ends so payloads look like lines.
fn payload_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(
        prop_oneof![4 => any::<u8>(), 1 => Just(b'\r'), 1 => Just(b'\n'), 1 => Just(b' ')],
        0..=max,
    )
}

/// A frame that the decoder for `dir`/`dialect` reads back unchanged: a payload exactly
/// where `payload_rule` wants one.
fn valid_frame(dir: Direction, dialect: u8, max_payload: usize) -> impl Strategy<Value = Frame> {
    (
        verb(),
        prop::collection::vec(arg(), 0..=6),
        payload_bytes(max_payload),
        any::<bool>(),
    )
        .prop_map(move |(verb, mut args, payload, with_payload)| {
            let payload = match payload_rule(dir, verb, dialect) {
                PayloadRule::Never => None,
                PayloadRule::Always => Some(payload),
                PayloadRule::IfLastNumeric if with_payload => {
                    // The count must not be the only argument.
                    if args.is_empty() {
                        args.push("1".into());
                    }
                    Some(payload)
                }
                PayloadRule::IfLastNumeric => {
                    // Without a payload the last argument must not read as a count.
                    if args.len() >= 2 && args.last().is_some_and(|a| a.parse::<usize>().is_ok()) {
                        args.push("OK".into());
                    }
                    None
                }
            };
            Frame {
                verb,
                args,
                payload: payload.map(Bytes::from),
            }
        })
}

/// Direction, dialect and a few valid frames for them.
fn valid_stream() -> impl Strategy<Value = (Direction, u8, Vec<Frame>)> {
    (direction(), dialect()).prop_flat_map(|(dir, dialect)| {
        (
            Just(dir),
            Just(dialect),
            prop::collection::vec(valid_frame(dir, dialect, RT.max_payload), 0..12),
        )
    })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(
        prop_oneof![3 => 1usize..8, 2 => 1usize..64, 1 => 64usize..300],
        1..10,
    )
}

fn limits() -> impl Strategy<Value = Limits> {
    (4usize..48, 0usize..40).prop_map(|(max_line, max_payload)| Limits {
        max_line,
        max_payload,
    })
}

/// Protocol-shaped pieces for `garbage`.
const PIECES: &[&[u8]] = &[
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b"PNG\r\n",
    b"MSG 1 N 5\r\n",
    b"MSG 2 N 0\r\n",
    b"MSG 3 U 999\r\n",
    b"MSG 4 N 99999999999999999999999\r\n",
    b"MSG 5 N abc\r\n",
    b"MSG\r\n",
    b"QRY 6 id 3\r\n",
    b"UUX 7 +4\r\n",
    b"ADL 0 3\r\n",
    b"ADL 5 OK\r\n",
    b"GCF 8 Shields.xml 2\r\n",
    b"NOT 12\r\n",
    b"usr 9 x\r\n",
    b"\xff\xfe 9\r\n",
    b"VER 1 MSNP12 CVR0\r\n",
];

/// Input that is mostly garbage but often close to the protocol: pieces of valid and
/// broken lines, payload headers with small, huge and non-numeric counts, long runs.
fn garbage() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        3 => prop::collection::vec(any::<u8>(), 0..24),
        1 => prop::collection::vec(prop::sample::select(&b"MSG 1N\r\n 0"[..]), 0..24),
        1 => prop::sample::select(PIECES).prop_map(<[u8]>::to_vec),
        1 => (1usize..80, any::<u8>()).prop_map(|(n, b)| vec![b; n]),
    ];
    prop::collection::vec(piece, 0..16).prop_map(|ps| ps.concat())
}

/// Checks that hold for every item a codec with `limits` returns, whatever the input.
fn check_item(dir: Direction, dialect: u8, limits: Limits, item: &Decoded) {
    match item {
        Decoded::Frame(f) => {
            assert!(
                Verb::parse(f.verb.as_str()).is_some(),
                "bad verb {:?}",
                f.verb
            );
            for a in &f.args {
                assert!(!a.is_empty(), "empty argument in {f:?}");
                assert!(!a.contains([' ', '\n']), "argument {a:?} in {f:?}");
            }
            // Re-encoding never lengthens the line: spaces collapse and the count is
            // written in its shortest form.
            assert!(
                line_len(f) <= limits.max_line,
                "line of {} bytes in {f:?}, max {}",
                line_len(f),
                limits.max_line
            );
            if let Some(p) = &f.payload {
                assert!(
                    p.len() <= limits.max_payload,
                    "payload of {} bytes",
                    p.len()
                );
            }
            match payload_rule(dir, f.verb, dialect) {
                PayloadRule::Never => assert!(f.payload.is_none(), "{f:?}"),
                PayloadRule::Always => assert!(f.payload.is_some(), "{f:?}"),
                PayloadRule::IfLastNumeric => {}
            }
        }
        Decoded::Rejected(r) => {
            if let RejectReason::PayloadTooLarge(n) = r.reason {
                assert!(n > limits.max_payload, "{r:?}");
            }
        }
    }
}

// ---------------------------------------------------------------------------------------
// Codec properties
// ---------------------------------------------------------------------------------------

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    /// Valid frames, encoded back to back into one stream, decode to themselves in order.
    #[test]
    fn round_trip((dir, dialect, frames) in valid_stream()) {
        let input = encode_all(&frames);
        let out = feed_whole(&mut codec(dir, dialect, RT), &input);
        prop_assert_eq!(out.error, None);
        let expected: Vec<Decoded> = frames.into_iter().map(Decoded::Frame).collect();
        prop_assert_eq!(out.items, expected);
    }

    /// The same stream in arbitrary chunks, and in 1-byte chunks, gives the same items.
    #[test]
    fn arbitrary_splits((dir, dialect, frames) in valid_stream(), chunks in chunk_sizes()) {
        let input = encode_all(&frames);
        let whole = feed_whole(&mut codec(dir, dialect, RT), &input);
        let split = feed(&mut codec(dir, dialect, RT), &input, &chunks);
        prop_assert_eq!(&split, &whole);
        let bytewise = feed(&mut codec(dir, dialect, RT), &input, &[1]);
        prop_assert_eq!(&bytewise, &whole);
    }

    /// Garbage in any chunking: no panic, every item within the caps, the buffer bounded
    /// after each `Ok(None)` (asserted in `feed`), and `BadLength` the only error.
    #[test]
    fn caps_hold_on_garbage(
        dir in direction(),
        dialect in dialect(),
        limits in limits(),
        input in garbage(),
        chunks in chunk_sizes(),
    ) {
        for chunks in [&chunks[..], &[1], &[input.len().max(1)]] {
            let out = feed(&mut codec(dir, dialect, limits), &input, chunks);
            for item in &out.items {
                check_item(dir, dialect, limits, item);
            }
        }
    }

    /// Garbage, over-long lines included: chunking does not change what is decoded.
    /// (Failed before db71200: see `overlong_line_keeps_following_frames`.)
    #[test]
    fn garbage_splits_agree(
        dir in direction(),
        dialect in dialect(),
        limits in limits(),
        input in garbage(),
        chunks in chunk_sizes(),
    ) {
        let whole = feed_whole(&mut codec(dir, dialect, limits), &input);
        let bytewise = feed(&mut codec(dir, dialect, limits), &input, &[1]);
        prop_assert_eq!(&bytewise, &whole);
        let split = feed(&mut codec(dir, dialect, limits), &input, &chunks);
        prop_assert_eq!(&split, &whole);
    }

    /// An oversized payload is rejected (and skipped exactly), then the next valid frame
    /// decodes, wherever the stream is split.
    #[test]
    fn oversized_payload_then_valid_frame(
        (dir, dialect, before) in valid_stream(),
        pick in any::<prop::sample::Index>(),
        tr in any::<u32>(),
        extra in 1usize..200,
        filler in payload_bytes(16),
        after_seed in any::<u64>(),
        chunks in chunk_sizes(),
    ) {
        let always: Vec<Verb> = VERBS
            .iter()
            .map(|v| Verb::new(v))
            .filter(|v| payload_rule(dir, *v, dialect) == PayloadRule::Always)
            .collect();
        let verb = *pick.get(&always); // MSG is always there
        let n = RT.max_payload + extra;
        let mut input = encode_all(&before);
        input.extend_from_slice(format!("{verb} {tr} N {n}\r\n").as_bytes());
        // The skipped payload looks like more commands.
        input.extend(filler.iter().chain(b"PNG\r\nMSG 1 N 1\r\nx").cycle().take(n));
        let after = Frame::new(b"PNG").arg(after_seed);
        input.extend_from_slice(&after.to_bytes());

        let mut expected: Vec<Decoded> = before.into_iter().map(Decoded::Frame).collect();
        expected.push(Decoded::Rejected(Rejection {
            verb: Some(verb),
            tr_id: Some(tr),
            reason: RejectReason::PayloadTooLarge(n),
        }));
        expected.push(Decoded::Frame(after));
        let expected = Outcome { items: expected, error: None };
        prop_assert_eq!(&feed_whole(&mut codec(dir, dialect, RT), &input), &expected);
        prop_assert_eq!(&feed(&mut codec(dir, dialect, RT), &input, &chunks), &expected);
        prop_assert_eq!(&feed(&mut codec(dir, dialect, RT), &input, &[1]), &expected);
    }
}

/// The payload table matches the protocol for the cases the servers rely on most.
#[test]
fn payload_table_examples() {
    use Direction::*;
    use PayloadRule::*;
    let rule = |dir, v: &[u8; 3], d| payload_rule(dir, Verb::new(v), d);
    for v in [b"MSG", b"QRY", b"UUX"] {
        assert_eq!(rule(ClientToServer, v, 12), Always, "{v:?}");
    }
    for v in [b"CHG", b"ADD", b"USR", b"SYN", b"PNG"] {
        assert_eq!(rule(ClientToServer, v, 12), Never, "{v:?}");
    }
    assert_eq!(rule(ClientToServer, b"QRY", 5), Never);
    assert_eq!(rule(ClientToServer, b"UUX", 10), Never);
    for d in 2..=18 {
        assert_eq!(rule(ServerToClient, b"MSG", d), Always);
        assert_eq!(rule(ServerToClient, b"NOT", d), Always);
    }
    assert_eq!(rule(ServerToClient, b"UBX", 10), Never);
    assert_eq!(rule(ServerToClient, b"UBX", 11), Always);
    assert_eq!(rule(ServerToClient, b"GCF", 11), IfLastNumeric);
}

/// An over-long line whose end and the frames after it arrive in the same read must not
/// take those frames with it. Regression test: before db71200 `decode` cleared the whole
/// buffer when it rejected the line, so with the input below in one read it returned only
/// the rejection, and `DiscardLine` then also swallowed the next line to arrive (`VER`
/// here). Fed one byte at a time the same input gave the expected four items.
#[test]
fn overlong_line_keeps_following_frames() {
    let limits = Limits {
        max_line: 64,
        max_payload: 16,
    };
    let mut input = vec![b'A'; 100];
    input.extend_from_slice(b"\r\nPNG\r\nOUT\r\n");
    let mut c = codec(Direction::ClientToServer, 12, limits);
    let mut buf = BytesMut::from(&input[..]);
    let mut items = Vec::new();
    while let Some(d) = c.decode(&mut buf).unwrap() {
        items.push(d);
    }
    buf.extend_from_slice(b"VER 1 MSNP12\r\n");
    while let Some(d) = c.decode(&mut buf).unwrap() {
        items.push(d);
    }
    let expected = vec![
        Decoded::Rejected(Rejection {
            verb: None,
            tr_id: None,
            reason: RejectReason::LineTooLong,
        }),
        Decoded::Frame(Frame::new(b"PNG")),
        Decoded::Frame(Frame::new(b"OUT")),
        Decoded::Frame(Frame::new(b"VER").args(["1", "MSNP12"])),
    ];
    assert_eq!(items, expected);
}

// ---------------------------------------------------------------------------------------
// Names and typed commands
// ---------------------------------------------------------------------------------------

fn is_hex(b: Option<&u8>) -> bool {
    b.is_some_and(u8::is_ascii_hexdigit)
}

/// Arguments as a client might send them: free text, numbers, the keywords the parsers
/// look for, percent-escapes both valid and broken.
fn command_arg() -> impl Strategy<Value = String> {
    prop_oneof![
        2 => "[!-~]{0,10}",
        1 => any::<String>(),
        1 => any::<u32>().prop_map(|n| n.to_string()),
        1 => "-?[0-9]{1,12}",
        2 => prop::sample::select(
            &[
                "MD5", "TWN", "SSO", "CTP", "I", "S", "ON", "OFF", "FL", "AL", "BL", "RL",
                "NLN", "0", "U", "N", "A", "D", "Q", "MFN", "N=bob@x.com", "F=Bob%20B",
                "C=00000000-0000-0000-0000-000000000000", "%", "%G", "%FF", "%E4%BD",
                "%3Cmsnobj%2F%3E", "NS", "SB",
            ][..],
        )
        .prop_map(str::to_owned),
    ]
}

fn command_frame() -> impl Strategy<Value = Frame> {
    (
        prop_oneof![
            3 => prop::sample::select(VERBS).prop_map(Verb::new),
            1 => "[A-Z]{3}".prop_map(|s| Verb::parse(&s).expect("three upper-case letters")),
        ],
        prop::collection::vec(command_arg(), 0..=6),
        prop::option::of(prop::collection::vec(any::<u8>(), 0..16)),
    )
        .prop_map(|(verb, args, payload)| Frame {
            verb,
            args,
            payload: payload.map(Bytes::from),
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(CASES))]

    #[test]
    fn text_round_trip(s in any::<String>()) {
        let e = text::encode(&s);
        prop_assert_eq!(text::decode(&e), s);
        let b = e.as_bytes();
        for (i, &c) in b.iter().enumerate() {
            prop_assert!(!matches!(c, b' ' | b'\r' | b'\n'), "{:?} in {:?}", c as char, e);
            prop_assert!(c.is_ascii() && !c.is_ascii_control(), "{:?} in {:?}", c, e);
            if c == b'%' {
                prop_assert!(is_hex(b.get(i + 1)) && is_hex(b.get(i + 2)), "stray % in {:?}", e);
            }
        }
    }

    /// Decoding accepts anything, including broken escapes and non-ASCII.
    #[test]
    fn text_decode_total(s in prop_oneof![any::<String>(), "[%0-9A-Fa-fG-Z]{0,16}"]) {
        let _ = text::decode(&s);
    }

    /// The typed parsers never panic, and a refusal names the frame's verb and TrID.
    #[test]
    fn command_parsers_are_total(frame in command_frame()) {
        for err in [NsCommand::parse(&frame).err(), SbCommand::parse(&frame).err()]
            .into_iter()
            .flatten()
        {
            prop_assert_eq!(&err.verb, frame.verb.as_str());
            prop_assert_eq!(err.tr_id, frame.tr_id());
        }
    }
}
