//! Conversions between domain values and what the databases store (the row readers at
//! the end are SQLite's; Postgres reads typed records and shares the checks).
//!
//! Values read back are checked, not trusted: a row the domain types cannot represent (an
//! unknown privacy code, a malformed GUID) surfaces as a [`StoreError::Backend`] naming the
//! column, rather than a panic or a silently different value.

use std::borrow::Cow;
use std::fmt::Display;

use butterfly_core::account::{Account, Email, LegacyMd5, UserId};
use butterfly_core::lists::{Contact, Group, Gtc, ListMask, PeerView, Privacy, TombstoneKind};
use butterfly_core::store::StoreError;
use sqlx::Row;
use sqlx::sqlite::SqliteRow;
use uuid::Uuid;

/// Any database failure. `StoreError` lives in core, which knows no sqlx, so there is no
/// `From` impl to lean on.
pub(crate) fn backend(e: impl Display) -> StoreError {
    StoreError::Backend(e.to_string())
}

fn corrupt(column: &str, value: impl Display) -> StoreError {
    StoreError::Backend(format!("unreadable value in {column}: {value}"))
}

pub(crate) fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T, StoreError>
where
    T: sqlx::Decode<'r, sqlx::Sqlite> + sqlx::Type<sqlx::Sqlite>,
{
    row.try_get(column).map_err(backend)
}

pub(crate) fn email(column: &str, s: &str) -> Result<Email, StoreError> {
    Email::parse(s).map_err(|_| corrupt(column, s))
}

pub(crate) fn guid(column: &str, s: &str) -> Result<Uuid, StoreError> {
    Uuid::parse_str(s).map_err(|_| corrupt(column, s))
}

/// GUIDs are stored as lower-case hyphenated text: readable in the `sqlite3` shell, and
/// the form MSNP10+ clients send.
pub(crate) fn guid_text(g: Uuid) -> String {
    g.hyphenated().to_string()
}

pub(crate) fn mask(column: &str, v: i64) -> Result<ListMask, StoreError> {
    u8::try_from(v)
        .map(ListMask)
        .map_err(|_| corrupt(column, v))
}

pub(crate) fn group_number(column: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(column, v))
}

pub(crate) fn version(column: &str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| corrupt(column, v))
}

pub(crate) fn privacy(column: &str, s: &str) -> Result<Privacy, StoreError> {
    Privacy::parse(s).ok_or_else(|| corrupt(column, s))
}

pub(crate) fn gtc(column: &str, s: &str) -> Result<Gtc, StoreError> {
    Gtc::parse(s).ok_or_else(|| corrupt(column, s))
}

/// A JSON value a roster statement folded rows into (`lists::load_roster` of either
/// backend), decoded; `what` names the rows in the error.
pub(crate) fn json<'a, T: serde::Deserialize<'a>>(
    what: &str,
    text: &'a str,
) -> Result<T, StoreError> {
    serde_json::from_str(text).map_err(|e| corrupt(what, e))
}

/// One `list_groups` row as a roster statement folds it: `[number, guid, name, changed_at]`.
#[derive(serde::Deserialize)]
pub(crate) struct GroupRow<'a>(i64, #[serde(borrow)] Cow<'a, str>, String, i64);

impl GroupRow<'_> {
    pub(crate) fn into_group(self) -> Result<Group, StoreError> {
        let GroupRow(number, guid_text, name, changed_at) = self;
        Ok(Group {
            number: group_number("list_groups.number", number)?,
            guid: guid("list_groups.guid", &guid_text)?,
            name,
            changed_at,
        })
    }
}

/// One contact as a roster statement folds it: `[contact, email, friendly_name, nickname,
/// guid, lists, changed_at, the contact's privacy, the contact's lists of the owner,
/// [group numbers]]`.
#[derive(serde::Deserialize)]
pub(crate) struct ContactRow<'a>(
    i64,
    // Only parsed, so borrowed from the JSON text where it has no escapes.
    #[serde(borrow)] Cow<'a, str>,
    String,
    Option<String>,
    #[serde(borrow)] Cow<'a, str>,
    i64,
    i64,
    #[serde(borrow)] Cow<'a, str>,
    i64,
    Vec<i64>,
);

impl ContactRow<'_> {
    pub(crate) fn into_contact(self) -> Result<Contact, StoreError> {
        let ContactRow(
            user,
            email_text,
            friendly_name,
            nickname,
            guid_text,
            lists,
            changed_at,
            peer_privacy,
            peer_lists,
            groups,
        ) = self;
        Ok(Contact {
            user: UserId(user),
            email: email("users.email", &email_text)?,
            friendly_name,
            nickname,
            guid: guid("contacts.guid", &guid_text)?,
            lists: mask("contacts.lists", lists)?,
            groups: groups
                .into_iter()
                .map(|n| group_number("contact_groups.number", n))
                .collect::<Result<_, _>>()?,
            peer: PeerView {
                privacy: privacy("users.privacy", &peer_privacy)?,
                lists_of_me: mask("contacts.lists", peer_lists)?,
            },
            changed_at,
        })
    }
}

/// `ab_tombstones.kind` as stored.
pub(crate) fn kind_text(k: TombstoneKind) -> &'static str {
    match k {
        TombstoneKind::Contact => "contact",
        TombstoneKind::Group => "group",
    }
}

pub(crate) fn tombstone_kind(column: &str, s: &str) -> Result<TombstoneKind, StoreError> {
    match s {
        "contact" => Ok(TombstoneKind::Contact),
        "group" => Ok(TombstoneKind::Group),
        _ => Err(corrupt(column, s)),
    }
}

/// The columns [`account`] reads, for `SELECT {ACCOUNT_COLUMNS} FROM users`.
pub(crate) const ACCOUNT_COLUMNS: &str =
    "id, email, friendly_name, password_hash, md5_salt, md5_hash";

pub(crate) fn account(row: &SqliteRow) -> Result<Account, StoreError> {
    let salt: Option<String> = get(row, "md5_salt")?;
    let hash: Option<String> = get(row, "md5_hash")?;
    Ok(Account {
        id: UserId(get(row, "id")?),
        email: email("users.email", get(row, "email")?)?,
        friendly_name: get(row, "friendly_name")?,
        password_hash: get(row, "password_hash")?,
        // The schema keeps both or neither.
        legacy_md5: match (salt, hash) {
            (Some(salt), Some(hash)) => Some(LegacyMd5 { salt, hash }),
            _ => None,
        },
    })
}

/// An OIM's text length as listings report it.
pub(crate) fn oim_size(column: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(column, v))
}

/// `oims.seq`: the sender's `X-OIM-Sequence-Num`.
pub(crate) fn oim_seq(column: &str, v: i64) -> Result<u32, StoreError> {
    u32::try_from(v).map_err(|_| corrupt(column, v))
}
