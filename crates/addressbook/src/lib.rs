//! The address-book SOAP services of Windows Live Messenger 8.0–2009 (MSNP13–18), on the
//! addressbook role's HTTP listener (spec: issue 4 §3; SOAP.md §2):
//!
//! - `POST /abservice/SharingService.asmx` — `FindMembership`: the allow, block, reverse
//!   and pending lists as memberships of the Messenger service.
//! - `POST /abservice/abservice.asmx` — `ABFindAll` (MSNP13–15) and `ABFindContactsPaged`
//!   (MSNP16–18): groups, forward-list contacts under the same GUIDs MSNP10–12 clients see
//!   as `C=`, and the `Me` contact carrying the user's settings.
//!
//! Requests are SOAP 1.1 read by local name (any namespace prefix), at most
//! [`MAX_BODY_BYTES`] (larger → HTTP 413), with no document type declarations; the action
//! is the first child of the body. Each request carries a contacts-service ticket
//! (`ABAuthHeader/TicketToken`, `t=<token>&p=`); without a valid one the answer is HTTP
//! 403. Unreadable requests and unknown actions get a SOAP fault (HTTP 500).
//!
//! **Deltas** (spec §3.7): every answer's `lastChange` is the owner's change stamp, which
//! the store raises with every edit of the owner's lists or settings (also the reverse-list
//! changes others cause). A request with `deltasOnly` and a `lastChange` we issued gets
//! only the rows stamped after it, with removals marked `fDeleted` (contacts, groups) or
//! `Deleted` (memberships) from the store's tombstones. A stamp we never issued, or one
//! older than the tombstone retention, gets the `FullSyncRequired` fault and the client
//! asks again for everything.
//!
//! **Edits** (`edits.rs`): `AddMember`/`DeleteMember`, `ABContact*`, `ABGroup*` become
//! `ListOp`s through `Store::edit` and are announced with `bus::announce_edit`, as the
//! NS's own list commands are; the owner's own sessions get `UserEvent::ListsChanged`, so
//! the NS watches whoever came onto the forward list. Repeating an edit is success (WLM retries, and mirrors every
//! edit with `ADL`/`RML`); refusals are faults with the errorcodes and texts of the
//! official service. Pending is derived (on RL, neither allowed nor blocked), so
//! `DeleteMember Pending` — like anything for the Reverse role — is accepted and changes
//! nothing until the store keeps the pending list; the Me contact's roaming annotations,
//! `IsMessengerUser` and empty nicknames are accepted but not kept yet.
//!
//! **Storage** (`storage.rs`): the roaming profile WLM 8.1+ reads at sign-in — the
//! friendly name, the personal message and the display picture — and the picture's public
//! URL.
//!
//! Architecture invariant: accounts and lists come only through the [`Store`] port and
//! tickets only through the [`Tickets`] port, so this crate knows no database and no
//! ticket format. It does not terminate TLS, and it never logs ticket contents.
//!
//! Paths are case-insensitive because the binary lower-cases every path in front of the
//! merged HTTP router; the routes here are the lower-case forms, and this router sets no
//! fallback (axum allows only one per merged router).

mod abservice;
mod edits;
mod handlers;
pub mod oim;
mod rsi;
mod sharing;
mod soap;
mod storage;
mod xml;

use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use butterfly_core::account::{Account, UserId};
use butterfly_core::bus::Bus;
use butterfly_core::lists::Roster;
use butterfly_core::lists::Tombstone;
use butterfly_core::store::Store;
use butterfly_core::tickets::Tickets;
use uuid::Uuid;

/// ABService, as routed (lower case; clients write `/abservice/abservice.asmx`).
pub const AB_SERVICE_PATH: &str = "/abservice/abservice.asmx";
/// SharingService, as routed (clients write `/abservice/SharingService.asmx`).
pub const SHARING_SERVICE_PATH: &str = "/abservice/sharingservice.asmx";
/// The storage service (roaming profile), lower case as routed.
pub const STORAGE_PATH: &str = "/storageservice/schematizedstore.asmx";
/// Display pictures: `/storage/usertile/{cid hex}/{static|small}`.
pub const USERTILE_PATH: &str = "/storage/usertile/{cid}/{size}";

/// Largest request body accepted; a larger one is answered 413. The biggest address-book
/// request (an `ABContactAdd` of many contacts) is far smaller.
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// What the address-book services need from the rest of the system.
#[derive(Clone)]
pub struct Deps {
    pub store: Arc<dyn Store>,
    pub tickets: Arc<dyn Tickets>,
    /// Where the consequences of an edit are published (the NS sessions of the users it
    /// concerns listen there).
    pub bus: Arc<dyn Bus>,
}

/// The address-book HTTP routes; the binary merges this into the HTTP listener's router,
/// behind its path-lower-casing layer.
pub fn router(deps: Deps) -> Router {
    let state = Arc::new(handlers::Shared { deps });
    Router::new()
        .route(AB_SERVICE_PATH, post(handlers::ab_service))
        .route(SHARING_SERVICE_PATH, post(handlers::sharing_service))
        .route(STORAGE_PATH, post(storage::service))
        .route(USERTILE_PATH, get(storage::usertile))
        .with_state(state)
}

/// Namespace of the `Me` contact GUIDs (a fixed random UUID; changing it would change
/// every client's view of itself).
const ME_NAMESPACE: Uuid = Uuid::from_u128(0x3e00dbf2_aedd_46cb_b9b6_a6fd9fc590c0);

/// The `contactId` of a user's `Me` contact: a name-based UUID (v5) of the user id, so it
/// is stable without a stored column.
pub fn me_contact_id(user: UserId) -> Uuid {
    Uuid::new_v5(&ME_NAMESPACE, &user.0.to_be_bytes())
}

/// What one answer is made from: the signed-in owner, their roster, and — for a delta
/// answer — the point it starts from and what was deleted since.
pub(crate) struct Snapshot {
    pub(crate) owner: Account,
    pub(crate) roster: Roster,
    /// The owner's change stamp as `lastChange` text: the answer's own `lastChange`, which
    /// the client sends back to ask for what changed after it.
    pub(crate) stamp: String,
    /// A delta answer holds only what changed after this stamp (ms); `None`: everything.
    pub(crate) since: Option<i64>,
    /// Delta answers: contacts and groups deleted after `since`, with the user id of a
    /// deleted contact (for its membership id) where the account still exists.
    pub(crate) deleted: Vec<(Tombstone, Option<UserId>)>,
}

impl Snapshot {
    /// Whether a row stamped `at` belongs in this answer.
    pub(crate) fn shows(&self, at: i64) -> bool {
        self.since.is_none_or(|since| at > since)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn me_contact_ids_are_stable_and_distinct() {
        assert_eq!(me_contact_id(UserId(1)), me_contact_id(UserId(1)));
        assert_ne!(me_contact_id(UserId(1)), me_contact_id(UserId(2)));
        assert_eq!(me_contact_id(UserId(1)).get_version_num(), 5);
    }
}
