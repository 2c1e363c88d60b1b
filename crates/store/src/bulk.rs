//! Bulk loading for load tests: many accounts and mutual contacts written in one
//! transaction, instead of one [`Store::create_account`](butterfly_core::store::Store) and
//! four [`Store::edit`](butterfly_core::store::Store)s per pair, each committed (and, in
//! SQLite, fsynced) on its own — minutes for a network of thousands.
//!
//! What is written is what the edits would leave: each pair holds the other on its
//! forward and allow lists (and so on its reverse list, mask FL|AL|RL), with a fresh
//! contact GUID, stamped with the owner's bumped change stamp and list version, no groups.
//! Only into a database that does not hold these accounts yet.

use std::collections::HashSet;

use butterfly_core::account::{NewAccount, UserId};
use butterfly_core::lists::{List, MAX_LIST_LEN};
use butterfly_core::store::StoreError;

use crate::SqliteStore;
use crate::codec::{self, backend};

/// Why a bulk load was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum BulkError {
    /// The input names no valid network (nothing was written).
    #[error("invalid bulk load: {0}")]
    Invalid(String),
    /// An account exists already (nothing was written).
    #[error("an account of the bulk load exists already: {0}")]
    Exists(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The list mask each side of a mutual pair holds: forward, allow and reverse.
pub(crate) fn mutual_mask() -> i64 {
    i64::from(List::Forward.bit() | List::Allow.bit() | List::Reverse.bit())
}

/// Check that `pairs` are distinct, unordered, between existing indices of `accounts`
/// accounts, and leave nobody with more contacts than a list may hold.
pub(crate) fn check(accounts: usize, pairs: &[(u32, u32)]) -> Result<(), BulkError> {
    let mut seen = HashSet::with_capacity(pairs.len());
    let mut degree = vec![0usize; accounts];
    for &(a, b) in pairs {
        let (a, b) = (a as usize, b as usize);
        if a >= accounts || b >= accounts {
            return Err(BulkError::Invalid(format!(
                "pair ({a}, {b}) names an account beyond the {accounts} given"
            )));
        }
        if a == b {
            return Err(BulkError::Invalid(format!(
                "account {a} paired with itself"
            )));
        }
        if !seen.insert((a.min(b), a.max(b))) {
            return Err(BulkError::Invalid(format!("pair ({a}, {b}) given twice")));
        }
        degree[a] += 1;
        degree[b] += 1;
        if degree[a] > MAX_LIST_LEN || degree[b] > MAX_LIST_LEN {
            return Err(BulkError::Invalid(format!(
                "more than {MAX_LIST_LEN} contacts (the list limit) for one account"
            )));
        }
    }
    Ok(())
}

/// Accounts per multi-row `INSERT` (5 parameters each, well under SQLite's limit).
const ACCOUNT_ROWS: usize = 400;
/// Contact rows per multi-row `INSERT` (5 parameters each).
const CONTACT_ROWS: usize = 400;

impl SqliteStore {
    /// Create `accounts` and make each of `pairs` (indices into `accounts`) mutual
    /// contacts, in one write transaction; returns the new ids in the order given. Fails,
    /// writing nothing, if any of the accounts exists.
    pub async fn bulk_load(
        &self,
        accounts: &[NewAccount],
        pairs: &[(u32, u32)],
    ) -> Result<Vec<UserId>, BulkError> {
        check(accounts.len(), pairs)?;
        // BEGIN IMMEDIATE, as every write here: the write lock before the first statement.
        let mut tx = self
            .write
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)?;
        let mut ids = Vec::with_capacity(accounts.len());
        for chunk in accounts.chunks(ACCOUNT_ROWS) {
            let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO users (email, friendly_name, password_hash, md5_salt, md5_hash) \
                 VALUES {values} RETURNING id"
            );
            let mut q = sqlx::query_scalar::<_, i64>(&sql);
            for a in chunk {
                let (salt, hash) = match &a.legacy_md5 {
                    Some(m) => (Some(m.salt.clone()), Some(m.hash.clone())),
                    None => (None, None),
                };
                q = q
                    .bind(a.email.as_str())
                    .bind(&a.friendly_name)
                    .bind(&a.password_hash)
                    .bind(salt)
                    .bind(hash);
            }
            // RETURNING gives the rows in insertion order for a single VALUES list.
            let got = q.fetch_all(&mut *tx).await.map_err(|e| match e {
                sqlx::Error::Database(d) if d.is_unique_violation() => {
                    BulkError::Exists(d.message().to_owned())
                }
                e => BulkError::Store(backend(e)),
            })?;
            ids.extend(got.into_iter().map(UserId));
        }
        if ids.len() != accounts.len() {
            return Err(BulkError::Store(StoreError::Backend(format!(
                "{} accounts inserted, {} ids returned",
                accounts.len(),
                ids.len()
            ))));
        }

        let stamp = butterfly_core::lists::now_ms();
        let rows: Vec<(i64, i64)> = pairs
            .iter()
            .flat_map(|&(a, b)| {
                let (a, b) = (ids[a as usize].0, ids[b as usize].0);
                [(a, b), (b, a)]
            })
            .collect();
        for chunk in rows.chunks(CONTACT_ROWS) {
            let values = vec!["(?, ?, ?, ?, ?)"; chunk.len()].join(", ");
            let sql = format!(
                "INSERT INTO contacts (owner, contact, guid, lists, changed_at) VALUES {values}"
            );
            let mut q = sqlx::query(&sql);
            for &(owner, contact) in chunk {
                q = q
                    .bind(owner)
                    .bind(contact)
                    .bind(codec::guid_text(uuid::Uuid::new_v4()))
                    .bind(mutual_mask())
                    .bind(stamp);
            }
            q.execute(&mut *tx).await.map_err(backend)?;
        }
        // One list version and change stamp for everybody with contacts: as if each had
        // made one edit at `stamp` (fresh accounts have version 0 and stamp 0).
        // The write lock is ours, so every id in the range is one of the new accounts.
        sqlx::query(
            "UPDATE users SET list_version = list_version + 1, ab_stamp = MAX(?, ab_stamp + 1) \
             WHERE id >= ? AND id <= ? \
             AND EXISTS (SELECT 1 FROM contacts c WHERE c.owner = users.id)",
        )
        .bind(stamp)
        .bind(ids.iter().map(|i| i.0).min().unwrap_or(0))
        .bind(ids.iter().map(|i| i.0).max().unwrap_or(0))
        .execute(&mut *tx)
        .await
        .map_err(backend)?;
        tx.commit().await.map_err(backend)?;
        Ok(ids)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_checked() {
        assert!(check(3, &[(0, 1), (1, 2)]).is_ok());
        for bad in [vec![(0, 3)], vec![(1, 1)], vec![(0, 1), (1, 0)]] {
            assert!(
                matches!(check(3, &bad), Err(BulkError::Invalid(_))),
                "{bad:?}"
            );
        }
        let star: Vec<(u32, u32)> = (1..=(MAX_LIST_LEN as u32 + 1)).map(|i| (0, i)).collect();
        assert!(matches!(
            check(MAX_LIST_LEN + 2, &star),
            Err(BulkError::Invalid(_))
        ));
    }
}
