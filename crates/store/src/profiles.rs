//! Roaming profiles in SQLite (`profiles`, migration 0004).

use butterfly_core::account::UserId;
use butterfly_core::lists::now_ms;
use butterfly_core::profile::{Profile, ProfileEdit, Tile};
use butterfly_core::store::StoreError;
use sqlx::{SqliteConnection, SqlitePool};

use crate::codec::backend;

type Row = (String, i64, Option<String>, Option<Vec<u8>>, i64);

pub(crate) async fn get(read: &mut SqliteConnection, owner: UserId) -> Result<Profile, StoreError> {
    let row: Option<Row> = sqlx::query_as(
        "SELECT psm, psm_changed_at, tile_mime, tile, tile_changed_at FROM profiles WHERE owner = ?",
    )
    .bind(owner.0)
    .fetch_optional(read)
    .await
    .map_err(backend)?;
    Ok(row.map(profile).unwrap_or_default())
}

pub(crate) fn profile((psm, psm_changed_at, mime, bytes, changed_at): Row) -> Profile {
    Profile {
        psm,
        psm_changed_at,
        tile: mime.zip(bytes).map(|(mime, bytes)| Tile {
            mime,
            bytes,
            changed_at,
        }),
    }
}

pub(crate) async fn update(
    write: &SqlitePool,
    owner: UserId,
    edit: ProfileEdit,
) -> Result<(), StoreError> {
    let now = now_ms();
    let query = match edit {
        ProfileEdit::Psm(psm) => sqlx::query(
            "INSERT INTO profiles (owner, psm, psm_changed_at) VALUES (?, ?, ?) \
             ON CONFLICT (owner) DO UPDATE SET psm = excluded.psm, psm_changed_at = excluded.psm_changed_at",
        )
        .bind(owner.0)
        .bind(psm)
        .bind(now),
        ProfileEdit::Tile(tile) => {
            let (mime, bytes) = tile.unzip();
            sqlx::query(
                "INSERT INTO profiles (owner, tile_mime, tile, tile_changed_at) VALUES (?, ?, ?, ?) \
                 ON CONFLICT (owner) DO UPDATE SET tile_mime = excluded.tile_mime, \
                 tile = excluded.tile, tile_changed_at = excluded.tile_changed_at",
            )
            .bind(owner.0)
            .bind(mime)
            .bind(bytes)
            .bind(now)
        }
    };
    query.execute(write).await.map_err(backend)?;
    Ok(())
}
