//! [`PgStore::bulk_load`]: the Postgres side of `crate::bulk` (same rows, same rules),
//! with arrays and `UNNEST`, a few thousand rows per statement so none runs near the
//! statement timeout.

use std::collections::HashMap;

use butterfly_core::account::{NewAccount, UserId};
use butterfly_core::store::StoreError;
use uuid::Uuid;

use super::PgStore;
use crate::bulk::{BulkError, check, mutual_mask};
use crate::codec::backend;

/// Rows per statement.
const CHUNK: usize = 5000;

impl PgStore {
    /// Create `accounts` and make each of `pairs` (indices into `accounts`) mutual
    /// contacts, in one transaction; returns the new ids in the order given. Fails,
    /// writing nothing, if any of the accounts exists.
    pub async fn bulk_load(
        &self,
        accounts: &[NewAccount],
        pairs: &[(u32, u32)],
    ) -> Result<Vec<UserId>, BulkError> {
        check(accounts.len(), pairs)?;
        let mut tx = self.pool.begin().await.map_err(backend)?;
        let mut by_email: HashMap<String, i64> = HashMap::with_capacity(accounts.len());
        for chunk in accounts.chunks(CHUNK) {
            let emails: Vec<String> = chunk.iter().map(|a| a.email.to_string()).collect();
            let names: Vec<String> = chunk.iter().map(|a| a.friendly_name.clone()).collect();
            let hashes: Vec<String> = chunk.iter().map(|a| a.password_hash.clone()).collect();
            // No salt is ever empty: '' stands for "no MD5 secret" in the arrays.
            let salts: Vec<String> = chunk
                .iter()
                .map(|a| {
                    a.legacy_md5
                        .as_ref()
                        .map_or(String::new(), |m| m.salt.clone())
                })
                .collect();
            let md5s: Vec<String> = chunk
                .iter()
                .map(|a| {
                    a.legacy_md5
                        .as_ref()
                        .map_or(String::new(), |m| m.hash.clone())
                })
                .collect();
            let rows = sqlx::query!(
                "INSERT INTO users (email, friendly_name, password_hash, md5_salt, md5_hash) \
                 SELECT e, n, h, NULLIF(s, ''), NULLIF(m, '') \
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[]) \
                 AS t(e, n, h, s, m) \
                 RETURNING id, email",
                &emails,
                &names,
                &hashes,
                &salts,
                &md5s
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    BulkError::Exists(d.message().to_owned())
                }
                e => BulkError::Store(backend(e)),
            })?;
            by_email.extend(rows.into_iter().map(|r| (r.email, r.id)));
        }
        let ids = accounts
            .iter()
            .map(|a| {
                by_email
                    .get(a.email.as_str())
                    .map(|&id| UserId(id))
                    .ok_or_else(|| {
                        BulkError::Store(StoreError::Backend(format!(
                            "no id returned for {}",
                            a.email
                        )))
                    })
            })
            .collect::<Result<Vec<_>, _>>()?;

        let stamp = butterfly_core::lists::now_ms();
        let rows: Vec<(i64, i64)> = pairs
            .iter()
            .flat_map(|&(a, b)| {
                let (a, b) = (ids[a as usize].0, ids[b as usize].0);
                [(a, b), (b, a)]
            })
            .collect();
        let mask = i32::try_from(mutual_mask()).map_err(backend)?;
        for chunk in rows.chunks(CHUNK) {
            let owners: Vec<i64> = chunk.iter().map(|r| r.0).collect();
            let contacts: Vec<i64> = chunk.iter().map(|r| r.1).collect();
            let guids: Vec<Uuid> = chunk.iter().map(|_| Uuid::new_v4()).collect();
            sqlx::query!(
                "INSERT INTO contacts (owner, contact, guid, lists, changed_at) \
                 SELECT o, c, g, $4, $5 FROM UNNEST($1::bigint[], $2::bigint[], $3::uuid[]) \
                 AS t(o, c, g)",
                &owners,
                &contacts,
                &guids,
                mask,
                stamp
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        // One list version and change stamp for everybody with contacts, as if each had
        // made one edit at `stamp`.
        let mut owners: Vec<i64> = rows.iter().map(|r| r.0).collect();
        owners.sort_unstable();
        owners.dedup();
        for chunk in owners.chunks(CHUNK) {
            sqlx::query!(
                "UPDATE users SET list_version = list_version + 1, \
                 ab_stamp = GREATEST($2, ab_stamp + 1) WHERE id = ANY($1::bigint[])",
                chunk,
                stamp
            )
            .execute(&mut *tx)
            .await
            .map_err(backend)?;
        }
        tx.commit().await.map_err(backend)?;
        // Fresh statistics: until autovacuum gets to them, the planner would take the
        // tables as nearly empty and scan all users for every roster read (3.6 ms instead
        // of 0.4 ms each, measured at 10,000 users). Outside the transaction, after the
        // commit, so it sees what was loaded.
        sqlx::query!("ANALYZE users, contacts, list_groups, contact_groups, properties")
            .execute(&self.pool)
            .await
            .map_err(backend)?;
        Ok(ids)
    }
}
