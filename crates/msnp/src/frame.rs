//! The raw frame: a verb, its arguments, and an optional payload.
//!
//! `args` never contains a payload's byte count: the decoder removes it and the encoder
//! writes it from the payload itself, so header and payload cannot disagree.

use std::fmt;

use bytes::{BufMut, Bytes, BytesMut};

/// A three-character command name (`USR`) or error code (`911`).
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct Verb(pub [u8; 3]);

impl Verb {
    /// A verb is three ASCII upper-case letters or digits.
    pub fn parse(token: &str) -> Option<Verb> {
        let b = token.as_bytes();
        (b.len() == 3
            && b.iter()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit()))
        .then(|| Verb([b[0], b[1], b[2]]))
    }

    pub const fn new(s: &[u8; 3]) -> Verb {
        Verb(*s)
    }

    pub fn as_str(&self) -> &str {
        // Only constructed from ASCII.
        std::str::from_utf8(&self.0).unwrap_or("???")
    }

    /// An error reply (`911`) rather than a command.
    pub fn is_error(&self) -> bool {
        self.0.iter().all(u8::is_ascii_digit)
    }
}

impl fmt::Debug for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct Frame {
    pub verb: Verb,
    pub args: Vec<String>,
    pub payload: Option<Bytes>,
}

impl Frame {
    pub fn new(verb: &[u8; 3]) -> Frame {
        Frame {
            verb: Verb::new(verb),
            args: Vec::new(),
            payload: None,
        }
    }

    /// Append one argument (must not contain spaces or line breaks; callers encode names).
    pub fn arg(mut self, a: impl ToString) -> Frame {
        self.args.push(a.to_string());
        self
    }

    pub fn args<I: IntoIterator<Item = S>, S: ToString>(mut self, items: I) -> Frame {
        self.args.extend(items.into_iter().map(|s| s.to_string()));
        self
    }

    pub fn payload(mut self, p: impl Into<Bytes>) -> Frame {
        self.payload = Some(p.into());
        self
    }

    /// An error reply: `NNN TrID`.
    pub fn error(code: crate::error::ErrorCode, tr_id: u32) -> Frame {
        let digits = code.code().to_string();
        let b = digits.as_bytes();
        Frame {
            verb: Verb([b[0], b[1], b[2]]),
            args: vec![tr_id.to_string()],
            payload: None,
        }
    }

    /// The transaction id, when the first argument is one.
    pub fn tr_id(&self) -> Option<u32> {
        self.args.first().and_then(|a| a.parse().ok())
    }

    pub fn encode_into(&self, dst: &mut BytesMut) {
        let payload_len = self.payload.as_ref().map(|p| p.len());
        let line_len: usize = 3 + self.args.iter().map(|a| a.len() + 1).sum::<usize>() + 2 + 8;
        dst.reserve(line_len + payload_len.unwrap_or(0));
        dst.put_slice(&self.verb.0);
        for a in &self.args {
            dst.put_u8(b' ');
            dst.put_slice(a.as_bytes());
        }
        if let Some(n) = payload_len {
            dst.put_u8(b' ');
            dst.put_slice(n.to_string().as_bytes());
        }
        dst.put_slice(b"\r\n");
        if let Some(p) = &self.payload {
            dst.put_slice(p);
        }
    }

    pub fn to_bytes(&self) -> Bytes {
        let mut b = BytesMut::new();
        self.encode_into(&mut b);
        b.freeze()
    }
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.verb)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        if let Some(p) = &self.payload {
            write!(f, " <{} bytes>", p.len())?;
        }
        Ok(())
    }
}
