//! Small helpers shared by the store test binaries (`mod support;` in each). The behaviour
//! suite itself is `butterfly_store::conformance`; these serve the backend-specific tests.

// Each test binary compiles its own copy and uses only some of it.
#![allow(dead_code)]

use butterfly_core::account::{Account, Email, NewAccount};
use butterfly_core::lists::{ContactRef, EditOutcome, List, ListOp, Roster};
use butterfly_core::store::Store;

pub(crate) const FL: u8 = 1;
pub(crate) const RL: u8 = 8;

pub(crate) fn email(name: &str) -> Email {
    Email::parse(&format!("{name}@example.com")).unwrap()
}

pub(crate) async fn user(store: &dyn Store, name: &str) -> Account {
    store
        .create_account(NewAccount {
            email: email(name),
            friendly_name: name.to_string(),
            password_hash: format!("$argon2id$fake${name}"),
            legacy_md5: None,
        })
        .await
        .unwrap()
}

pub(crate) fn add(list: List, name: &str) -> ListOp {
    ListOp::Add {
        list,
        target: ContactRef::Email(email(name)),
        group: None,
    }
}

/// An edit that must be accepted.
pub(crate) async fn ok(store: &dyn Store, owner: &Account, op: ListOp) -> EditOutcome {
    match store.edit(owner.id, op.clone()).await.unwrap() {
        Ok(out) => out,
        Err(e) => panic!("{op:?} by {} refused: {e}", owner.email),
    }
}

/// The lists of `roster`'s owner that hold `name` (0 when none).
pub(crate) fn lists(roster: &Roster, name: &str) -> u8 {
    roster.contact(&email(name)).map_or(0, |c| c.lists.0)
}

/// Rows no list holds, which the API cannot show: contacts with an empty mask, and group
/// memberships of contacts not on FL. The same SQL in both dialects.
pub(crate) const ORPHANS: &str = "SELECT (SELECT COUNT(*) FROM contacts WHERE lists = 0) \
     + (SELECT COUNT(*) FROM contact_groups g \
        JOIN contacts c ON c.owner = g.owner AND c.contact = g.contact \
        WHERE (c.lists & 1) = 0)";
