//! Loading a roster, locking users and writing the [`Mutation`]s of a checked
//! [`Plan`](butterfly_core::lists::Plan), in Postgres.
//!
//! The statements mirror `crate::lists` (the SQLite ones) one for one, so the two stores
//! read and write the same things; only the locking is Postgres's own (see
//! [`lock_users`]). Every function takes the connection of a transaction the caller owns.
//! No rules here; they are all in [`butterfly_core::lists::apply`].
//!
//! Statements are `query!` macros, checked against the schema at build time (offline data
//! in `crates/store/.sqlx`).

use std::collections::HashMap;

use butterfly_core::account::{Email, UserId};
use butterfly_core::lists::{
    Contact, Group, List, ListMask, Mutation, PeerView, Privacy, Roster, Target,
};
use butterfly_core::store::StoreError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Failure;
use crate::codec;

/// Lock the users rows of `ids` (those that exist), waiting for other holders, in id
/// order; returns the ids locked.
///
/// Holding a user's row lock is what entitles a transaction to write that user's lists
/// (their contacts, groups, properties and version), so writers of one user take turns
/// and a roster read under the lock stays true until commit. Taking several in id order
/// keeps two writers from waiting on each other in a cycle. `FOR NO KEY UPDATE` rather
/// than `FOR UPDATE`: it excludes other writers of the user just the same, but not the
/// key-share locks that foreign-key checks take when someone else inserts a row that
/// merely points at the user.
pub(crate) async fn lock_users(conn: &mut PgConnection, ids: &[i64]) -> Result<Vec<i64>, Failure> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE",
        ids
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// [`lock_users`] for more users while already holding some: fails with SQLSTATE 55P03
/// (`lock_not_available`) instead of waiting, because waiting out of id order is how
/// deadlocks start. The caller starts over, taking them all in order.
pub(crate) async fn try_lock_users(
    conn: &mut PgConnection,
    ids: &[i64],
) -> Result<Vec<i64>, Failure> {
    Ok(sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = ANY($1) ORDER BY id FOR NO KEY UPDATE NOWAIT",
        ids
    )
    .fetch_all(&mut *conn)
    .await?)
}

/// The owner's lists and settings, or `None` when there is no such account.
///
/// Five queries whatever the list length, as in SQLite: the user row, groups, contacts
/// (joined with each contact's account and with the contact's row about the owner),
/// group memberships, properties.
pub(crate) async fn load_roster(
    conn: &mut PgConnection,
    owner: UserId,
) -> Result<Option<Roster>, Failure> {
    let Some(user) = sqlx::query!(
        "SELECT friendly_name, privacy, gtc, list_version FROM users WHERE id = $1",
        owner.0
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };

    let groups = sqlx::query!(
        "SELECT number, guid, name FROM list_groups WHERE owner = $1 ORDER BY number",
        owner.0
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| {
        Ok(Group {
            number: codec::group_number("list_groups.number", row.number.into())?,
            guid: row.guid,
            name: row.name,
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;

    let mut memberships: HashMap<i64, Vec<u32>> = HashMap::new();
    for row in sqlx::query!(
        "SELECT contact, number FROM contact_groups WHERE owner = $1 ORDER BY contact, number",
        owner.0
    )
    .fetch_all(&mut *conn)
    .await?
    {
        let number = codec::group_number("contact_groups.number", row.number.into())?;
        memberships.entry(row.contact).or_default().push(number);
    }

    let contacts = sqlx::query!(
        r#"SELECT c.contact, u.email, u.friendly_name, c.nickname, c.guid, c.lists,
                  u.privacy AS peer_privacy, COALESCE(r.lists, 0) AS "peer_lists!"
           FROM contacts c
           JOIN users u ON u.id = c.contact
           LEFT JOIN contacts r ON r.owner = c.contact AND r.contact = c.owner
           WHERE c.owner = $1
           ORDER BY u.email"#,
        owner.0
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| {
        Ok(Contact {
            user: UserId(row.contact),
            email: codec::email("users.email", &row.email)?,
            friendly_name: row.friendly_name,
            nickname: row.nickname,
            guid: row.guid,
            lists: codec::mask("contacts.lists", row.lists.into())?,
            groups: memberships.remove(&row.contact).unwrap_or_default(),
            peer: PeerView {
                privacy: codec::privacy("users.privacy", &row.peer_privacy)?,
                lists_of_me: codec::mask("contacts.lists", row.peer_lists.into())?,
            },
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;

    let properties = sqlx::query!(
        "SELECT key, value FROM properties WHERE owner = $1 ORDER BY key",
        owner.0
    )
    .fetch_all(&mut *conn)
    .await?
    .into_iter()
    .map(|row| (row.key, row.value))
    .collect();

    Ok(Some(Roster {
        owner: Some(owner),
        version: codec::version("users.list_version", user.list_version)?,
        friendly_name: user.friendly_name,
        privacy: codec::privacy("users.privacy", &user.privacy)?,
        gtc: codec::gtc("users.gtc", &user.gtc)?,
        groups,
        contacts,
        properties,
    }))
}

/// How `owner` treats `viewer`. An account that does not exist (deleted meanwhile) lets
/// nobody see it: `BLP BL` with no lists, so a stale id fails closed.
pub(crate) async fn peer_view(
    conn: &mut PgConnection,
    owner: UserId,
    viewer: UserId,
) -> Result<PeerView, Failure> {
    let row = sqlx::query!(
        r#"SELECT u.privacy, COALESCE(c.lists, 0) AS "lists!"
           FROM users u LEFT JOIN contacts c ON c.owner = u.id AND c.contact = $1
           WHERE u.id = $2"#,
        viewer.0,
        owner.0
    )
    .fetch_optional(&mut *conn)
    .await?;
    match row {
        Some(row) => Ok(PeerView {
            privacy: codec::privacy("users.privacy", &row.privacy)?,
            lists_of_me: codec::mask("contacts.lists", row.lists.into())?,
        }),
        None => Ok(PeerView {
            privacy: Privacy::BlockAll,
            lists_of_me: ListMask::default(),
        }),
    }
}

/// Resolve a sign-in name for an Add: the account, and how it treats `me`.
pub(crate) async fn resolve_target(
    conn: &mut PgConnection,
    me: UserId,
    email: &Email,
) -> Result<Option<Target>, Failure> {
    let row = sqlx::query!(
        r#"SELECT u.id, u.email, u.friendly_name, u.privacy, COALESCE(c.lists, 0) AS "lists!"
           FROM users u LEFT JOIN contacts c ON c.owner = u.id AND c.contact = $1
           WHERE u.email = $2"#,
        me.0,
        email.as_str()
    )
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Target {
        user: UserId(row.id),
        email: codec::email("users.email", &row.email)?,
        friendly_name: row.friendly_name,
        peer: PeerView {
            privacy: codec::privacy("users.privacy", &row.privacy)?,
            lists_of_me: codec::mask("contacts.lists", row.lists.into())?,
        },
    }))
}

/// Write one mutation of `owner`'s plan. The caller holds the row locks of the owner and
/// of every [`Mutation::SetReverse`] target.
pub(crate) async fn write(
    conn: &mut PgConnection,
    owner: UserId,
    m: &Mutation,
) -> Result<(), Failure> {
    match m {
        Mutation::PutContact(c) => put_contact(conn, owner, c).await?,
        Mutation::DeleteContact(user) => {
            // Group memberships go with it (ON DELETE CASCADE).
            sqlx::query!(
                "DELETE FROM contacts WHERE owner = $1 AND contact = $2",
                owner.0,
                user.0
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetReverse { target, on } => set_reverse(conn, owner, *target, *on).await?,
        Mutation::PutGroup(g) => {
            sqlx::query!(
                "INSERT INTO list_groups (owner, number, guid, name) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (owner, number) DO UPDATE SET guid = EXCLUDED.guid, name = EXCLUDED.name",
                owner.0,
                group_number(g.number)?,
                g.guid,
                g.name
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::DeleteGroup(number) => {
            sqlx::query!(
                "DELETE FROM list_groups WHERE owner = $1 AND number = $2",
                owner.0,
                group_number(*number)?
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetPrivacy(p) => {
            sqlx::query!(
                "UPDATE users SET privacy = $1 WHERE id = $2",
                p.code(),
                owner.0
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetGtc(g) => {
            sqlx::query!("UPDATE users SET gtc = $1 WHERE id = $2", g.code(), owner.0)
                .execute(&mut *conn)
                .await?;
        }
        Mutation::SetFriendlyName(name) => {
            sqlx::query!(
                "UPDATE users SET friendly_name = $1 WHERE id = $2",
                name,
                owner.0
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetProperty { key, value } if value.is_empty() => {
            sqlx::query!(
                "DELETE FROM properties WHERE owner = $1 AND key = $2",
                owner.0,
                key
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetProperty { key, value } => {
            sqlx::query!(
                "INSERT INTO properties (owner, key, value) VALUES ($1, $2, $3) \
                 ON CONFLICT (owner, key) DO UPDATE SET value = EXCLUDED.value",
                owner.0,
                key,
                value
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Bump a user's list version; returns the new value.
pub(crate) async fn bump_version(conn: &mut PgConnection, user: UserId) -> Result<u64, Failure> {
    let v = sqlx::query_scalar!(
        "UPDATE users SET list_version = list_version + 1 WHERE id = $1 RETURNING list_version",
        user.0
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok(codec::version("users.list_version", v)?)
}

/// Upsert the owner's row for the contact and replace its group memberships.
async fn put_contact(conn: &mut PgConnection, owner: UserId, c: &Contact) -> Result<(), Failure> {
    sqlx::query!(
        "INSERT INTO contacts (owner, contact, guid, lists, nickname) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (owner, contact) DO UPDATE \
         SET guid = EXCLUDED.guid, lists = EXCLUDED.lists, nickname = EXCLUDED.nickname",
        owner.0,
        c.user.0,
        c.guid,
        i32::from(c.lists.0),
        c.nickname.as_deref()
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM contact_groups WHERE owner = $1 AND contact = $2",
        owner.0,
        c.user.0
    )
    .execute(&mut *conn)
    .await?;
    for number in &c.groups {
        sqlx::query!(
            "INSERT INTO contact_groups (owner, contact, number) VALUES ($1, $2, $3)",
            owner.0,
            c.user.0,
            group_number(*number)?
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Set or clear RL on `target`'s row about `owner`, and bump `target`'s list version.
///
/// Only the RL bit is touched, with SQL arithmetic on the current row, so the target's own
/// bits (FL, AL, BL, groups, nickname) are kept whatever they are now. The row is created
/// with a fresh GUID when missing, and deleted when RL was all that held it.
async fn set_reverse(
    conn: &mut PgConnection,
    owner: UserId,
    target: UserId,
    on: bool,
) -> Result<(), Failure> {
    let rl = i32::from(List::Reverse.bit());
    if on {
        sqlx::query!(
            "INSERT INTO contacts (owner, contact, guid, lists) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (owner, contact) DO UPDATE SET lists = contacts.lists | EXCLUDED.lists",
            target.0,
            owner.0,
            Uuid::new_v4(),
            rl
        )
        .execute(&mut *conn)
        .await?;
    } else {
        sqlx::query!(
            "DELETE FROM contacts WHERE owner = $1 AND contact = $2 AND (lists & ~$3::INTEGER) = 0",
            target.0,
            owner.0,
            rl
        )
        .execute(&mut *conn)
        .await?;
        sqlx::query!(
            "UPDATE contacts SET lists = lists & ~$1::INTEGER WHERE owner = $2 AND contact = $3",
            rl,
            target.0,
            owner.0
        )
        .execute(&mut *conn)
        .await?;
    }
    bump_version(conn, target).await.map(drop)
}

/// Group numbers are small (one more than the highest in use), so they fit the INTEGER
/// column; a number that does not is refused rather than wrapped.
fn group_number(n: u32) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Backend(format!("group number {n} out of range")))
}
