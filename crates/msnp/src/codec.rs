//! Framing for both directions, as a `tokio_util` codec with no I/O of its own.
//!
//! A line is `VERB args…\r\n` (a bare `\n` is accepted). A payload command carries its
//! byte count as the last argument, and exactly that many bytes follow the line. Which
//! verbs carry payloads depends on direction and dialect: that is the [`payload_rule`]
//! table, the one place that knows it.
//!
//! Limits are hard: a line longer than `max_line` or a payload larger than
//! `max_payload` is never buffered. The decoder reports it at once as a
//! [`Decoded::Rejected`] and then *discards* — to the end of the line, or exactly the
//! announced payload — so the stream stays in step and memory stays bounded. Only a
//! payload count that is not a number is fatal ([`DecodeError::BadLength`]): the stream
//! cannot be resynchronised after it.

use bytes::{Buf, Bytes, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

use crate::frame::{Frame, Verb};

/// Which side of the connection this codec decodes for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    /// Decoding what a client sends (the server's codec).
    ClientToServer,
    /// Decoding what a server sends (a client's codec).
    ServerToClient,
}

/// Whether a verb carries a payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PayloadRule {
    Never,
    Always,
    /// Only when the last argument is a number (`ADL 0 120` push vs `ADL 5 OK` reply).
    IfLastNumeric,
}

/// The payload table, by direction, verb and dialect.
pub fn payload_rule(dir: Direction, verb: Verb, dialect: u8) -> PayloadRule {
    use PayloadRule::*;
    let v = &verb.0;
    match dir {
        Direction::ClientToServer => match v {
            b"MSG" => Always,
            b"QRY" if dialect >= 6 => Always,
            b"SDC" if dialect >= 5 => Always,
            b"UUX" if dialect >= 11 => Always,
            b"ADL" | b"RML" | b"UUN" if dialect >= 13 => Always,
            b"FQY" | b"UUM" if dialect >= 14 => Always,
            b"PUT" | b"DEL" | b"SDG" if dialect >= 18 => Always,
            _ => Never,
        },
        Direction::ServerToClient => match v {
            b"MSG" | b"NOT" => Always,
            b"IPG" if dialect >= 5 => Always,
            b"UBX" if dialect >= 11 => Always,
            b"GCF" if dialect >= 11 => IfLastNumeric,
            b"UBN" if dialect >= 13 => Always,
            b"ADL" | b"RML" if dialect >= 13 => IfLastNumeric,
            b"FQY" if dialect >= 14 => IfLastNumeric,
            b"UBM" if dialect >= 14 => Always,
            b"NFY" | b"SDG" | b"PUT" if dialect >= 18 => IfLastNumeric,
            _ => Never,
        },
    }
}

/// Size limits for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Longest command line, without its line end.
    pub max_line: usize,
    /// Largest payload.
    pub max_payload: usize,
}

impl Limits {
    /// Notification server defaults: generous for UUX/ADL documents, small enough to bound memory.
    pub const NS: Limits = Limits {
        max_line: 2048,
        max_payload: 16 * 1024,
    };
    /// Switchboard defaults: the official server's 1664-byte message limit.
    pub const SB: Limits = Limits {
        max_line: 2048,
        max_payload: 1664,
    };
    /// What a client accepts from a server.
    pub const CLIENT: Limits = Limits {
        max_line: 16 * 1024,
        max_payload: 1024 * 1024,
    };
}

/// Why a frame was refused. The stream continues after it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    /// No line end within `max_line` bytes.
    LineTooLong,
    /// A payload count over `max_payload`; the payload is skipped.
    PayloadTooLarge(usize),
    /// The line is not UTF-8.
    NotUtf8,
    /// The verb is not three upper-case letters or digits.
    BadVerb,
    /// An empty line.
    Empty,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub verb: Option<Verb>,
    pub tr_id: Option<u32>,
    pub reason: RejectReason,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    Frame(Frame),
    Rejected(Rejection),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("payload byte count is not a number")]
    BadLength { verb: Verb, tr_id: Option<u32> },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum State {
    Line,
    /// A payload of `len` bytes is due for this header.
    Payload {
        header: Box<Frame>,
        len: usize,
    },
    /// Skipping an over-long line up to its end.
    DiscardLine,
    /// Skipping `remaining` payload bytes of a refused frame.
    DiscardPayload {
        remaining: usize,
    },
}

#[derive(Debug, Clone)]
pub struct MsnpCodec {
    direction: Direction,
    dialect: u8,
    limits: Limits,
    state: State,
}

impl MsnpCodec {
    /// Until VER settles the dialect, the payload table is read for the newest dialect.
    pub fn new(direction: Direction, limits: Limits) -> Self {
        MsnpCodec {
            direction,
            dialect: crate::dialect::MAX,
            limits,
            state: State::Line,
        }
    }

    pub fn set_dialect(&mut self, dialect: u8) {
        self.dialect = dialect;
    }

    pub fn dialect(&self) -> u8 {
        self.dialect
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    fn parse_line(&mut self, line: &[u8]) -> Result<Option<Decoded>, DecodeError> {
        let reject = |verb, tr_id, reason| {
            Ok(Some(Decoded::Rejected(Rejection {
                verb,
                tr_id,
                reason,
            })))
        };
        let text = match std::str::from_utf8(line) {
            Ok(t) => t,
            Err(_) => {
                // Name what we can so the error reply can carry the TrID.
                let lossy = String::from_utf8_lossy(line);
                let mut it = lossy.split(' ');
                let verb = it.next().and_then(Verb::parse);
                let tr = it.next().and_then(|t| t.parse().ok());
                return reject(verb, tr, RejectReason::NotUtf8);
            }
        };
        let mut tokens = text.split(' ').filter(|t| !t.is_empty());
        let Some(first) = tokens.next() else {
            return reject(None, None, RejectReason::Empty);
        };
        let args: Vec<String> = tokens.map(str::to_owned).collect();
        let Some(verb) = Verb::parse(first) else {
            let tr = args.first().and_then(|t| t.parse().ok());
            return reject(None, tr, RejectReason::BadVerb);
        };
        let mut frame = Frame {
            verb,
            args,
            payload: None,
        };
        let wants_payload = match payload_rule(self.direction, verb, self.dialect) {
            PayloadRule::Never => false,
            PayloadRule::Always => true,
            PayloadRule::IfLastNumeric => {
                frame.args.len() >= 2
                    && frame
                        .args
                        .last()
                        .is_some_and(|a| a.parse::<usize>().is_ok())
            }
        };
        if !wants_payload {
            return Ok(Some(Decoded::Frame(frame)));
        }
        let tr_id = frame.tr_id();
        let len = match frame.args.pop().map(|a| a.parse::<usize>()) {
            Some(Ok(n)) => n,
            _ => return Err(DecodeError::BadLength { verb, tr_id }),
        };
        if len > self.limits.max_payload {
            self.state = State::DiscardPayload { remaining: len };
            return reject(Some(verb), tr_id, RejectReason::PayloadTooLarge(len));
        }
        if len == 0 {
            frame.payload = Some(Bytes::new());
            return Ok(Some(Decoded::Frame(frame)));
        }
        self.state = State::Payload {
            header: Box::new(frame),
            len,
        };
        Ok(None)
    }
}

/// The rejection for an over-long line, naming its verb and TrID from the line's start.
/// Only the first `min(16, max_line + 1)` bytes are read: every over-long line has that
/// many when it is refused, however it arrived, so splits cannot change the answer.
fn long_line(start: &[u8], max_line: usize) -> Rejection {
    let n = start.len().min(16).min(max_line + 1);
    let head = String::from_utf8_lossy(&start[..n]).into_owned();
    let mut it = head.split(' ');
    let verb = it.next().and_then(Verb::parse);
    let tr_id = it.next().and_then(|t| t.parse().ok());
    Rejection {
        verb,
        tr_id,
        reason: RejectReason::LineTooLong,
    }
}

impl Decoder for MsnpCodec {
    type Item = Decoded;
    type Error = DecodeError;

    fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        loop {
            match &mut self.state {
                State::DiscardLine => match buf.iter().position(|b| *b == b'\n') {
                    Some(i) => {
                        buf.advance(i + 1);
                        self.state = State::Line;
                    }
                    None => {
                        buf.clear();
                        return Ok(None);
                    }
                },
                State::DiscardPayload { remaining } => {
                    let n = (*remaining).min(buf.len());
                    buf.advance(n);
                    *remaining -= n;
                    if *remaining > 0 {
                        return Ok(None);
                    }
                    self.state = State::Line;
                }
                State::Payload { len, .. } => {
                    let len = *len;
                    if buf.len() < len {
                        buf.reserve(len - buf.len());
                        return Ok(None);
                    }
                    let payload = buf.split_to(len).freeze();
                    let State::Payload { mut header, .. } =
                        std::mem::replace(&mut self.state, State::Line)
                    else {
                        unreachable!("matched Payload above");
                    };
                    header.payload = Some(payload);
                    return Ok(Some(Decoded::Frame(*header)));
                }
                State::Line => {
                    let window = buf.len().min(self.limits.max_line + 2);
                    let Some(nl) = buf[..window].iter().position(|b| *b == b'\n') else {
                        if buf.len() > self.limits.max_line + 1 {
                            // Report now; skip the rest of the line as it arrives.
                            let rejection = long_line(buf, self.limits.max_line);
                            // Drop the long line; what follows its end (if it has
                            // arrived) is the next frame and must be kept.
                            match buf.iter().position(|b| *b == b'\n') {
                                Some(end) => buf.advance(end + 1),
                                None => {
                                    buf.clear();
                                    self.state = State::DiscardLine;
                                }
                            }
                            return Ok(Some(Decoded::Rejected(rejection)));
                        }
                        return Ok(None);
                    };
                    let line = buf.split_to(nl + 1);
                    let mut line = &line[..nl];
                    if line.last() == Some(&b'\r') {
                        line = &line[..line.len() - 1];
                    }
                    if line.len() > self.limits.max_line {
                        return Ok(Some(Decoded::Rejected(long_line(
                            line,
                            self.limits.max_line,
                        ))));
                    }
                    if let Some(d) = self.parse_line(line)? {
                        return Ok(Some(d));
                    }
                    // A payload is due: loop to take it if it is already here.
                }
            }
        }
    }
}

impl Encoder<Frame> for MsnpCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode_into(dst);
        Ok(())
    }
}

impl Encoder<&Frame> for MsnpCodec {
    type Error = std::io::Error;

    fn encode(&mut self, item: &Frame, dst: &mut BytesMut) -> Result<(), Self::Error> {
        item.encode_into(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn server() -> MsnpCodec {
        let mut c = MsnpCodec::new(
            Direction::ClientToServer,
            Limits {
                max_line: 64,
                max_payload: 16,
            },
        );
        c.set_dialect(12);
        c
    }

    fn decode_all(c: &mut MsnpCodec, input: &[u8]) -> Vec<Decoded> {
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(d) = c.decode(&mut buf).unwrap() {
            out.push(d);
        }
        out
    }

    fn frame(d: &Decoded) -> &Frame {
        match d {
            Decoded::Frame(f) => f,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    #[test]
    fn lines_and_payloads() {
        let mut c = server();
        let out = decode_all(&mut c, b"VER 1 MSNP12 CVR0\nMSG 2 N 5\r\nhelloPNG\r\n");
        assert_eq!(out.len(), 3);
        assert_eq!(frame(&out[0]).args, ["1", "MSNP12", "CVR0"]);
        let msg = frame(&out[1]);
        assert_eq!(
            (msg.args.as_slice(), msg.payload.as_deref()),
            (&["2".to_string(), "N".into()][..], Some(&b"hello"[..]))
        );
        assert_eq!(frame(&out[2]).verb.as_str(), "PNG");
    }

    #[test]
    fn payload_may_contain_line_ends() {
        let mut c = server();
        let out = decode_all(&mut c, b"MSG 2 N 6\r\na\r\nb\r\nOUT\r\n");
        assert_eq!(frame(&out[0]).payload.as_deref(), Some(&b"a\r\nb\r\n"[..]));
        assert_eq!(frame(&out[1]).verb.as_str(), "OUT");
    }

    #[test]
    fn oversized_payload_is_rejected_and_skipped() {
        let mut c = server();
        let mut input = b"MSG 7 N 20\r\n".to_vec();
        input.extend_from_slice(&[b'x'; 20]);
        input.extend_from_slice(b"PNG\r\n");
        let out = decode_all(&mut c, &input);
        assert_eq!(
            out[0],
            Decoded::Rejected(Rejection {
                verb: Some(Verb::new(b"MSG")),
                tr_id: Some(7),
                reason: RejectReason::PayloadTooLarge(20)
            })
        );
        assert_eq!(frame(&out[1]).verb.as_str(), "PNG");
    }

    #[test]
    fn overlong_line_is_rejected_then_skipped() {
        let mut c = server();
        let mut buf = BytesMut::from(&[b'A'; 100][..]);
        let first = c.decode(&mut buf).unwrap();
        assert!(matches!(
            first,
            Some(Decoded::Rejected(Rejection {
                reason: RejectReason::LineTooLong,
                ..
            }))
        ));
        assert!(buf.is_empty(), "nothing of the long line is kept");
        buf.extend_from_slice(&[b'B'; 1000]);
        assert_eq!(c.decode(&mut buf).unwrap(), None);
        assert!(buf.is_empty());
        buf.extend_from_slice(b"BBB\r\nPNG\r\n");
        assert_eq!(
            frame(&c.decode(&mut buf).unwrap().unwrap()).verb.as_str(),
            "PNG"
        );
    }

    #[test]
    fn bad_length_is_fatal_and_bad_lines_are_not() {
        let mut c = server();
        let mut buf = BytesMut::from(&b"MSG 3 N abc\r\n"[..]);
        assert!(matches!(
            c.decode(&mut buf),
            Err(DecodeError::BadLength { tr_id: Some(3), .. })
        ));
        let mut c = server();
        let out = decode_all(&mut c, b"usr 1 x\r\n\xff\xfe 9\r\n\r\nPNG\r\n");
        assert!(matches!(
            &out[0],
            Decoded::Rejected(Rejection {
                reason: RejectReason::BadVerb,
                tr_id: Some(1),
                ..
            })
        ));
        assert!(matches!(
            &out[1],
            Decoded::Rejected(Rejection {
                reason: RejectReason::NotUtf8,
                ..
            })
        ));
        assert!(matches!(
            &out[2],
            Decoded::Rejected(Rejection {
                reason: RejectReason::Empty,
                ..
            })
        ));
        assert_eq!(frame(&out[3]).verb.as_str(), "PNG");
    }

    #[test]
    fn payload_table_depends_on_direction_and_dialect() {
        let v = Verb::new(b"UUX");
        assert_eq!(
            payload_rule(Direction::ClientToServer, v, 9),
            PayloadRule::Never
        );
        assert_eq!(
            payload_rule(Direction::ClientToServer, v, 11),
            PayloadRule::Always
        );
        let mut client = MsnpCodec::new(Direction::ServerToClient, Limits::CLIENT);
        client.set_dialect(13);
        let out = decode_all(
            &mut client,
            b"ADL 5 OK\r\nADL 0 3\r\nabcGCF 6 Shields.xml 2\r\nxy",
        );
        assert_eq!(frame(&out[0]).args, ["5", "OK"]);
        assert_eq!(frame(&out[1]).payload.as_deref(), Some(&b"abc"[..]));
        assert_eq!(frame(&out[2]).payload.as_deref(), Some(&b"xy"[..]));
    }

    #[test]
    fn encode_writes_the_length() {
        let f = Frame::new(b"MSG")
            .arg("Hotmail")
            .arg("Hotmail")
            .payload(&b"hi\r\n"[..]);
        assert_eq!(&f.to_bytes()[..], b"MSG Hotmail Hotmail 4\r\nhi\r\n");
    }
}
