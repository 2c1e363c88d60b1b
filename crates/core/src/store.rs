//! The durable-data port. Implementations: SQLite (embedded) and Postgres (distributed)
//! in `butterfly-store`; the address book over gRPC (`RemoteStore`) in `butterfly-rpc`.
//! Every method that changes data has committed before it returns `Ok`.

use async_trait::async_trait;

use crate::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use crate::lists::{EditOutcome, ListError, ListOp, PeerView, Roster, Tombstone};
use crate::oim::{Oim, OimMeta, OimNew, OimRefused};
use crate::profile::{Profile, ProfileEdit};
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("an account with that sign-in name exists")]
    DuplicateAccount,
    #[error("storage failure: {0}")]
    Backend(String),
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    async fn create_account(&self, new: NewAccount) -> Result<Account, StoreError>;
    async fn account_by_email(&self, email: &Email) -> Result<Option<Account>, StoreError>;
    async fn account_by_id(&self, id: UserId) -> Result<Option<Account>, StoreError>;
    /// All accounts, ordered by sign-in name.
    async fn accounts(&self) -> Result<Vec<Account>, StoreError>;
    /// Replace the password (and the legacy MD5 secret: `None` turns MD5 sign-in off).
    /// `false` when there is no such account.
    async fn set_password(
        &self,
        email: &Email,
        password_hash: String,
        legacy_md5: Option<LegacyMd5>,
    ) -> Result<bool, StoreError>;
    /// Delete an account and every list entry that mentions it. `false` when absent.
    async fn delete_account(&self, email: &Email) -> Result<bool, StoreError>;

    /// The owner's lists, groups and settings, with each contact's view of the owner.
    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError>;
    /// How `owner` treats `viewer` (privacy and the lists holding the viewer).
    async fn peer_view(&self, owner: UserId, viewer: UserId) -> Result<PeerView, StoreError>;
    /// Apply one list edit atomically (rules in [`crate::lists::apply`]), bumping the list
    /// version and change stamp of the owner and of anyone whose RL changed, and stamping
    /// every row written (module docs of [`crate::lists`]). The outcome's contact and group
    /// carry the stamp. Durable before it returns.
    async fn edit(
        &self,
        owner: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError>;

    /// The owner's contact and group deletions stamped after `since` (ms), oldest first;
    /// empty for an unknown owner. Complete only for a `since` no older than
    /// [`TOMBSTONE_RETENTION`](crate::lists::TOMBSTONE_RETENTION) (older ones may have
    /// been purged: answer those with a full sync).
    ///
    /// For a delta, read the [`roster`](Self::roster) first and the tombstones after it:
    /// a deletion committed in between then shows as a tombstone (newer than the roster's
    /// stamp, so reported again next time — harmless), while the other order could lose it.
    ///
    /// The default, for test doubles that keep no history, fails: a caller then falls back
    /// to a full sync instead of missing deletions.
    async fn tombstones(&self, owner: UserId, since: i64) -> Result<Vec<Tombstone>, StoreError> {
        let _ = (owner, since);
        Err(StoreError::Backend("this store keeps no tombstones".into()))
    }

    /// Keep an offline message for its recipient (limits in [`crate::oim`]), durable before
    /// it returns. The store assigns the id and arrival time.
    ///
    /// The defaults of the `oim_*` methods, for test doubles that keep no mail, fail.
    async fn oim_store(&self, new: OimNew) -> Result<Result<OimMeta, OimRefused>, StoreError> {
        let _ = new;
        Err(no_mail())
    }
    /// The recipient's waiting messages, oldest first; empty for an unknown recipient.
    async fn oims(&self, recipient: UserId) -> Result<Vec<OimMeta>, StoreError> {
        let _ = recipient;
        Err(no_mail())
    }
    /// One of the recipient's messages (`None`: not theirs, or gone); with `mark_read`
    /// it is marked read first.
    async fn oim_get(
        &self,
        recipient: UserId,
        id: Uuid,
        mark_read: bool,
    ) -> Result<Option<Oim>, StoreError> {
        let _ = (recipient, id, mark_read);
        Err(no_mail())
    }
    /// Delete those of `ids` that are the recipient's; how many were.
    async fn oim_delete(&self, recipient: UserId, ids: &[Uuid]) -> Result<u64, StoreError> {
        let _ = (recipient, ids);
        Err(no_mail())
    }

    /// The owner's roaming profile ([`crate::profile`]); empty when none was stored.
    ///
    /// The defaults of the profile methods, for test doubles, fail.
    async fn profile(&self, owner: UserId) -> Result<Profile, StoreError> {
        let _ = owner;
        Err(no_profiles())
    }
    /// Change the owner's roaming profile, durably. The edit must be validated
    /// ([`ProfileEdit::validated`]).
    async fn update_profile(&self, owner: UserId, edit: ProfileEdit) -> Result<(), StoreError> {
        let _ = (owner, edit);
        Err(no_profiles())
    }
}

fn no_profiles() -> StoreError {
    StoreError::Backend("this store keeps no profiles".into())
}

fn no_mail() -> StoreError {
    StoreError::Backend("this store keeps no offline messages".into())
}
