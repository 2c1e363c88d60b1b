//! Loading a roster and writing the [`Mutation`]s of a checked [`Plan`](butterfly_core::lists::Plan).
//!
//! Every function takes the connection of a transaction the caller owns: `edit` loads and
//! writes inside one `BEGIN IMMEDIATE`, `roster` reads inside one snapshot. No rules here;
//! they are all in [`butterfly_core::lists::apply`].

use std::collections::HashMap;

use butterfly_core::account::{Email, UserId};
use butterfly_core::lists::{
    Contact, Group, List, ListMask, Mutation, PeerView, Privacy, Roster, Target,
};
use butterfly_core::store::StoreError;
use sqlx::SqliteConnection;
use uuid::Uuid;

use crate::codec::{self, backend, get};

/// The owner's lists and settings, or `None` when there is no such account.
///
/// Five queries whatever the list length: the user row, groups, contacts (joined with each
/// contact's account for the current friendly name and privacy, and with the contact's row
/// about the owner for the peer view), group memberships, properties.
pub(crate) async fn load_roster(
    conn: &mut SqliteConnection,
    owner: UserId,
) -> Result<Option<Roster>, StoreError> {
    let Some(user) =
        sqlx::query("SELECT friendly_name, privacy, gtc, list_version FROM users WHERE id = ?")
            .bind(owner.0)
            .fetch_optional(&mut *conn)
            .await
            .map_err(backend)?
    else {
        return Ok(None);
    };

    let groups =
        sqlx::query("SELECT number, guid, name FROM list_groups WHERE owner = ? ORDER BY number")
            .bind(owner.0)
            .fetch_all(&mut *conn)
            .await
            .map_err(backend)?
            .iter()
            .map(|row| {
                Ok(Group {
                    number: codec::group_number("list_groups.number", get(row, "number")?)?,
                    guid: codec::guid("list_groups.guid", get(row, "guid")?)?,
                    name: get(row, "name")?,
                })
            })
            .collect::<Result<Vec<_>, StoreError>>()?;

    let mut memberships: HashMap<i64, Vec<u32>> = HashMap::new();
    for row in sqlx::query(
        "SELECT contact, number FROM contact_groups WHERE owner = ? ORDER BY contact, number",
    )
    .bind(owner.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    {
        let number = codec::group_number("contact_groups.number", get(&row, "number")?)?;
        memberships
            .entry(get(&row, "contact")?)
            .or_default()
            .push(number);
    }

    let contacts = sqlx::query(
        "SELECT c.contact, u.email, u.friendly_name, c.nickname, c.guid, c.lists, \
                u.privacy AS peer_privacy, COALESCE(r.lists, 0) AS peer_lists \
         FROM contacts c \
         JOIN users u ON u.id = c.contact \
         LEFT JOIN contacts r ON r.owner = c.contact AND r.contact = c.owner \
         WHERE c.owner = ? \
         ORDER BY u.email",
    )
    .bind(owner.0)
    .fetch_all(&mut *conn)
    .await
    .map_err(backend)?
    .iter()
    .map(|row| {
        let user: i64 = get(row, "contact")?;
        Ok(Contact {
            user: UserId(user),
            email: codec::email("users.email", get(row, "email")?)?,
            friendly_name: get(row, "friendly_name")?,
            nickname: get(row, "nickname")?,
            guid: codec::guid("contacts.guid", get(row, "guid")?)?,
            lists: codec::mask("contacts.lists", get(row, "lists")?)?,
            groups: memberships.remove(&user).unwrap_or_default(),
            peer: PeerView {
                privacy: codec::privacy("users.privacy", get(row, "peer_privacy")?)?,
                lists_of_me: codec::mask("contacts.lists", get(row, "peer_lists")?)?,
            },
        })
    })
    .collect::<Result<Vec<_>, StoreError>>()?;

    let properties = sqlx::query("SELECT key, value FROM properties WHERE owner = ? ORDER BY key")
        .bind(owner.0)
        .fetch_all(&mut *conn)
        .await
        .map_err(backend)?
        .iter()
        .map(|row| Ok((get(row, "key")?, get(row, "value")?)))
        .collect::<Result<Vec<_>, StoreError>>()?;

    Ok(Some(Roster {
        owner: Some(owner),
        version: codec::version("users.list_version", get(&user, "list_version")?)?,
        friendly_name: get(&user, "friendly_name")?,
        privacy: codec::privacy("users.privacy", get(&user, "privacy")?)?,
        gtc: codec::gtc("users.gtc", get(&user, "gtc")?)?,
        groups,
        contacts,
        properties,
    }))
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

/// Write one mutation of `owner`'s plan.
pub(crate) async fn write(
    conn: &mut SqliteConnection,
    owner: UserId,
    m: &Mutation,
) -> Result<(), StoreError> {
    match m {
        Mutation::PutContact(c) => put_contact(conn, owner, c).await,
        Mutation::DeleteContact(user) => {
            // Group memberships go with it (ON DELETE CASCADE).
            exec(
                conn,
                sqlx::query("DELETE FROM contacts WHERE owner = ? AND contact = ?")
                    .bind(owner.0)
                    .bind(user.0),
            )
            .await
        }
        Mutation::SetReverse { target, on } => set_reverse(conn, owner, *target, *on).await,
        Mutation::PutGroup(g) => {
            exec(
                conn,
                sqlx::query(
                    "INSERT INTO list_groups (owner, number, guid, name) VALUES (?, ?, ?, ?) \
                     ON CONFLICT (owner, number) DO UPDATE SET guid = excluded.guid, name = excluded.name",
                )
                .bind(owner.0)
                .bind(i64::from(g.number))
                .bind(codec::guid_text(g.guid))
                .bind(&g.name),
            )
            .await
        }
        Mutation::DeleteGroup(number) => {
            exec(
                conn,
                sqlx::query("DELETE FROM list_groups WHERE owner = ? AND number = ?")
                    .bind(owner.0)
                    .bind(i64::from(*number)),
            )
            .await
        }
        Mutation::SetPrivacy(p) => {
            exec(
                conn,
                sqlx::query("UPDATE users SET privacy = ? WHERE id = ?")
                    .bind(p.code())
                    .bind(owner.0),
            )
            .await
        }
        Mutation::SetGtc(g) => {
            exec(
                conn,
                sqlx::query("UPDATE users SET gtc = ? WHERE id = ?")
                    .bind(g.code())
                    .bind(owner.0),
            )
            .await
        }
        Mutation::SetFriendlyName(name) => {
            exec(
                conn,
                sqlx::query("UPDATE users SET friendly_name = ? WHERE id = ?")
                    .bind(name)
                    .bind(owner.0),
            )
            .await
        }
        Mutation::SetProperty { key, value } if value.is_empty() => {
            exec(
                conn,
                sqlx::query("DELETE FROM properties WHERE owner = ? AND key = ?")
                    .bind(owner.0)
                    .bind(key),
            )
            .await
        }
        Mutation::SetProperty { key, value } => {
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
            .await
        }
    }
}

/// Bump a user's list version; returns the new value.
pub(crate) async fn bump_version(
    conn: &mut SqliteConnection,
    user: UserId,
) -> Result<u64, StoreError> {
    let v: i64 = sqlx::query_scalar(
        "UPDATE users SET list_version = list_version + 1 WHERE id = ? RETURNING list_version",
    )
    .bind(user.0)
    .fetch_one(&mut *conn)
    .await
    .map_err(backend)?;
    codec::version("users.list_version", v)
}

/// Upsert the owner's row for the contact and replace its group memberships.
async fn put_contact(
    conn: &mut SqliteConnection,
    owner: UserId,
    c: &Contact,
) -> Result<(), StoreError> {
    exec(
        conn,
        sqlx::query(
            "INSERT INTO contacts (owner, contact, guid, lists, nickname) VALUES (?, ?, ?, ?, ?) \
             ON CONFLICT (owner, contact) DO UPDATE \
             SET guid = excluded.guid, lists = excluded.lists, nickname = excluded.nickname",
        )
        .bind(owner.0)
        .bind(c.user.0)
        .bind(codec::guid_text(c.guid))
        .bind(i64::from(c.lists.0))
        .bind(&c.nickname),
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

/// Set or clear RL on `target`'s row about `owner`, and bump `target`'s list version.
///
/// Only the RL bit is touched, with SQL arithmetic on the current row, so the target's own
/// bits (FL, AL, BL, groups, nickname) are kept whatever they are now. The row is created
/// with a fresh GUID when missing, and deleted when RL was all that held it.
async fn set_reverse(
    conn: &mut SqliteConnection,
    owner: UserId,
    target: UserId,
    on: bool,
) -> Result<(), StoreError> {
    let rl = i64::from(List::Reverse.bit());
    if on {
        exec(
            conn,
            sqlx::query(
                "INSERT INTO contacts (owner, contact, guid, lists) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (owner, contact) DO UPDATE SET lists = lists | excluded.lists",
            )
            .bind(target.0)
            .bind(owner.0)
            .bind(codec::guid_text(Uuid::new_v4()))
            .bind(rl),
        )
        .await?;
    } else {
        exec(
            conn,
            sqlx::query(
                "DELETE FROM contacts WHERE owner = ? AND contact = ? AND (lists & ~?) = 0",
            )
            .bind(target.0)
            .bind(owner.0)
            .bind(rl),
        )
        .await?;
        exec(
            conn,
            sqlx::query("UPDATE contacts SET lists = lists & ~? WHERE owner = ? AND contact = ?")
                .bind(rl)
                .bind(target.0)
                .bind(owner.0),
        )
        .await?;
    }
    bump_version(conn, target).await.map(drop)
}

async fn exec<'q>(
    conn: &mut SqliteConnection,
    q: sqlx::query::Query<'q, sqlx::Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
) -> Result<(), StoreError> {
    q.execute(&mut *conn).await.map(drop).map_err(backend)
}
