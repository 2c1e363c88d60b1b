//! Offline messages (OIMs, MSNP13+): text a sender left for a user who was not signed in,
//! kept in the store until the recipient deletes it.
//!
//! The store assigns each message its id and arrival time and enforces the limits below,
//! so every implementation refuses the same messages.

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::account::{Email, UserId};

/// Largest message text accepted, in bytes of UTF-8 (the official limit is unknown; a
/// typed message is far shorter).
pub const MAX_OIM_TEXT: usize = 8 * 1024;
/// Most messages one recipient may have waiting; further ones are refused until some are
/// deleted, so a sender cannot fill the database.
pub const MAX_OIMS_PER_RECIPIENT: usize = 200;
/// Longest sender friendly name kept, in characters (MSNPSharp cuts at 48 as well).
pub const MAX_OIM_SENDER_NAME: usize = 48;

/// A message to store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OimNew {
    pub recipient: UserId,
    pub sender: Email,
    /// Decoded friendly name; longer than [`MAX_OIM_SENDER_NAME`] is cut.
    pub sender_name: String,
    /// The sender's `X-OIM-Run-Id`: one per conversation the client sends offline.
    pub run_id: Uuid,
    /// The sender's `X-OIM-Sequence-Num` within the run.
    pub seq: u32,
    /// The message text (decoded).
    pub text: String,
}

/// What a mailbox listing shows of a message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OimMeta {
    pub id: Uuid,
    pub sender: Email,
    pub sender_name: String,
    /// When the store accepted it, ms since the Unix epoch.
    pub received_at: i64,
    /// Bytes of the text.
    pub size: u32,
    pub read: bool,
}

/// A whole message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oim {
    pub meta: OimMeta,
    pub run_id: Uuid,
    pub seq: u32,
    pub text: String,
}

/// Why the store refused a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum OimRefused {
    #[error("no such recipient")]
    NoRecipient,
    #[error("message text over {MAX_OIM_TEXT} bytes")]
    TooLarge,
    #[error("the recipient has {MAX_OIMS_PER_RECIPIENT} messages waiting")]
    MailboxFull,
}

impl OimNew {
    /// The checks every store makes before writing (the mailbox count is the store's to
    /// check, inside its write transaction); cuts an over-long sender name.
    pub fn validated(mut self) -> Result<OimNew, OimRefused> {
        if self.text.len() > MAX_OIM_TEXT {
            return Err(OimRefused::TooLarge);
        }
        if let Some((cut, _)) = self.sender_name.char_indices().nth(MAX_OIM_SENDER_NAME) {
            self.sender_name.truncate(cut);
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(text: &str, name: &str) -> OimNew {
        OimNew {
            recipient: UserId(1),
            sender: Email::parse("a@example.com").unwrap(),
            sender_name: name.into(),
            run_id: Uuid::nil(),
            seq: 1,
            text: text.into(),
        }
    }

    #[test]
    fn validation_caps_text_and_cuts_names() {
        assert!(new(&"x".repeat(MAX_OIM_TEXT), "a").validated().is_ok());
        assert_eq!(
            new(&"x".repeat(MAX_OIM_TEXT + 1), "a").validated(),
            Err(OimRefused::TooLarge)
        );
        let long = "é".repeat(60);
        let cut = new("hi", &long).validated().unwrap();
        assert_eq!(cut.sender_name.chars().count(), MAX_OIM_SENDER_NAME);
    }
}
