//! Offline messages in Postgres (`oims`, migration 0003), mirroring `crate::oims`. A
//! message is added under the recipient's `users` row lock (as their list edits are), so
//! concurrent senders cannot both pass the mailbox cap.

use butterfly_core::account::UserId;
use butterfly_core::lists::now_ms;
use butterfly_core::oim::{MAX_OIMS_PER_RECIPIENT, Oim, OimMeta, OimNew, OimRefused};
use butterfly_core::store::StoreError;
use sqlx::PgPool;
use uuid::Uuid;

use super::Failure;
use crate::codec;

/// A row as the listing queries return it.
struct MetaRow {
    id: Uuid,
    sender: String,
    sender_name: String,
    received_at: i64,
    size: i32,
    is_read: bool,
}

impl MetaRow {
    fn into_meta(self) -> Result<OimMeta, StoreError> {
        Ok(OimMeta {
            id: self.id,
            sender: codec::email("oims.sender", &self.sender)?,
            sender_name: self.sender_name,
            received_at: self.received_at,
            size: codec::oim_size("oims.body", i64::from(self.size))?,
            read: self.is_read,
        })
    }
}

/// One attempt at storing `new` (already validated).
pub(crate) async fn try_store(
    pool: &PgPool,
    new: &OimNew,
) -> Result<Result<OimMeta, OimRefused>, Failure> {
    let mut tx = pool.begin().await?;
    let locked = sqlx::query_scalar!(
        "SELECT id FROM users WHERE id = $1 FOR NO KEY UPDATE",
        new.recipient.0
    )
    .fetch_optional(&mut *tx)
    .await?;
    if locked.is_none() {
        tx.rollback().await?;
        return Ok(Err(OimRefused::NoRecipient));
    }
    let mailbox = sqlx::query!(
        r#"SELECT COUNT(*) AS "count!", MAX(received_at) AS newest FROM oims WHERE recipient = $1"#,
        new.recipient.0
    )
    .fetch_one(&mut *tx)
    .await?;
    if mailbox.count >= MAX_OIMS_PER_RECIPIENT as i64 {
        tx.rollback().await?;
        return Ok(Err(OimRefused::MailboxFull));
    }
    let received_at = mailbox.newest.map_or(now_ms(), |n| now_ms().max(n + 1));
    let id = Uuid::new_v4();
    sqlx::query!(
        "INSERT INTO oims (id, recipient, sender, sender_name, received_at, run_id, seq, body) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        id,
        new.recipient.0,
        new.sender.as_str(),
        new.sender_name,
        received_at,
        new.run_id,
        i64::from(new.seq),
        new.text
    )
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Ok(OimMeta {
        id,
        sender: new.sender.clone(),
        sender_name: new.sender_name.clone(),
        received_at,
        size: new.text.len() as u32,
        read: false,
    }))
}

pub(crate) async fn list(pool: &PgPool, recipient: UserId) -> Result<Vec<OimMeta>, Failure> {
    sqlx::query_as!(
        MetaRow,
        r#"SELECT id, sender, sender_name, received_at, octet_length(body) AS "size!", is_read
           FROM oims WHERE recipient = $1 ORDER BY received_at"#,
        recipient.0
    )
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(|r| r.into_meta().map_err(Failure::from))
    .collect()
}

pub(crate) async fn get_one(
    pool: &PgPool,
    recipient: UserId,
    id: Uuid,
    mark_read: bool,
) -> Result<Option<Oim>, Failure> {
    if mark_read {
        sqlx::query!(
            "UPDATE oims SET is_read = TRUE WHERE id = $1 AND recipient = $2",
            id,
            recipient.0
        )
        .execute(pool)
        .await?;
    }
    let Some(row) = sqlx::query!(
        r#"SELECT id, sender, sender_name, received_at, octet_length(body) AS "size!", is_read,
                  run_id, seq, body
           FROM oims WHERE id = $1 AND recipient = $2"#,
        id,
        recipient.0
    )
    .fetch_optional(pool)
    .await?
    else {
        return Ok(None);
    };
    let meta = MetaRow {
        id: row.id,
        sender: row.sender,
        sender_name: row.sender_name,
        received_at: row.received_at,
        size: row.size,
        is_read: row.is_read,
    }
    .into_meta()?;
    Ok(Some(Oim {
        meta,
        run_id: row.run_id,
        seq: codec::oim_seq("oims.seq", row.seq)?,
        text: row.body,
    }))
}

pub(crate) async fn delete(pool: &PgPool, recipient: UserId, ids: &[Uuid]) -> Result<u64, Failure> {
    Ok(sqlx::query!(
        "DELETE FROM oims WHERE recipient = $1 AND id = ANY($2)",
        recipient.0,
        ids
    )
    .execute(pool)
    .await?
    .rows_affected())
}
