//! The roaming profile WLM 8.1+ keeps in the storage service: the personal message and the
//! display picture ("user tile"), so a user's other machines show them at sign-in. The
//! display name is the account's friendly name (the address book keeps it).

use serde::{Deserialize, Serialize};

/// Largest display picture kept.
pub const MAX_TILE_BYTES: usize = 256 * 1024;
/// Longest personal message kept, in characters.
pub const MAX_PSM_CHARS: usize = 512;

/// A display picture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Tile {
    /// `image/png`, `image/jpeg`, `image/gif` or `image/bmp`, from the bytes themselves.
    pub mime: String,
    pub bytes: Vec<u8>,
    /// ms since the Unix epoch.
    pub changed_at: i64,
}

/// A user's roaming profile; the default is an empty one.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Profile {
    pub psm: String,
    /// ms since the Unix epoch; 0 when never set.
    pub psm_changed_at: i64,
    pub tile: Option<Tile>,
}

/// A change to the profile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProfileEdit {
    /// Set the personal message (cut to [`MAX_PSM_CHARS`]); empty clears it.
    Psm(String),
    /// Set the display picture (`mime`, bytes), or remove it.
    Tile(Option<(String, Vec<u8>)>),
}

/// Why a profile change was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum ProfileRefused {
    #[error("the picture is larger than {MAX_TILE_BYTES} bytes")]
    TileTooLarge,
    #[error("the picture is not a PNG, JPEG, GIF or BMP image")]
    NotAnImage,
}

impl ProfileEdit {
    /// The edit as stored: the message cut to length, the picture checked.
    pub fn validated(self) -> Result<ProfileEdit, ProfileRefused> {
        match self {
            ProfileEdit::Psm(psm) => {
                Ok(ProfileEdit::Psm(psm.chars().take(MAX_PSM_CHARS).collect()))
            }
            ProfileEdit::Tile(None) => Ok(ProfileEdit::Tile(None)),
            ProfileEdit::Tile(Some((_, bytes))) => {
                if bytes.len() > MAX_TILE_BYTES {
                    return Err(ProfileRefused::TileTooLarge);
                }
                let mime = sniff(&bytes).ok_or(ProfileRefused::NotAnImage)?;
                Ok(ProfileEdit::Tile(Some((mime.to_owned(), bytes))))
            }
        }
    }
}

/// The image type by its magic bytes (clients always claim PNG).
pub fn sniff(bytes: &[u8]) -> Option<&'static str> {
    if bytes.starts_with(b"\x89PNG\r\n\x1a\n") {
        Some("image/png")
    } else if bytes.starts_with(&[0xFF, 0xD8, 0xFF]) {
        Some("image/jpeg")
    } else if bytes.starts_with(b"GIF87a") || bytes.starts_with(b"GIF89a") {
        Some("image/gif")
    } else if bytes.starts_with(b"BM") {
        Some("image/bmp")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn edits_are_checked() {
        let png = b"\x89PNG\r\n\x1a\nrest".to_vec();
        assert_eq!(
            ProfileEdit::Tile(Some(("image/gif".into(), png.clone()))).validated(),
            Ok(ProfileEdit::Tile(Some(("image/png".into(), png))))
        );
        assert_eq!(
            ProfileEdit::Tile(Some(("image/png".into(), b"hello".to_vec()))).validated(),
            Err(ProfileRefused::NotAnImage)
        );
        let big = [b"GIF89a".to_vec(), vec![0; MAX_TILE_BYTES]].concat();
        assert_eq!(
            ProfileEdit::Tile(Some(("image/gif".into(), big))).validated(),
            Err(ProfileRefused::TileTooLarge)
        );
        let long = "é".repeat(MAX_PSM_CHARS + 10);
        let ProfileEdit::Psm(cut) = ProfileEdit::Psm(long).validated().unwrap() else {
            unreachable!()
        };
        assert_eq!(cut.chars().count(), MAX_PSM_CHARS);
    }
}
