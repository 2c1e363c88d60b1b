//! Roaming profiles in Postgres (`profiles`, migration 0004), mirroring `crate::profiles`.

use butterfly_core::account::UserId;
use butterfly_core::lists::now_ms;
use butterfly_core::profile::{Profile, ProfileEdit};
use butterfly_core::store::StoreError;
use sqlx::PgPool;

use crate::codec::backend;

pub(crate) async fn get(pool: &PgPool, owner: UserId) -> Result<Profile, StoreError> {
    let row = sqlx::query!(
        "SELECT psm, psm_changed_at, tile_mime, tile, tile_changed_at FROM profiles WHERE owner = $1",
        owner.0
    )
    .fetch_optional(pool)
    .await
    .map_err(backend)?;
    Ok(row
        .map(|r| {
            crate::profiles::profile((
                r.psm,
                r.psm_changed_at,
                r.tile_mime,
                r.tile,
                r.tile_changed_at,
            ))
        })
        .unwrap_or_default())
}

pub(crate) async fn update(
    pool: &PgPool,
    owner: UserId,
    edit: ProfileEdit,
) -> Result<(), StoreError> {
    let now = now_ms();
    match edit {
        ProfileEdit::Psm(psm) => sqlx::query!(
            "INSERT INTO profiles (owner, psm, psm_changed_at) VALUES ($1, $2, $3) \
             ON CONFLICT (owner) DO UPDATE SET psm = excluded.psm, psm_changed_at = excluded.psm_changed_at",
            owner.0,
            psm,
            now
        )
        .execute(pool)
        .await
        .map_err(backend)?,
        ProfileEdit::Tile(tile) => {
            let (mime, bytes) = tile.unzip();
            sqlx::query!(
                "INSERT INTO profiles (owner, tile_mime, tile, tile_changed_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (owner) DO UPDATE SET tile_mime = excluded.tile_mime, \
                 tile = excluded.tile, tile_changed_at = excluded.tile_changed_at",
                owner.0,
                mime,
                bytes,
                now
            )
            .execute(pool)
            .await
            .map_err(backend)?
        }
    };
    Ok(())
}
