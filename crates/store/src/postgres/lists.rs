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
//!
//! Change stamps and tombstones as in SQLite: [`bump`] advances a user's counter with the
//! list version, [`write`] stamps what it writes, deletions leave tombstones.

use butterfly_core::account::{Email, UserId};
use butterfly_core::lists::{
    Contact, List, ListMask, Mutation, PeerView, Privacy, Roster, Target, Tombstone, TombstoneKind,
};
use butterfly_core::store::StoreError;
use sqlx::PgConnection;
use uuid::Uuid;

use super::Failure;
use crate::codec;
use crate::{PURGE_BATCH, purge_cutoff};

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
/// One statement whatever the list length, as in SQLite (which says why): the user row
/// with its groups, contacts (joined with each contact's account, with the contact's row
/// about the owner, and with their group memberships) and properties each folded into a
/// JSON array of the same shape SQLite's statement makes. One statement is one snapshot.
pub(crate) async fn load_roster(
    conn: &mut PgConnection,
    owner: UserId,
) -> Result<Option<Roster>, Failure> {
    // `json_agg` of no rows is NULL, not `[]`.
    let Some(row) = sqlx::query!(
        r#"SELECT u.friendly_name, u.privacy, u.gtc, u.list_version, u.ab_stamp,
                  u.settings_changed_at,
             (SELECT COALESCE(json_agg(json_build_array(g.number, g.guid, g.name, g.changed_at)
                                       ORDER BY g.number), '[]')
                FROM list_groups g WHERE g.owner = u.id)::text AS "groups!",
             (SELECT COALESCE(json_agg(json_build_array(
                       c.contact, p.email, p.friendly_name, c.nickname, c.guid, c.lists,
                       c.changed_at, p.privacy, COALESCE(r.lists, 0),
                       (SELECT COALESCE(json_agg(m.number ORDER BY m.number), '[]')
                          FROM contact_groups m
                         WHERE m.owner = c.owner AND m.contact = c.contact))
                     ORDER BY p.email), '[]')
                FROM contacts c
                JOIN users p ON p.id = c.contact
                LEFT JOIN contacts r ON r.owner = c.contact AND r.contact = c.owner
               WHERE c.owner = u.id)::text AS "contacts!",
             (SELECT COALESCE(json_agg(json_build_array(key, value) ORDER BY key), '[]')
                FROM properties WHERE owner = u.id)::text AS "properties!"
           FROM users u WHERE u.id = $1"#,
        owner.0
    )
    .fetch_optional(&mut *conn)
    .await?
    else {
        return Ok(None);
    };

    let groups = codec::json::<Vec<codec::GroupRow>>("list_groups", &row.groups)?
        .into_iter()
        .map(|g| g.into_group())
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut contacts = codec::json::<Vec<codec::ContactRow>>("contacts", &row.contacts)?
        .into_iter()
        .map(|c| c.into_contact())
        .collect::<Result<Vec<_>, StoreError>>()?;
    // As in SQLite: the collect reuses the decoder's buffer, grown by doubling.
    contacts.shrink_to_fit();
    let properties = codec::json::<Vec<(String, String)>>("properties", &row.properties)?;

    Ok(Some(Roster {
        owner: Some(owner),
        version: codec::version("users.list_version", row.list_version)?,
        friendly_name: row.friendly_name,
        privacy: codec::privacy("users.privacy", &row.privacy)?,
        gtc: codec::gtc("users.gtc", &row.gtc)?,
        groups,
        contacts,
        properties,
        stamp: row.ab_stamp,
        settings_changed_at: row.settings_changed_at,
    }))
}

/// The owner's tombstones stamped after `since`, oldest first.
pub(crate) async fn tombstones(
    conn: &mut PgConnection,
    owner: UserId,
    since: i64,
) -> Result<Vec<Tombstone>, Failure> {
    let rows = sqlx::query!(
        "SELECT kind, guid, email, deleted_at FROM ab_tombstones \
         WHERE owner = $1 AND deleted_at > $2 ORDER BY deleted_at, kind, guid",
        owner.0,
        since
    )
    .fetch_all(&mut *conn)
    .await?;
    let tombstones = rows
        .into_iter()
        .map(|row| {
            Ok(Tombstone {
                kind: codec::tombstone_kind("ab_tombstones.kind", &row.kind)?,
                guid: row.guid,
                email: row
                    .email
                    .map(|e| codec::email("ab_tombstones.email", &e))
                    .transpose()?,
                deleted_at: row.deleted_at,
            })
        })
        .collect::<Result<Vec<_>, StoreError>>()?;
    Ok(tombstones)
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

/// Write one mutation of `owner`'s plan, stamping what it writes with `stamp` (the owner's,
/// from [`bump`]); `now` is the edit's clock reading, for other users' stamps and the
/// tombstone purge. The caller holds the row locks of the owner and of every
/// [`Mutation::SetReverse`] target.
pub(crate) async fn write(
    conn: &mut PgConnection,
    owner: UserId,
    stamp: i64,
    now: i64,
    m: &Mutation,
) -> Result<(), Failure> {
    match m {
        Mutation::PutContact(c) => put_contact(conn, owner, c, stamp).await?,
        Mutation::DeleteContact(user) => {
            delete_contact_row(conn, owner, *user, 0, stamp, now).await?
        }
        Mutation::SetReverse { target, on } => set_reverse(conn, owner, *target, *on, now).await?,
        Mutation::PutGroup(g) => {
            sqlx::query!(
                "INSERT INTO list_groups (owner, number, guid, name, changed_at) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (owner, number) DO UPDATE SET guid = EXCLUDED.guid, \
                 name = EXCLUDED.name, changed_at = EXCLUDED.changed_at",
                owner.0,
                group_number(g.number)?,
                g.guid,
                g.name,
                stamp
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::DeleteGroup(number) => {
            sqlx::query!(
                "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
                 SELECT owner, $1::TEXT, guid, NULL, $2::BIGINT FROM list_groups \
                 WHERE owner = $3 AND number = $4 \
                 ON CONFLICT (owner, kind, guid) DO UPDATE \
                 SET deleted_at = EXCLUDED.deleted_at",
                codec::kind_text(TombstoneKind::Group),
                stamp,
                owner.0,
                group_number(*number)?
            )
            .execute(&mut *conn)
            .await?;
            sqlx::query!(
                "DELETE FROM list_groups WHERE owner = $1 AND number = $2",
                owner.0,
                group_number(*number)?
            )
            .execute(&mut *conn)
            .await?;
            purge_tombstones(conn, owner, now).await?;
        }
        Mutation::SetPrivacy(p) => {
            sqlx::query!(
                "UPDATE users SET privacy = $1, settings_changed_at = $2 WHERE id = $3",
                p.code(),
                stamp,
                owner.0
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetGtc(g) => {
            sqlx::query!(
                "UPDATE users SET gtc = $1, settings_changed_at = $2 WHERE id = $3",
                g.code(),
                stamp,
                owner.0
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetFriendlyName(name) => {
            sqlx::query!(
                "UPDATE users SET friendly_name = $1, settings_changed_at = $2 WHERE id = $3",
                name,
                stamp,
                owner.0
            )
            .execute(&mut *conn)
            .await?;
        }
        Mutation::SetProperty { key, value } => {
            if value.is_empty() {
                sqlx::query!(
                    "DELETE FROM properties WHERE owner = $1 AND key = $2",
                    owner.0,
                    key
                )
                .execute(&mut *conn)
                .await?;
            } else {
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
            // Properties are settings too (the "Me" contact).
            sqlx::query!(
                "UPDATE users SET settings_changed_at = $1 WHERE id = $2",
                stamp,
                owner.0
            )
            .execute(&mut *conn)
            .await?;
        }
    }
    Ok(())
}

/// Bump a user's list version and change stamp (`max(now, stamp + 1)`, so it strictly
/// increases even within one millisecond or when the clock steps back); returns both.
pub(crate) async fn bump(
    conn: &mut PgConnection,
    user: UserId,
    now: i64,
) -> Result<(u64, i64), Failure> {
    let row = sqlx::query!(
        "UPDATE users SET list_version = list_version + 1, ab_stamp = GREATEST($1, ab_stamp + 1) \
         WHERE id = $2 RETURNING list_version, ab_stamp",
        now,
        user.0
    )
    .fetch_one(&mut *conn)
    .await?;
    Ok((
        codec::version("users.list_version", row.list_version)?,
        row.ab_stamp,
    ))
}

/// Delete `owner`'s row about `contact` — only if it holds none of the lists in `unless`
/// (0: whatever it holds) — leaving a tombstone stamped `stamp` (the owner's), and purge
/// the owner's expired tombstones. Group memberships go with the row (ON DELETE CASCADE).
async fn delete_contact_row(
    conn: &mut PgConnection,
    owner: UserId,
    contact: UserId,
    unless: i32,
    stamp: i64,
    now: i64,
) -> Result<(), Failure> {
    sqlx::query!(
        "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
         SELECT c.owner, $1::TEXT, c.guid, u.email, $2::BIGINT \
         FROM contacts c JOIN users u ON u.id = c.contact \
         WHERE c.owner = $3 AND c.contact = $4 AND (c.lists & $5::INTEGER) = 0 \
         ON CONFLICT (owner, kind, guid) DO UPDATE \
         SET email = EXCLUDED.email, deleted_at = EXCLUDED.deleted_at",
        codec::kind_text(TombstoneKind::Contact),
        stamp,
        owner.0,
        contact.0,
        unless
    )
    .execute(&mut *conn)
    .await?;
    sqlx::query!(
        "DELETE FROM contacts WHERE owner = $1 AND contact = $2 AND (lists & $3::INTEGER) = 0",
        owner.0,
        contact.0,
        unless
    )
    .execute(&mut *conn)
    .await?;
    purge_tombstones(conn, owner, now).await
}

/// Drop up to [`PURGE_BATCH`] of the owner's tombstones past the retention: bounded work
/// per deletion, and more than one deletion adds, so the backlog cannot grow.
async fn purge_tombstones(conn: &mut PgConnection, owner: UserId, now: i64) -> Result<(), Failure> {
    sqlx::query!(
        "DELETE FROM ab_tombstones WHERE owner = $1 AND (kind, guid) IN \
         (SELECT kind, guid FROM ab_tombstones WHERE owner = $1 AND deleted_at < $2 \
          ORDER BY deleted_at LIMIT $3)",
        owner.0,
        purge_cutoff(now),
        PURGE_BATCH
    )
    .execute(&mut *conn)
    .await?;
    Ok(())
}

/// Upsert the owner's row for the contact, stamped `stamp`, and replace its group
/// memberships.
async fn put_contact(
    conn: &mut PgConnection,
    owner: UserId,
    c: &Contact,
    stamp: i64,
) -> Result<(), Failure> {
    sqlx::query!(
        "INSERT INTO contacts (owner, contact, guid, lists, nickname, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (owner, contact) DO UPDATE \
         SET guid = EXCLUDED.guid, lists = EXCLUDED.lists, nickname = EXCLUDED.nickname, \
             changed_at = EXCLUDED.changed_at",
        owner.0,
        c.user.0,
        c.guid,
        i32::from(c.lists.0),
        c.nickname.as_deref(),
        stamp
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

/// Set or clear RL on `target`'s row about `owner`, and bump `target`'s list version and
/// change stamp; the row is stamped with `target`'s new stamp (it is `target`'s list).
///
/// Only the RL bit is touched, with SQL arithmetic on the current row, so the target's own
/// bits (FL, AL, BL, groups, nickname) are kept whatever they are now. The row is created
/// with a fresh GUID when missing, and deleted (leaving a tombstone in `target`'s lists)
/// when RL was all that held it.
async fn set_reverse(
    conn: &mut PgConnection,
    owner: UserId,
    target: UserId,
    on: bool,
    now: i64,
) -> Result<(), Failure> {
    let (_, stamp) = bump(conn, target, now).await?;
    let rl = i32::from(List::Reverse.bit());
    if on {
        sqlx::query!(
            "INSERT INTO contacts (owner, contact, guid, lists, changed_at) \
             VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (owner, contact) DO UPDATE \
             SET lists = contacts.lists | EXCLUDED.lists, changed_at = EXCLUDED.changed_at",
            target.0,
            owner.0,
            Uuid::new_v4(),
            rl,
            stamp
        )
        .execute(&mut *conn)
        .await?;
    } else {
        delete_contact_row(conn, target, owner, !rl, stamp, now).await?;
        sqlx::query!(
            "UPDATE contacts SET lists = lists & ~$1::INTEGER, changed_at = $2 \
             WHERE owner = $3 AND contact = $4",
            rl,
            stamp,
            target.0,
            owner.0
        )
        .execute(&mut *conn)
        .await?;
    }
    Ok(())
}

/// Group numbers are small (one more than the highest in use), so they fit the INTEGER
/// column; a number that does not is refused rather than wrapped.
fn group_number(n: u32) -> Result<i32, StoreError> {
    i32::try_from(n).map_err(|_| StoreError::Backend(format!("group number {n} out of range")))
}
