//! Loading a roster and writing the [`Mutation`]s of a checked [`Plan`](butterfly_core::lists::Plan).
//!
//! Every function takes the connection of a transaction the caller owns: `edit` loads and
//! writes inside one `BEGIN IMMEDIATE`, `roster` reads inside one snapshot. No rules here;
//! they are all in [`butterfly_core::lists::apply`].
//!
//! Change stamps: [`bump`] advances a user's counter (with the list version); [`write`]
//! stamps every row it writes with the stamp it is given, and a deleted contact row or
//! group leaves a tombstone in the same transaction.

use butterfly_core::account::{Email, UserId};
use butterfly_core::lists::{
    Contact, List, ListMask, Mutation, PeerView, Privacy, Roster, Target, Tombstone, TombstoneKind,
};
use butterfly_core::store::StoreError;
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::codec::{self, backend, get};
use crate::{PURGE_BATCH, purge_cutoff};

/// The owner's lists and settings, or `None` when there is no such account.
///
/// One statement whatever the list length: the user row, with its groups, contacts (joined
/// with each contact's account for the current friendly name and privacy, with the
/// contact's row about the owner for the peer view, and with their group memberships) and
/// properties each folded into a JSON array. Sign-in reads a roster, and sqlx runs every
/// SQLite statement on the connection's thread and hands each result row back through a
/// channel: five statements and a row per contact cost more in thread hand-offs than the
/// reading itself (docs/BENCHMARKS.md §4.3). One statement is also one snapshot, so
/// `roster` needs no transaction.
pub(crate) async fn load_roster(
    conn: &mut SqliteConnection,
    owner: UserId,
) -> Result<Option<Roster>, StoreError> {
    // `json(…)` around each subquery keeps its result JSON (not a string) inside the
    // enclosing array; aggregate ORDER BY needs SQLite 3.44 (the bundled one is 3.46).
    let Some(row) = sqlx::query(
        "SELECT u.friendly_name, u.privacy, u.gtc, u.list_version, u.ab_stamp, \
                u.settings_changed_at, \
           (SELECT json_group_array(json_array(g.number, g.guid, g.name, g.changed_at) \
                                    ORDER BY g.number) \
              FROM list_groups g WHERE g.owner = u.id) AS groups, \
           (SELECT json_group_array(json_array( \
                     c.contact, p.email, p.friendly_name, c.nickname, c.guid, c.lists, \
                     c.changed_at, p.privacy, COALESCE(r.lists, 0), \
                     json((SELECT json_group_array(m.number ORDER BY m.number) \
                             FROM contact_groups m \
                            WHERE m.owner = c.owner AND m.contact = c.contact))) \
                   ORDER BY p.email) \
              FROM contacts c \
              JOIN users p ON p.id = c.contact \
              LEFT JOIN contacts r ON r.owner = c.contact AND r.contact = c.owner \
             WHERE c.owner = u.id) AS contacts, \
           (SELECT json_group_array(json_array(key, value) ORDER BY key) \
              FROM properties WHERE owner = u.id) AS properties \
         FROM users u WHERE u.id = ?",
    )
    .bind(owner.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?
    else {
        return Ok(None);
    };
    let json = |column: &str| -> Result<String, StoreError> { get(&row, column) };

    let groups = codec::json::<Vec<codec::GroupRow>>("list_groups", &json("groups")?)?
        .into_iter()
        .map(|g| g.into_group())
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut contacts = codec::json::<Vec<codec::ContactRow>>("contacts", &json("contacts")?)?
        .into_iter()
        .map(|c| c.into_contact())
        .collect::<Result<Vec<_>, StoreError>>()?;
    // The collect reuses the decoder's buffer, grown by doubling; a session keeps its
    // roster for as long as it is signed in.
    contacts.shrink_to_fit();
    let properties = codec::json::<Vec<(String, String)>>("properties", &json("properties")?)?;

    Ok(Some(Roster {
        owner: Some(owner),
        version: codec::version("users.list_version", get(&row, "list_version")?)?,
        friendly_name: get(&row, "friendly_name")?,
        privacy: codec::privacy("users.privacy", get(&row, "privacy")?)?,
        gtc: codec::gtc("users.gtc", get(&row, "gtc")?)?,
        groups,
        contacts,
        properties,
        stamp: get(&row, "ab_stamp")?,
        settings_changed_at: get(&row, "settings_changed_at")?,
    }))
}

/// The owner's tombstones stamped after `since`, oldest first.
pub(crate) async fn tombstones(
    conn: &mut SqliteConnection,
    owner: UserId,
    since: i64,
) -> Result<Vec<Tombstone>, StoreError> {
    sqlx::query(
        "SELECT kind, guid, email, deleted_at FROM ab_tombstones \
         WHERE owner = ? AND deleted_at > ? ORDER BY deleted_at, kind, guid",
    )
    .bind(owner.0)
    .bind(since)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .iter()
    .map(|row| {
        let email: Option<String> = get(row, "email")?;
        Ok(Tombstone {
            kind: codec::tombstone_kind("ab_tombstones.kind", get(row, "kind")?)?,
            guid: codec::guid("ab_tombstones.guid", get(row, "guid")?)?,
            email: email
                .map(|e| codec::email("ab_tombstones.email", &e))
                .transpose()?,
            deleted_at: get(row, "deleted_at")?,
        })
    })
    .collect()
}

/// How `owner` treats `viewer`. An account that does not exist (deleted meanwhile) lets
/// nobody see it: `BLP BL` with no lists, so a stale id fails closed.
pub(crate) async fn peer_view(
    conn: &mut SqliteConnection,
    owner: UserId,
    viewer: UserId,
) -> Result<PeerView, StoreError> {
    let row = sqlx::query(
        "SELECT u.privacy, COALESCE(c.lists, 0) AS lists \
         FROM users u LEFT JOIN contacts c ON c.owner = u.id AND c.contact = ? \
         WHERE u.id = ?",
    )
    .bind(viewer.0)
    .bind(owner.0)
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    match row {
        Some(row) => Ok(PeerView {
            privacy: codec::privacy("users.privacy", get(&row, "privacy")?)?,
            lists_of_me: codec::mask("contacts.lists", get(&row, "lists")?)?,
        }),
        None => Ok(PeerView {
            privacy: Privacy::BlockAll,
            lists_of_me: ListMask::default(),
        }),
    }
}

/// Resolve a sign-in name for an Add: the account, and how it treats `me`.
pub(crate) async fn resolve_target(
    conn: &mut SqliteConnection,
    me: UserId,
    email: &Email,
) -> Result<Option<Target>, StoreError> {
    let row = sqlx::query(
        "SELECT u.id, u.email, u.friendly_name, u.privacy, COALESCE(c.lists, 0) AS lists \
         FROM users u LEFT JOIN contacts c ON c.owner = u.id AND c.contact = ? \
         WHERE u.email = ?",
    )
    .bind(me.0)
    .bind(email.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(backend)?;
    let Some(row) = row else { return Ok(None) };
    Ok(Some(Target {
        user: UserId(get(&row, "id")?),
        email: codec::email("users.email", get(&row, "email")?)?,
        friendly_name: get(&row, "friendly_name")?,
        peer: PeerView {
            privacy: codec::privacy("users.privacy", get(&row, "privacy")?)?,
            lists_of_me: codec::mask("contacts.lists", get(&row, "lists")?)?,
        },
    }))
}

/// Write one mutation of `owner`'s plan, stamping what it writes with `stamp` (the owner's,
/// from [`bump`]); `now` is the edit's clock reading, for other users' stamps and the
/// tombstone purge.
pub(crate) async fn write(
    conn: &mut SqliteConnection,
    owner: UserId,
    stamp: i64,
    now: i64,
    m: &Mutation,
) -> Result<(), StoreError> {
    match m {
        Mutation::PutContact(c) => put_contact(conn, owner, c, stamp).await,
        Mutation::DeleteContact(user) => {
            delete_contact_row(conn, owner, *user, 0, stamp, now).await
        }
        Mutation::SetReverse { target, on } => set_reverse(conn, owner, *target, *on, now).await,
        Mutation::PutGroup(g) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT INTO list_groups (owner, number, guid, name, changed_at) \
                     VALUES (?, ?, ?, ?, ?) \
                     ON CONFLICT (owner, number) DO UPDATE SET guid = excluded.guid, \
                     name = excluded.name, changed_at = excluded.changed_at",
                )
                .bind(owner.0)
                .bind(i64::from(g.number))
                .bind(codec::guid_text(g.guid))
                .bind(&g.name)
                .bind(stamp),
            )
            .await
        }
        Mutation::DeleteGroup(number) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
                     SELECT owner, ?, guid, NULL, ? FROM list_groups \
                     WHERE owner = ? AND number = ? \
                     ON CONFLICT (owner, kind, guid) DO UPDATE \
                     SET deleted_at = excluded.deleted_at",
                )
                .bind(codec::kind_text(TombstoneKind::Group))
                .bind(stamp)
                .bind(owner.0)
                .bind(i64::from(*number)),
            )
            .await?;
            exec(
                conn,
                sqlx::query("DELETE FROM list_groups WHERE owner = ? AND number = ?")
                    .bind(owner.0)
                    .bind(i64::from(*number)),
            )
            .await?;
            purge_tombstones(conn, owner, now).await
        }
        Mutation::SetPrivacy(p) => {
            exec(
                conn,
                sqlx::query("UPDATE users SET privacy = ?, settings_changed_at = ? WHERE id = ?")
                    .bind(p.code())
                    .bind(stamp)
                    .bind(owner.0),
            )
            .await
        }
        Mutation::SetGtc(g) => {
            exec(
                conn,
                sqlx::query("UPDATE users SET gtc = ?, settings_changed_at = ? WHERE id = ?")
                    .bind(g.code())
                    .bind(stamp)
                    .bind(owner.0),
            )
            .await
        }
        Mutation::SetFriendlyName(name) => {
            exec(
                conn,
                sqlx::query(
                    "UPDATE users SET friendly_name = ?, settings_changed_at = ? WHERE id = ?",
                )
                .bind(name)
                .bind(stamp)
                .bind(owner.0),
            )
            .await
        }
        Mutation::SetProperty { key, value } => {
            if value.is_empty() {
                exec(
                    conn,
                    sqlx::query("DELETE FROM properties WHERE owner = ? AND key = ?")
                        .bind(owner.0)
                        .bind(key),
                )
                .await?;
            } else {
                exec(
                    conn,
                    sqlx::query(
                        "INSERT INTO properties (owner, key, value) VALUES (?, ?, ?) \
                         ON CONFLICT (owner, key) DO UPDATE SET value = excluded.value",
                    )
                    .bind(owner.0)
                    .bind(key)
                    .bind(value),
                )
                .await?;
            }
            settings_changed(conn, owner, stamp).await
        }
    }
}

/// Bump a user's list version and change stamp (`max(now, stamp + 1)`, so it strictly
/// increases even within one millisecond or when the clock steps back); returns both.
pub(crate) async fn bump(
    conn: &mut SqliteConnection,
    user: UserId,
    now: i64,
) -> Result<(u64, i64), StoreError> {
    let row = sqlx::query(
        "UPDATE users SET list_version = list_version + 1, ab_stamp = MAX(?, ab_stamp + 1) \
         WHERE id = ? RETURNING list_version, ab_stamp",
    )
    .bind(now)
    .bind(user.0)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    Ok((
        codec::version("users.list_version", get(&row, "list_version")?)?,
        get(&row, "ab_stamp")?,
    ))
}

/// Properties are settings too (the "Me" contact).
async fn settings_changed(
    conn: &mut SqliteConnection,
    owner: UserId,
    stamp: i64,
) -> Result<(), StoreError> {
    exec(
        conn,
        sqlx::query("UPDATE users SET settings_changed_at = ? WHERE id = ?")
            .bind(stamp)
            .bind(owner.0),
    )
    .await
}

/// Delete `owner`'s row about `contact` — only if it holds none of the lists in `unless`
/// (0: whatever it holds) — leaving a tombstone stamped `stamp` (the owner's), and purge
/// the owner's expired tombstones. Group memberships go with the row (ON DELETE CASCADE).
async fn delete_contact_row(
    conn: &mut SqliteConnection,
    owner: UserId,
    contact: UserId,
    unless: i64,
    stamp: i64,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        conn,
        sqlx::query(
            "INSERT INTO ab_tombstones (owner, kind, guid, email, deleted_at) \
             SELECT c.owner, ?, c.guid, u.email, ? \
             FROM contacts c JOIN users u ON u.id = c.contact \
             WHERE c.owner = ? AND c.contact = ? AND (c.lists & ?) = 0 \
             ON CONFLICT (owner, kind, guid) DO UPDATE \
             SET email = excluded.email, deleted_at = excluded.deleted_at",
        )
        .bind(codec::kind_text(TombstoneKind::Contact))
        .bind(stamp)
        .bind(owner.0)
        .bind(contact.0)
        .bind(unless),
    )
    .await?;
    exec(
        conn,
        sqlx::query("DELETE FROM contacts WHERE owner = ? AND contact = ? AND (lists & ?) = 0")
            .bind(owner.0)
            .bind(contact.0)
            .bind(unless),
    )
    .await?;
    purge_tombstones(conn, owner, now).await
}

/// Drop up to [`PURGE_BATCH`] of the owner's tombstones past the retention: bounded work
/// per deletion, and more than one deletion adds, so the backlog cannot grow.
async fn purge_tombstones(
    conn: &mut SqliteConnection,
    owner: UserId,
    now: i64,
) -> Result<(), StoreError> {
    exec(
        conn,
        sqlx::query(
            "DELETE FROM ab_tombstones WHERE owner = ?1 AND (kind, guid) IN \
             (SELECT kind, guid FROM ab_tombstones WHERE owner = ?1 AND deleted_at < ?2 \
              ORDER BY deleted_at LIMIT ?3)",
        )
        .bind(owner.0)
        .bind(purge_cutoff(now))
        .bind(PURGE_BATCH),
    )
    .await
}

/// Upsert the owner's row for the contact, stamped `stamp`, and replace its group
/// memberships.
async fn put_contact(
    conn: &mut SqliteConnection,
    owner: UserId,
    c: &Contact,
    stamp: i64,
) -> Result<(), StoreError> {
    exec(
        conn,
        sqlx::query(
            "INSERT INTO contacts (owner, contact, guid, lists, nickname, changed_at) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT (owner, contact) DO UPDATE \
             SET guid = excluded.guid, lists = excluded.lists, nickname = excluded.nickname, \
                 changed_at = excluded.changed_at",
        )
        .bind(owner.0)
        .bind(c.user.0)
        .bind(codec::guid_text(c.guid))
        .bind(i64::from(c.lists.0))
        .bind(&c.nickname)
        .bind(stamp),
    )
    .await?;
    exec(
        conn,
        sqlx::query("DELETE FROM contact_groups WHERE owner = ? AND contact = ?")
            .bind(owner.0)
            .bind(c.user.0),
    )
    .await?;
    for number in &c.groups {
        exec(
            conn,
            sqlx::query("INSERT INTO contact_groups (owner, contact, number) VALUES (?, ?, ?)")
                .bind(owner.0)
                .bind(c.user.0)
                .bind(i64::from(*number)),
        )
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
    conn: &mut SqliteConnection,
    owner: UserId,
    target: UserId,
    on: bool,
    now: i64,
) -> Result<(), StoreError> {
    let (_, stamp) = bump(conn, target, now).await?;
    let rl = i64::from(List::Reverse.bit());
    if on {
        exec(
            conn,
            sqlx::query(
                "INSERT INTO contacts (owner, contact, guid, lists, changed_at) \
                 VALUES (?, ?, ?, ?, ?) \
                 ON CONFLICT (owner, contact) DO UPDATE \
                 SET lists = lists | excluded.lists, changed_at = excluded.changed_at",
            )
            .bind(target.0)
            .bind(owner.0)
            .bind(codec::guid_text(Uuid::new_v4()))
            .bind(rl)
            .bind(stamp),
        )
        .await
    } else {
        delete_contact_row(conn, target, owner, !rl, stamp, now).await?;
        exec(
            conn,
            sqlx::query(
                "UPDATE contacts SET lists = lists & ~?, changed_at = ? \
                 WHERE owner = ? AND contact = ?",
            )
            .bind(rl)
            .bind(stamp)
            .bind(target.0)
            .bind(owner.0),
        )
        .await
    }
}

async fn exec<'q>(
    conn: &mut SqliteConnection,
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<(), StoreError> {
    q.execute(&mut *conn).await.map(drop).map_err(backend)
}
