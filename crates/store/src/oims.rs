//! Offline messages in SQLite (`oims`, migration 0003). Writes go through the single
//! writer connection under `BEGIN IMMEDIATE`, so the mailbox count a message is checked
//! against is the one it is added to.

use butterfly_core::account::UserId;
use butterfly_core::lists::now_ms;
use butterfly_core::oim::{MAX_OIMS_PER_RECIPIENT, Oim, OimMeta, OimNew, OimRefused};
use butterfly_core::store::StoreError;
use sqlx::sqlite::SqliteRow;
use sqlx::{SqliteConnection, SqlitePool};
use uuid::Uuid;

use crate::codec::{self, backend, get, guid_text};
use crate::readers::Readers;

const META_COLUMNS: &str =
    "id, sender, sender_name, received_at, length(CAST(body AS BLOB)) AS size, is_read";

fn meta(row: &SqliteRow) -> Result<OimMeta, StoreError> {
    Ok(OimMeta {
        id: codec::guid("oims.id", get(row, "id")?)?,
        sender: codec::email("oims.sender", get(row, "sender")?)?,
        sender_name: get(row, "sender_name")?,
        received_at: get(row, "received_at")?,
        size: codec::oim_size("oims.body", get(row, "size")?)?,
        read: get(row, "is_read")?,
    })
}

pub(crate) async fn store(
    write: &SqlitePool,
    new: OimNew,
) -> Result<Result<OimMeta, OimRefused>, StoreError> {
    let new = match new.validated() {
        Ok(new) => new,
        Err(refused) => return Ok(Err(refused)),
    };
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let exists = sqlx::query_scalar::<_, i64>("SELECT id FROM users WHERE id = ?")
        .bind(new.recipient.0)
        .fetch_optional(&mut *tx)
        .await
        .map_err(backend)?;
    if exists.is_none() {
        return Ok(Err(OimRefused::NoRecipient));
    }
    let (count, newest) = sqlx::query_as::<_, (i64, Option<i64>)>(
        "SELECT COUNT(*), MAX(received_at) FROM oims WHERE recipient = ?",
    )
    .bind(new.recipient.0)
    .fetch_one(&mut *tx)
    .await
    .map_err(backend)?;
    if count >= MAX_OIMS_PER_RECIPIENT as i64 {
        return Ok(Err(OimRefused::MailboxFull));
    }
    let received_at = newest.map_or(now_ms(), |n| now_ms().max(n + 1));
    let id = Uuid::new_v4();
    sqlx::query(
        "INSERT INTO oims (id, recipient, sender, sender_name, received_at, run_id, seq, body) \
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(guid_text(id))
    .bind(new.recipient.0)
    .bind(new.sender.as_str())
    .bind(&new.sender_name)
    .bind(received_at)
    .bind(guid_text(new.run_id))
    .bind(i64::from(new.seq))
    .bind(&new.text)
    .execute(&mut *tx)
    .await
    .map_err(backend)?;
    tx.commit().await.map_err(backend)?;
    Ok(Ok(OimMeta {
        id,
        sender: new.sender,
        size: new.text.len() as u32,
        sender_name: new.sender_name,
        received_at,
        read: false,
    }))
}

pub(crate) async fn list(
    read: &mut SqliteConnection,
    recipient: UserId,
) -> Result<Vec<OimMeta>, StoreError> {
    sqlx::query(&format!(
        "SELECT {META_COLUMNS} FROM oims WHERE recipient = ? ORDER BY received_at"
    ))
    .bind(recipient.0)
    .fetch_all(read)
    .await
    .map_err(backend)?
    .iter()
    .map(meta)
    .collect()
}

pub(crate) async fn get_one(
    read: &Readers,
    write: &SqlitePool,
    recipient: UserId,
    id: Uuid,
    mark_read: bool,
) -> Result<Option<Oim>, StoreError> {
    if mark_read {
        sqlx::query("UPDATE oims SET is_read = 1 WHERE id = ? AND recipient = ?")
            .bind(guid_text(id))
            .bind(recipient.0)
            .execute(write)
            .await
            .map_err(backend)?;
    }
    let select = format!(
        "SELECT {META_COLUMNS}, run_id, seq, body FROM oims WHERE id = ? AND recipient = ?"
    );
    let query = sqlx::query(&select).bind(guid_text(id)).bind(recipient.0);
    // After a write, read on the writer: a reader's snapshot could predate it.
    let row = if mark_read {
        query.fetch_optional(write).await
    } else {
        query.fetch_optional(&mut *read.get().await?).await
    };
    let Some(row) = row.map_err(backend)? else {
        return Ok(None);
    };
    Ok(Some(Oim {
        meta: meta(&row)?,
        run_id: codec::guid("oims.run_id", get(&row, "run_id")?)?,
        seq: codec::oim_seq("oims.seq", get(&row, "seq")?)?,
        text: get(&row, "body")?,
    }))
}

pub(crate) async fn delete(
    write: &SqlitePool,
    recipient: UserId,
    ids: &[Uuid],
) -> Result<u64, StoreError> {
    let mut tx = write.begin_with("BEGIN IMMEDIATE").await.map_err(backend)?;
    let mut deleted = 0;
    for id in ids {
        deleted += sqlx::query("DELETE FROM oims WHERE id = ? AND recipient = ?")
            .bind(guid_text(*id))
            .bind(recipient.0)
            .execute(&mut *tx)
            .await
            .map_err(backend)?
            .rows_affected();
    }
    tx.commit().await.map_err(backend)?;
    Ok(deleted)
}
