//! The behaviour every [`Store`] must have, as checks that run against any implementation:
//! [`SqliteStore`](crate::SqliteStore) and [`PgStore`] in this crate's tests, and stores in
//! other crates (a gRPC client store, say) in theirs. The port's contract is what these
//! checks accept, so two stores that pass them cannot disagree on what an edit means.
//!
//! Each check takes a fresh, empty store and panics on the first difference. Run them all
//! with [`run_all`]; a test that wants to look at the database afterwards (leftover rows)
//! runs one check on a store it keeps.
//!
//! [`TestPostgres`] and [`with_postgres`] give tests a throw-away Postgres database each.
//!
//! Compiled only with the `conformance` cargo feature: it is test code (it panics), shipped
//! in the library so that other crates' tests can reuse it.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{
    ContactRef, EditOutcome, GroupRef, Gtc, List, ListError, ListMask, ListOp, Privacy, Roster,
    Tombstone, TombstoneKind, now_ms,
};
use butterfly_core::oim::{
    MAX_OIM_SENDER_NAME, MAX_OIM_TEXT, MAX_OIMS_PER_RECIPIENT, OimMeta, OimNew, OimRefused,
};
use butterfly_core::store::{Store, StoreError};
use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{ConnectOptions, Connection};

use crate::{PgOptions, PgStore};

/// Run every check, each on a store of its own from `make`.
///
/// The name of each check is printed before it runs, so a failure's output says which one
/// failed. Run it on a multi-threaded runtime: some checks edit from many tasks at once.
pub async fn run_all<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Store>>,
{
    macro_rules! run {
        ($($check:ident),* $(,)?) => {
            $(
                println!("conformance: {}", stringify!($check));
                $check(make().await).await;
            )*
        };
    }
    run!(
        accounts_crud_and_duplicates,
        forward_list_maintains_reverse_list_and_versions,
        refused_edits_change_nothing,
        allow_and_block_are_exclusive,
        groups_and_membership,
        settings_nicknames_and_peer_views,
        roster_text_comes_back_as_written,
        delete_account_cascades,
        change_stamps_order_edits_and_mark_rows,
        settings_edits_stamp_the_owner,
        removals_leave_tombstones,
        concurrent_edits_of_one_owner,
        concurrent_edits_lose_nothing,
        offline_messages,
        offline_message_limits,
        roaming_profiles,
    );
}

/// The storage service's roaming profile: empty until set; the message and the picture
/// change independently and durably; the picture can be removed; profiles are per owner
/// and go with the account.
pub async fn roaming_profiles(store: Arc<dyn Store>) {
    use butterfly_core::profile::{Profile, ProfileEdit};
    let alice = user(store.as_ref(), "alice").await;
    let bob = user(store.as_ref(), "bob").await;
    assert_eq!(store.profile(alice.id).await.unwrap(), Profile::default());
    store
        .update_profile(alice.id, ProfileEdit::Psm("at work".into()))
        .await
        .unwrap();
    let png = b"\x89PNG\r\n\x1a\nimage bytes".to_vec();
    let edit = ProfileEdit::Tile(Some(("image/png".into(), png.clone())))
        .validated()
        .unwrap();
    store.update_profile(alice.id, edit).await.unwrap();
    let p = store.profile(alice.id).await.unwrap();
    assert_eq!(p.psm, "at work");
    assert!(p.psm_changed_at > 0);
    let tile = p.tile.expect("a picture");
    assert_eq!((tile.mime.as_str(), tile.bytes), ("image/png", png));
    assert!(tile.changed_at > 0);
    assert_eq!(store.profile(bob.id).await.unwrap(), Profile::default());
    // A new message leaves the picture; removing the picture leaves the message.
    store
        .update_profile(alice.id, ProfileEdit::Psm("home".into()))
        .await
        .unwrap();
    store
        .update_profile(alice.id, ProfileEdit::Tile(None))
        .await
        .unwrap();
    let p = store.profile(alice.id).await.unwrap();
    assert_eq!((p.psm.as_str(), p.tile), ("home", None));
    assert!(store.delete_account(&alice.email).await.unwrap());
    assert_eq!(store.profile(alice.id).await.unwrap(), Profile::default());
}

/// The bulk load of a store whose `bulk_load` is `load` (it is not on the [`Store`]
/// trait): [`bulk_network`] loaded leaves the lists the edits would have
/// ([`bulk_loaded_network`]), and loading one of its accounts again is refused, writing
/// nothing.
pub async fn bulk_load<F, Fut>(store: Arc<dyn Store>, load: F)
where
    F: Fn(Vec<NewAccount>, Vec<(u32, u32)>) -> Fut,
    Fut: Future<Output = Result<Vec<UserId>, crate::BulkError>>,
{
    let (accounts, pairs) = bulk_network();
    let ids = load(accounts.clone(), pairs).await.unwrap();
    bulk_loaded_network(store.clone(), ids).await;
    let before = store.accounts().await.unwrap().len();
    let again = load(accounts[..1].to_vec(), Vec::new()).await;
    assert!(
        matches!(again, Err(crate::BulkError::Exists(_))),
        "{again:?}"
    );
    assert_eq!(store.accounts().await.unwrap().len(), before);
}

/// The accounts and pairs a bulk-load check writes: a triangle (`bulk0`–`bulk2`), a pair
/// (`bulk3`, `bulk4`) and `bulk5` alone.
fn bulk_network() -> (Vec<NewAccount>, Vec<(u32, u32)>) {
    let accounts = (0..6)
        .map(|i| NewAccount {
            email: email(&format!("bulk{i}")),
            friendly_name: format!("bulk{i}"),
            password_hash: format!("$argon2id$fake$bulk{i}"),
            legacy_md5: (i % 2 == 0).then(|| LegacyMd5::new("pw")),
        })
        .collect();
    (accounts, vec![(0, 1), (1, 2), (2, 0), (3, 4)])
}

/// After a bulk load of [`bulk_network`]: the accounts as given, each pair mutual on FL,
/// AL and RL (one list version), nobody else on anyone's lists; and the lists behave as
/// if made by edits — taking a contact off FL takes the owner off the contact's RL.
async fn bulk_loaded_network(store: Arc<dyn Store>, ids: Vec<UserId>) {
    let store = &*store;
    let (accounts, pairs) = bulk_network();
    assert_eq!(ids.len(), accounts.len());
    for (i, (id, new)) in ids.iter().zip(&accounts).enumerate() {
        let a = store
            .account_by_id(*id)
            .await
            .unwrap()
            .expect("bulk account");
        assert_eq!(a.email, new.email);
        assert_eq!(a.legacy_md5.is_some(), i % 2 == 0, "{}", a.email);
        let roster = store.roster(*id).await.unwrap();
        let mut partners: Vec<String> = pairs
            .iter()
            .filter_map(|&(x, y)| match i as u32 {
                n if n == x => Some(y),
                n if n == y => Some(x),
                _ => None,
            })
            .map(|p| format!("bulk{p}"))
            .collect();
        partners.sort();
        let mut have: Vec<String> = roster
            .contacts
            .iter()
            .map(|c| c.email.as_str().trim_end_matches("@example.com").to_owned())
            .collect();
        have.sort();
        assert_eq!(have, partners, "contacts of bulk{i}");
        for p in &partners {
            assert_eq!(lists(&roster, p), FL | AL | RL, "bulk{i} about {p}");
        }
        assert_eq!(roster.version, u64::from(!partners.is_empty()), "bulk{i}");
    }
    let owner = store.account_by_id(ids[0]).await.unwrap().unwrap();
    ok(store, &owner, remove(List::Forward, "bulk1")).await;
    assert_eq!(
        lists(&store.roster(ids[0]).await.unwrap(), "bulk1"),
        AL | RL
    );
    assert_eq!(
        lists(&store.roster(ids[1]).await.unwrap(), "bulk0"),
        FL | AL
    );
}

/// `name@example.com`.
pub fn email(name: &str) -> Email {
    Email::parse(&format!("{name}@example.com")).unwrap()
}

/// Create the account `name@example.com` (with a placeholder hash).
pub async fn user(store: &dyn Store, name: &str) -> Account {
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

/// Add `name@example.com` to `list`.
pub fn add(list: List, name: &str) -> ListOp {
    ListOp::Add {
        list,
        target: ContactRef::Email(email(name)),
        group: None,
    }
}

fn add_to_group(name: &str, group: GroupRef) -> ListOp {
    ListOp::Add {
        list: List::Forward,
        target: ContactRef::Email(email(name)),
        group: Some(group),
    }
}

/// Take `name@example.com` off `list`.
pub fn remove(list: List, name: &str) -> ListOp {
    ListOp::Remove {
        list,
        target: ContactRef::Email(email(name)),
        group: None,
    }
}

pub async fn ok(store: &dyn Store, owner: &Account, op: ListOp) -> EditOutcome {
    match store.edit(owner.id, op.clone()).await.unwrap() {
        Ok(out) => out,
        Err(e) => panic!("{op:?} by {} refused: {e}", owner.email),
    }
}

async fn refused(store: &dyn Store, owner: &Account, op: ListOp) -> ListError {
    store.edit(owner.id, op).await.unwrap().unwrap_err()
}

pub fn lists(roster: &Roster, name: &str) -> u8 {
    mask(roster, &email(name))
}

/// The lists of `roster`'s owner that hold `who` (0 when none).
fn mask(roster: &Roster, who: &Email) -> u8 {
    roster.contact(who).map_or(0, |c| c.lists.0)
}

const FL: u8 = 1;
const AL: u8 = 2;
const BL: u8 = 4;
const RL: u8 = 8;

/// A small deterministic PRNG (xorshift64*), so a failure can be replayed.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 33) as usize % n
    }
}

/// Accounts: create, look up by name and id, list in name order, change the password and
/// the MD5 secret, delete; a second account with the same name in other case is refused,
/// and ids are never reused.
pub async fn accounts_crud_and_duplicates(store: Arc<dyn Store>) {
    let store = &*store;

    let bob = user(store, "bob").await;
    let alice = user(store, "alice").await;
    assert_ne!(alice.id, bob.id);

    let dup = store
        .create_account(NewAccount {
            email: Email::parse("ALICE@Example.com").unwrap(),
            friendly_name: "Another Alice".into(),
            password_hash: "x".into(),
            legacy_md5: None,
        })
        .await;
    assert!(matches!(dup, Err(StoreError::DuplicateAccount)), "{dup:?}");

    assert_eq!(
        store.account_by_email(&email("alice")).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        store.account_by_id(bob.id).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        store.account_by_email(&email("nobody")).await.unwrap(),
        None
    );
    assert_eq!(store.account_by_id(UserId(9999)).await.unwrap(), None);
    assert_eq!(
        store.accounts().await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );

    let md5 = LegacyMd5::new("hunter2");
    assert!(
        store
            .set_password(&email("alice"), "new-hash".into(), Some(md5.clone()))
            .await
            .unwrap()
    );
    let a = store.account_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(
        (a.password_hash.as_str(), a.legacy_md5),
        ("new-hash", Some(md5))
    );
    assert!(
        store
            .set_password(&email("alice"), "newer".into(), None)
            .await
            .unwrap()
    );
    assert_eq!(
        store
            .account_by_id(alice.id)
            .await
            .unwrap()
            .unwrap()
            .legacy_md5,
        None
    );
    assert!(
        !store
            .set_password(&email("nobody"), "x".into(), None)
            .await
            .unwrap()
    );

    assert!(store.delete_account(&email("bob")).await.unwrap());
    assert!(!store.delete_account(&email("bob")).await.unwrap());
    assert_eq!(store.account_by_email(&email("bob")).await.unwrap(), None);
    // Ids are never reused, so a stale id cannot name a new account.
    let bob2 = user(store, "bob").await;
    assert!(bob2.id > bob.id && bob2.id > alice.id);
}

/// FL edits keep the other side's RL in step, bump both list versions, keep a contact's
/// GUID and the other side's own bits, and leave no row that no list holds.
pub async fn forward_list_maintains_reverse_list_and_versions(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;

    let out = ok(store, &alice, add(List::Forward, "bob")).await;
    assert_eq!(out.version, 1);
    assert_eq!(out.reverse, Some((email("bob"), true)));
    let (a, b) = (
        store.roster(alice.id).await.unwrap(),
        store.roster(bob.id).await.unwrap(),
    );
    assert_eq!((a.version, b.version), (1, 1));
    assert_eq!(lists(&a, "bob"), FL);
    assert_eq!(lists(&b, "alice"), RL);
    // Peer views: Bob's lists hold Alice on RL; Alice's hold Bob on FL.
    assert_eq!(
        a.contact(&email("bob")).unwrap().peer.lists_of_me,
        ListMask(RL)
    );
    assert_eq!(
        b.contact(&email("alice")).unwrap().peer.lists_of_me,
        ListMask(FL)
    );

    // Bob's own edit keeps the RL bit Alice's edit put on his row, and keeps its GUID.
    let guid = b.contact(&email("alice")).unwrap().guid;
    let out = ok(store, &bob, add(List::Forward, "alice")).await;
    assert_eq!(out.version, 2);
    assert_eq!(out.contact.as_ref().unwrap().guid, guid);
    let (a, b) = (
        store.roster(alice.id).await.unwrap(),
        store.roster(bob.id).await.unwrap(),
    );
    assert_eq!((a.version, b.version), (2, 2));
    assert_eq!((lists(&a, "bob"), lists(&b, "alice")), (FL | RL, FL | RL));

    // Removing FL clears RL on the other side but keeps a row RL still holds ...
    let out = ok(store, &alice, remove(List::Forward, "bob")).await;
    assert_eq!(out.reverse, Some((email("bob"), false)));
    let (a, b) = (
        store.roster(alice.id).await.unwrap(),
        store.roster(bob.id).await.unwrap(),
    );
    assert_eq!((a.version, b.version), (3, 3));
    assert_eq!((lists(&a, "bob"), lists(&b, "alice")), (RL, FL));

    // ... and deletes rows nothing holds any more.
    ok(store, &bob, remove(List::Forward, "alice")).await;
    let (a, b) = (
        store.roster(alice.id).await.unwrap(),
        store.roster(bob.id).await.unwrap(),
    );
    assert_eq!((a.version, b.version), (4, 4));
    assert!(a.contacts.is_empty() && b.contacts.is_empty());
}

/// Refused edits (unknown users, self, server lists, unknown GUIDs, unknown owners) change
/// nothing, not even the version; unknown owners read as empty and show nothing.
pub async fn refused_edits_change_nothing(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let _bob = user(store, "bob").await;

    assert_eq!(
        refused(store, &alice, add(List::Forward, "nobody")).await,
        ListError::InvalidUser
    );
    assert_eq!(
        refused(store, &alice, add(List::Forward, "alice")).await,
        ListError::SelfContact
    );
    assert_eq!(
        refused(store, &alice, add(List::Reverse, "bob")).await,
        ListError::ServerList
    );
    assert_eq!(
        refused(store, &alice, remove(List::Forward, "bob")).await,
        ListError::NotOnList
    );
    let by_guid = ListOp::Add {
        list: List::Forward,
        target: ContactRef::Guid(uuid::Uuid::new_v4()),
        group: None,
    };
    assert_eq!(
        refused(store, &alice, by_guid).await,
        ListError::InvalidUser
    );
    assert_eq!(store.roster(alice.id).await.unwrap().version, 0);

    // Unknown owners.
    let ghost = UserId(4242);
    assert_eq!(
        store.edit(ghost, add(List::Forward, "bob")).await.unwrap(),
        Err(ListError::InvalidUser)
    );
    assert_eq!(store.roster(ghost).await.unwrap(), Roster::default());
    assert!(
        !store
            .peer_view(ghost, alice.id)
            .await
            .unwrap()
            .lets_me_see()
    );
}

/// AL and BL exclude each other, change peer views, and touch only the owner's lists.
pub async fn allow_and_block_are_exclusive(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;

    let out = ok(store, &alice, add(List::Allow, "bob")).await;
    assert_eq!(out.privacy_changed, vec![email("bob")]);
    assert_eq!(out.reverse, None);
    assert_eq!(
        refused(store, &alice, add(List::Block, "bob")).await,
        ListError::InOppositeList
    );
    assert_eq!(
        refused(store, &alice, add(List::Allow, "bob")).await,
        ListError::AlreadyOnList
    );
    assert_eq!(lists(&store.roster(alice.id).await.unwrap(), "bob"), AL);

    ok(store, &alice, remove(List::Allow, "bob")).await;
    assert!(store.roster(alice.id).await.unwrap().contacts.is_empty());
    ok(store, &alice, add(List::Block, "bob")).await;
    let view = store.peer_view(alice.id, bob.id).await.unwrap();
    assert_eq!(view.lists_of_me, ListMask(BL));
    assert!(!view.lets_me_see());
    // AL/BL are not FL: Bob's lists are untouched, only Alice's version moved.
    let b = store.roster(bob.id).await.unwrap();
    assert!(b.contacts.is_empty());
    assert_eq!(b.version, 0);
    assert_eq!(store.roster(alice.id).await.unwrap().version, 3);
}

/// Groups: numbering, GUIDs, duplicates refused, renames, membership by number and GUID,
/// removing a group or an FL contact drops the memberships.
pub async fn groups_and_membership(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let _bob = user(store, "bob").await;
    let _carol = user(store, "carol").await;

    let friends = ok(
        store,
        &alice,
        ListOp::AddGroup {
            name: "Friends".into(),
        },
    )
    .await
    .group
    .unwrap();
    let work = ok(
        store,
        &alice,
        ListOp::AddGroup {
            name: "Work".into(),
        },
    )
    .await
    .group
    .unwrap();
    assert_eq!((friends.number, work.number), (1, 2));
    assert_eq!(
        refused(
            store,
            &alice,
            ListOp::AddGroup {
                name: "Work".into()
            }
        )
        .await,
        ListError::GroupExists
    );

    ok(store, &alice, add_to_group("bob", GroupRef::Number(1))).await;
    ok(
        store,
        &alice,
        add_to_group("bob", GroupRef::Guid(work.guid)),
    )
    .await;
    ok(store, &alice, add_to_group("carol", GroupRef::Number(2))).await;
    let r = store.roster(alice.id).await.unwrap();
    assert_eq!(r.groups, vec![friends.clone(), work.clone()]);
    assert_eq!(r.contact(&email("bob")).unwrap().groups, vec![1, 2]);
    assert_eq!(r.contact(&email("carol")).unwrap().groups, vec![2]);

    let renamed = ok(
        store,
        &alice,
        ListOp::RenameGroup {
            group: GroupRef::Number(1),
            name: "Pals".into(),
        },
    )
    .await
    .group
    .unwrap();
    assert_eq!(
        (renamed.guid, renamed.name.as_str()),
        (friends.guid, "Pals")
    );
    assert_eq!(
        refused(
            store,
            &alice,
            ListOp::RenameGroup {
                group: GroupRef::Number(1),
                name: "Work".into()
            }
        )
        .await,
        ListError::GroupExists
    );

    let out_of_work = ListOp::Remove {
        list: List::Forward,
        target: ContactRef::Email(email("bob")),
        group: Some(GroupRef::Number(2)),
    };
    ok(store, &alice, out_of_work.clone()).await;
    assert_eq!(
        refused(store, &alice, out_of_work).await,
        ListError::NotInGroup
    );
    assert_eq!(
        store
            .roster(alice.id)
            .await
            .unwrap()
            .contact(&email("bob"))
            .unwrap()
            .groups,
        vec![1]
    );

    ok(
        store,
        &alice,
        ListOp::RemoveGroup {
            group: GroupRef::Guid(work.guid),
        },
    )
    .await;
    let r = store.roster(alice.id).await.unwrap();
    assert_eq!(
        r.groups.iter().map(|g| g.name.as_str()).collect::<Vec<_>>(),
        ["Pals"]
    );
    assert_eq!(
        r.contact(&email("carol")).unwrap().groups,
        Vec::<u32>::new()
    );
    assert_eq!(
        lists(&r, "carol"),
        FL,
        "removing a group keeps its members on FL"
    );

    // Removing from FL drops the memberships with it.
    ok(store, &alice, remove(List::Forward, "bob")).await;
    assert!(
        store
            .roster(alice.id)
            .await
            .unwrap()
            .contact(&email("bob"))
            .is_none()
    );
}

/// Names, nicknames, group names and property values come back exactly as written, with
/// every character a roster read has to quote or escape (both stores fold a roster into
/// JSON in one statement), and a contact in several groups keeps them all, in order.
pub async fn roster_text_comes_back_as_written(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let tricky = "Quote \" back\\slash ünïcödé 漢字 😀 <&> %20 [1,2] {}";
    ok(
        store,
        &bob,
        ListOp::SetFriendlyName(format!("bob {tricky}")),
    )
    .await;
    ok(
        store,
        &alice,
        ListOp::SetFriendlyName(format!("alice {tricky}")),
    )
    .await;
    for name in [format!("group {tricky}"), "\"second\"".to_string()] {
        ok(store, &alice, ListOp::AddGroup { name }).await;
    }
    ok(store, &alice, add_to_group("bob", GroupRef::Number(2))).await;
    ok(store, &alice, add_to_group("bob", GroupRef::Number(1))).await;
    let guid = store
        .roster(alice.id)
        .await
        .unwrap()
        .contact(&bob.email)
        .unwrap()
        .guid;
    let nickname = format!("my {tricky}");
    ok(
        store,
        &alice,
        ListOp::SetNickname {
            contact: guid,
            name: nickname.clone(),
        },
    )
    .await;
    ok(
        store,
        &alice,
        ListOp::SetProperty {
            key: "PHH".into(),
            value: format!("+1 {tricky}"),
        },
    )
    .await;

    let a = store.roster(alice.id).await.unwrap();
    assert_eq!(a.friendly_name, format!("alice {tricky}"));
    let names: Vec<_> = a
        .groups
        .iter()
        .map(|g| (g.number, g.name.as_str()))
        .collect();
    assert_eq!(
        names,
        [(1, format!("group {tricky}").as_str()), (2, "\"second\"")]
    );
    let b = a.contact(&bob.email).unwrap();
    assert_eq!(b.friendly_name, format!("bob {tricky}"));
    assert_eq!(b.nickname.as_deref(), Some(nickname.as_str()));
    assert_eq!(b.groups, [1, 2]);
    assert_eq!(b.lists.0, FL);
    assert_eq!(a.properties, [("PHH".to_string(), format!("+1 {tricky}"))]);
    // Bob's side: Alice on his reverse list, with her name as she wrote it.
    let r = store.roster(bob.id).await.unwrap();
    let a_seen = r.contact(&alice.email).unwrap();
    assert_eq!(a_seen.friendly_name, format!("alice {tricky}"));
    assert_eq!((a_seen.lists.0, a_seen.peer.lists_of_me.0), (RL, FL));
}

/// BLP, GTC, friendly name, phone properties (empty clears), nicknames, and the peer view a
/// roster carries for each contact.
pub async fn settings_nicknames_and_peer_views(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;

    ok(store, &alice, ListOp::SetPrivacy(Privacy::BlockAll)).await;
    ok(store, &alice, ListOp::SetGtc(Gtc::NoAsk)).await;
    ok(
        store,
        &alice,
        ListOp::SetFriendlyName("Alice in Chains".into()),
    )
    .await;
    ok(
        store,
        &alice,
        ListOp::SetProperty {
            key: "PHH".into(),
            value: "555 0100".into(),
        },
    )
    .await;
    ok(
        store,
        &alice,
        ListOp::SetProperty {
            key: "MOB".into(),
            value: "Y".into(),
        },
    )
    .await;
    ok(
        store,
        &alice,
        ListOp::SetProperty {
            key: "MOB".into(),
            value: String::new(),
        },
    )
    .await;
    let a = store.roster(alice.id).await.unwrap();
    assert_eq!(
        (a.privacy, a.gtc, a.version),
        (Privacy::BlockAll, Gtc::NoAsk, 6)
    );
    assert_eq!(a.friendly_name, "Alice in Chains");
    assert_eq!(
        a.properties,
        vec![("PHH".to_string(), "555 0100".to_string())]
    );

    // Bob adds Alice: the roster carries Alice's current name and her view of Bob.
    ok(store, &bob, add(List::Forward, "alice")).await;
    let c = store
        .roster(bob.id)
        .await
        .unwrap()
        .contact(&email("alice"))
        .unwrap()
        .clone();
    assert_eq!(c.friendly_name, "Alice in Chains");
    assert_eq!(
        (c.peer.privacy, c.peer.lists_of_me),
        (Privacy::BlockAll, ListMask(RL))
    );
    assert!(!c.peer.lets_me_see());

    ok(store, &alice, add(List::Allow, "bob")).await;
    let c = store
        .roster(bob.id)
        .await
        .unwrap()
        .contact(&email("alice"))
        .unwrap()
        .clone();
    assert_eq!(c.peer.lists_of_me, ListMask(AL | RL));
    assert!(c.peer.lets_me_see());
    assert_eq!(store.peer_view(alice.id, bob.id).await.unwrap(), c.peer);
    let back = store.peer_view(bob.id, alice.id).await.unwrap();
    assert_eq!(
        (back.privacy, back.lists_of_me),
        (Privacy::AllowAll, ListMask(FL))
    );

    ok(
        store,
        &bob,
        ListOp::SetNickname {
            contact: c.guid,
            name: "Al".into(),
        },
    )
    .await;
    ok(store, &alice, ListOp::SetFriendlyName("Alice".into())).await;
    let c = store
        .roster(bob.id)
        .await
        .unwrap()
        .contact(&email("alice"))
        .unwrap()
        .clone();
    assert_eq!(
        (c.nickname.as_deref(), c.friendly_name.as_str()),
        (Some("Al"), "Alice")
    );
    assert_eq!(c.display_name(), "Al");
}

/// Deleting an account removes it from everyone's lists and bumps their versions, and
/// keeps what belongs to others.
pub async fn delete_account_cascades(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;

    ok(
        store,
        &alice,
        ListOp::AddGroup {
            name: "Friends".into(),
        },
    )
    .await;
    ok(store, &alice, add_to_group("bob", GroupRef::Number(1))).await;
    ok(store, &carol, add(List::Block, "bob")).await;
    ok(store, &bob, add(List::Forward, "alice")).await;
    ok(
        store,
        &bob,
        ListOp::AddGroup {
            name: "Mine".into(),
        },
    )
    .await;
    ok(
        store,
        &bob,
        ListOp::SetProperty {
            key: "PHW".into(),
            value: "1".into(),
        },
    )
    .await;
    let before = (
        store.roster(alice.id).await.unwrap().version,
        store.roster(carol.id).await.unwrap().version,
    );

    assert!(store.delete_account(&email("bob")).await.unwrap());
    let a = store.roster(alice.id).await.unwrap();
    let c = store.roster(carol.id).await.unwrap();
    assert!(a.contacts.is_empty() && c.contacts.is_empty());
    assert_eq!(a.groups.len(), 1, "Alice's own group stays");
    // Their lists lost an entry, so cached lists must be refetched.
    assert_eq!((a.version, c.version), (before.0 + 1, before.1 + 1));
    assert_eq!(store.roster(bob.id).await.unwrap().owner, None);
}

/// Change stamps: every edit takes a stamp from the clock (this machine's: the checks run
/// the store locally), strictly above the owner's previous one even for edits back to back
/// in one millisecond, and writes it into exactly the rows it changes; an RL change stamps
/// the target's row with the target's stamp and moves only the target's counter besides
/// the owner's; a refused edit moves nothing.
pub async fn change_stamps_order_edits_and_mark_rows(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;
    let fresh = store.roster(alice.id).await.unwrap();
    assert_eq!(
        (fresh.stamp, fresh.settings_changed_at),
        (0, 0),
        "no edit yet"
    );

    // An FL add stamps the owner's new row, and the target's new RL row in the target's
    // counter.
    let before = now_ms();
    let out = ok(store, &alice, add(List::Forward, "bob")).await;
    let (a, b) = (
        store.roster(alice.id).await.unwrap(),
        store.roster(bob.id).await.unwrap(),
    );
    assert!(a.stamp >= before, "stamp {} drawn before {before}", a.stamp);
    assert!(b.stamp >= before, "stamp {} drawn before {before}", b.stamp);
    let bob_row = a.contact(&email("bob")).unwrap();
    assert_eq!(bob_row.changed_at, a.stamp, "the added row");
    assert_eq!(
        out.contact.unwrap().changed_at,
        a.stamp,
        "the outcome's row"
    );
    assert_eq!(
        b.contact(&email("alice")).unwrap().changed_at,
        b.stamp,
        "the RL row, in Bob's counter"
    );
    assert_eq!((a.settings_changed_at, b.settings_changed_at), (0, 0));

    // Back to back: many of these share a millisecond, yet every stamp is new.
    let mut stamps = vec![a.stamp];
    for n in 0..25 {
        let op = ListOp::SetNickname {
            contact: bob_row.guid,
            name: format!("Bobby {n}"),
        };
        stamps.push(ok(store, &alice, op).await.contact.unwrap().changed_at);
    }
    assert!(
        stamps.windows(2).all(|w| w[0] < w[1]),
        "stamps must strictly increase: {stamps:?}"
    );
    let a = store.roster(alice.id).await.unwrap();
    assert_eq!(a.stamp, *stamps.last().unwrap());
    assert_eq!(a.contact(&email("bob")).unwrap().changed_at, a.stamp);
    assert_eq!(
        store.roster(bob.id).await.unwrap(),
        b,
        "Alice's nicknames are not Bob's changes"
    );

    // Another row's edit leaves this one's stamp alone; AL is not FL, so Carol's counter
    // does not move.
    ok(store, &alice, add(List::Allow, "carol")).await;
    let a2 = store.roster(alice.id).await.unwrap();
    assert!(a2.stamp > a.stamp);
    assert_eq!(a2.contact(&email("carol")).unwrap().changed_at, a2.stamp);
    assert_eq!(
        a2.contact(&email("bob")).unwrap().changed_at,
        a.stamp,
        "rows keep their stamps"
    );
    assert_eq!(store.roster(carol.id).await.unwrap().stamp, 0);

    // An RL change on a row the target keeps (Bob also allows Alice) stamps that row with
    // the target's next stamp.
    ok(store, &bob, add(List::Allow, "alice")).await;
    let b1 = store.roster(bob.id).await.unwrap();
    ok(store, &alice, remove(List::Forward, "bob")).await;
    let b2 = store.roster(bob.id).await.unwrap();
    assert!(b2.stamp > b1.stamp, "the target's counter moved");
    let row = b2.contact(&email("alice")).unwrap();
    assert_eq!((row.lists.0, row.changed_at), (AL, b2.stamp));

    // Refused edits stamp nothing.
    let a3 = store.roster(alice.id).await.unwrap();
    refused(store, &alice, add(List::Allow, "carol")).await;
    refused(store, &alice, add(List::Forward, "nobody")).await;
    assert_eq!(store.roster(alice.id).await.unwrap(), a3);

    // What a reload shows is what the edit said.
    let c = ok(store, &alice, add(List::Forward, "carol"))
        .await
        .contact
        .unwrap();
    let a4 = store.roster(alice.id).await.unwrap();
    assert_eq!(a4.contact(&c.email).unwrap().changed_at, c.changed_at);
    assert_eq!(a4.stamp, c.changed_at);
}

/// The owner's own settings — privacy, GTC, friendly name, properties (the WLM "Me"
/// contact) — move `settings_changed_at` with the owner's stamp; list edits do not, and
/// settings edits stamp no contact row and nobody else.
pub async fn settings_edits_stamp_the_owner(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    ok(store, &alice, add(List::Forward, "bob")).await;
    let a0 = store.roster(alice.id).await.unwrap();
    let b0 = store.roster(bob.id).await.unwrap();
    let row = a0.contact(&email("bob")).unwrap().changed_at;

    let mut last = a0.stamp;
    let property = |value: &str| ListOp::SetProperty {
        key: "PHH".into(),
        value: value.into(),
    };
    for op in [
        ListOp::SetPrivacy(Privacy::BlockAll),
        ListOp::SetGtc(Gtc::NoAsk),
        ListOp::SetFriendlyName("Alice A".into()),
        property("555 0100"),
        property(""),
    ] {
        ok(store, &alice, op.clone()).await;
        let a = store.roster(alice.id).await.unwrap();
        assert!(a.stamp > last, "{op:?}");
        assert_eq!(a.settings_changed_at, a.stamp, "{op:?}");
        assert_eq!(a.contact(&email("bob")).unwrap().changed_at, row, "{op:?}");
        last = a.stamp;
    }
    assert_eq!(store.roster(bob.id).await.unwrap().stamp, b0.stamp);

    ok(store, &alice, add(List::Allow, "bob")).await;
    let a = store.roster(alice.id).await.unwrap();
    assert!(a.stamp > last);
    assert_eq!(
        a.settings_changed_at, last,
        "a list edit is not a settings edit"
    );
}

/// Deleting a contact row (its last list gone, by the owner or by an RL change) or a group
/// leaves a tombstone with its GUID (and the contact's sign-in name) stamped like the
/// deleting edit; `tombstones(since)` returns exactly those newer than `since`, oldest
/// first. Deleting an account leaves one in the lists of everyone who had it.
pub async fn removals_leave_tombstones(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    let carol = user(store, "carol").await;

    let friends = ok(
        store,
        &alice,
        ListOp::AddGroup {
            name: "Friends".into(),
        },
    )
    .await
    .group
    .unwrap();
    ok(store, &alice, add(List::Forward, "bob")).await;
    ok(
        store,
        &alice,
        add_to_group("carol", GroupRef::Guid(friends.guid)),
    )
    .await;
    let a0 = store.roster(alice.id).await.unwrap();
    assert_eq!(store.tombstones(alice.id, 0).await.unwrap(), vec![]);
    let bob_guid = a0.contact(&email("bob")).unwrap().guid;
    let alice_in_bob = store
        .roster(bob.id)
        .await
        .unwrap()
        .contact(&email("alice"))
        .unwrap()
        .guid;

    // Alice drops Bob: her row goes (FL was all it held), and so does Bob's RL-only row
    // about her — each leaves a tombstone in its owner's counter.
    ok(store, &alice, remove(List::Forward, "bob")).await;
    let a1 = store.roster(alice.id).await.unwrap();
    let bob_gone = Tombstone {
        kind: TombstoneKind::Contact,
        guid: bob_guid,
        email: Some(email("bob")),
        deleted_at: a1.stamp,
    };
    assert!(a1.stamp > a0.stamp);
    assert_eq!(
        store.tombstones(alice.id, a0.stamp).await.unwrap(),
        vec![bob_gone.clone()]
    );
    let b1 = store.roster(bob.id).await.unwrap();
    assert!(b1.contacts.is_empty());
    assert_eq!(
        store.tombstones(bob.id, 0).await.unwrap(),
        vec![Tombstone {
            kind: TombstoneKind::Contact,
            guid: alice_in_bob,
            email: Some(email("alice")),
            deleted_at: b1.stamp,
        }]
    );

    // Deleting a group leaves a group tombstone and restamps the members it drops.
    ok(
        store,
        &alice,
        ListOp::RemoveGroup {
            group: GroupRef::Number(friends.number),
        },
    )
    .await;
    let a2 = store.roster(alice.id).await.unwrap();
    assert!(a2.stamp > a1.stamp);
    assert_eq!(a2.contact(&email("carol")).unwrap().changed_at, a2.stamp);
    let group_gone = Tombstone {
        kind: TombstoneKind::Group,
        guid: friends.guid,
        email: None,
        deleted_at: a2.stamp,
    };
    assert_eq!(
        store.tombstones(alice.id, 0).await.unwrap(),
        vec![bob_gone.clone(), group_gone.clone()],
        "oldest first"
    );
    assert_eq!(
        store.tombstones(alice.id, a1.stamp).await.unwrap(),
        vec![group_gone.clone()],
        "only those after `since`"
    );
    assert_eq!(store.tombstones(alice.id, a2.stamp).await.unwrap(), vec![]);

    // A contact re-added is a new row (new GUID); its old tombstone stays.
    let back = ok(store, &alice, add(List::Forward, "bob")).await;
    assert_ne!(back.contact.unwrap().guid, bob_guid);
    assert_eq!(store.tombstones(alice.id, 0).await.unwrap().len(), 2);

    // Deleting Carol's account removes her from Alice's lists: a tombstone there, in
    // Alice's next stamp. Carol's own tombstones go with her.
    let carol_guid = a2.contact(&email("carol")).unwrap().guid;
    let a3 = store.roster(alice.id).await.unwrap();
    ok(store, &carol, add(List::Block, "bob")).await;
    ok(store, &carol, remove(List::Block, "bob")).await;
    assert_eq!(store.tombstones(carol.id, 0).await.unwrap().len(), 1);
    assert!(store.delete_account(&email("carol")).await.unwrap());
    let a4 = store.roster(alice.id).await.unwrap();
    assert!(a4.stamp > a3.stamp);
    assert_eq!(
        store.tombstones(alice.id, a3.stamp).await.unwrap(),
        vec![Tombstone {
            kind: TombstoneKind::Contact,
            guid: carol_guid,
            email: Some(email("carol")),
            deleted_at: a4.stamp,
        }]
    );
    assert_eq!(store.tombstones(carol.id, 0).await.unwrap(), vec![]);
    assert_eq!(store.tombstones(UserId(4242), 0).await.unwrap(), vec![]);
}

/// Many tasks editing at once, many of them touching the same users: every acknowledged
/// edit must be present, RL must mirror FL exactly, and every version must equal the number
/// of acknowledged changes to that user's lists.
pub async fn concurrent_edits_lose_nothing(store: Arc<dyn Store>) {
    const USERS: usize = 20;
    const TASKS_PER_OWNER: usize = 3;
    const STEPS: usize = 25;

    let mut users = Vec::new();
    for i in 0..USERS {
        users.push(user(&*store, &format!("user{i:02}")).await);
    }
    let users = Arc::new(users);
    // Acknowledged edits per owner, and RL changes per target, as the store reported them.
    let edits: Arc<Vec<AtomicU64>> = Arc::new((0..USERS).map(|_| AtomicU64::new(0)).collect());
    let rl_changes: Arc<Vec<AtomicU64>> = Arc::new((0..USERS).map(|_| AtomicU64::new(0)).collect());
    let index: Arc<HashMap<Email, usize>> = Arc::new(
        users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.email.clone(), i))
            .collect(),
    );
    let record = {
        let (edits, rl_changes, index) = (edits.clone(), rl_changes.clone(), index.clone());
        move |owner: usize, out: &EditOutcome| {
            edits[owner].fetch_add(1, Ordering::Relaxed);
            if let Some((who, _)) = &out.reverse {
                rl_changes[index[who]].fetch_add(1, Ordering::Relaxed);
            }
        }
    };

    // 1. Everyone adds user 0 at the same moment.
    let barrier = Arc::new(tokio::sync::Barrier::new(USERS - 1));
    let mut tasks = Vec::new();
    for i in 1..USERS {
        let (store, users, barrier, record) = (
            store.clone(),
            users.clone(),
            barrier.clone(),
            record.clone(),
        );
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let op = ListOp::Add {
                list: List::Forward,
                target: ContactRef::Email(users[0].email.clone()),
                group: None,
            };
            let out = store.edit(users[i].id, op).await.unwrap().unwrap();
            record(i, &out);
        }));
    }
    for t in tasks.drain(..) {
        t.await.unwrap();
    }
    let r0 = store.roster(users[0].id).await.unwrap();
    assert_eq!(r0.version, USERS as u64 - 1);
    assert_eq!(r0.on_list(List::Reverse).count(), USERS - 1);

    // 2. Each (owner, target) pair is driven by exactly one task with a model of its state,
    //    so the final state is known; each owner and each target is hit by many tasks at once.
    #[derive(Clone, Copy, Default, PartialEq, Debug)]
    struct Pair {
        fl: bool,
        al: bool,
        bl: bool,
    }
    let mut tasks = Vec::new();
    for owner in 0..USERS {
        for part in 0..TASKS_PER_OWNER {
            let (store, users, record) = (store.clone(), users.clone(), record.clone());
            tasks.push(tokio::spawn(async move {
                let targets: Vec<usize> = (0..USERS)
                    .filter(|t| *t != owner && t % TASKS_PER_OWNER == part)
                    .collect();
                let mut model: HashMap<usize, Pair> = targets
                    .iter()
                    .map(|&t| {
                        (
                            t,
                            Pair {
                                fl: t == 0 && owner != 0,
                                ..Pair::default()
                            },
                        )
                    })
                    .collect();
                let mut rng = Rng(0x9E37_79B9_7F4A_7C15 ^ ((owner * 31 + part) as u64 + 1));
                for _ in 0..STEPS {
                    let t = targets[rng.below(targets.len())];
                    let p = model.get_mut(&t).unwrap();
                    let who = ContactRef::Email(users[t].email.clone());
                    let (op, list) = match rng.below(4) {
                        0 | 1 => (p.fl, List::Forward),
                        2 if !p.bl => (p.al, List::Allow),
                        _ if !p.al => (p.bl, List::Block),
                        _ => (p.al, List::Allow),
                    };
                    let op = if op {
                        ListOp::Remove {
                            list,
                            target: who,
                            group: None,
                        }
                    } else {
                        ListOp::Add {
                            list,
                            target: who,
                            group: None,
                        }
                    };
                    let out = match store.edit(users[owner].id, op.clone()).await.unwrap() {
                        Ok(out) => out,
                        Err(e) => panic!("user{owner:02}: {op:?} refused: {e}"),
                    };
                    match list {
                        List::Forward => p.fl = !p.fl,
                        List::Allow => p.al = !p.al,
                        _ => p.bl = !p.bl,
                    }
                    record(owner, &out);
                }
                model
            }));
        }
    }
    let mut expected: HashMap<(usize, usize), Pair> = HashMap::new();
    for (n, t) in tasks.into_iter().enumerate() {
        let owner = n / TASKS_PER_OWNER;
        for (target, pair) in t.await.unwrap() {
            expected.insert((owner, target), pair);
        }
    }

    // 3. Chaos: unmodelled random FL edits from many tasks, some refused; only the
    //    invariants and the acknowledged counts are checked.
    let mut tasks = Vec::new();
    for n in 0..40 {
        let (store, users, record) = (store.clone(), users.clone(), record.clone());
        tasks.push(tokio::spawn(async move {
            let mut rng = Rng(0xD1B5_4A32_D192_ED03 ^ (n as u64 + 1));
            let mut changed = Vec::new();
            for _ in 0..STEPS {
                let owner = rng.below(USERS);
                let target = (owner + 1 + rng.below(USERS - 1)) % USERS;
                let who = ContactRef::Email(users[target].email.clone());
                let op = if rng.below(2) == 0 {
                    ListOp::Add {
                        list: List::Forward,
                        target: who,
                        group: None,
                    }
                } else {
                    ListOp::Remove {
                        list: List::Forward,
                        target: who,
                        group: None,
                    }
                };
                match store.edit(users[owner].id, op).await.unwrap() {
                    Ok(out) => {
                        record(owner, &out);
                        changed.push((owner, target));
                    }
                    Err(ListError::AlreadyOnList | ListError::NotOnList) => {}
                    Err(e) => panic!("unexpected refusal: {e}"),
                }
            }
            changed
        }));
    }
    let mut chaos_touched = std::collections::HashSet::new();
    for t in tasks {
        chaos_touched.extend(t.await.unwrap());
    }

    // Check: acknowledged edits are present, RL mirrors FL, versions count every change.
    let mut rosters = Vec::new();
    for u in users.iter() {
        rosters.push(store.roster(u.id).await.unwrap());
    }
    for (a, ra) in rosters.iter().enumerate() {
        let expected_version =
            edits[a].load(Ordering::Relaxed) + rl_changes[a].load(Ordering::Relaxed);
        assert_eq!(ra.version, expected_version, "version of user{a:02}");
        for (b, rb) in rosters.iter().enumerate() {
            if a == b {
                assert!(ra.contact(&users[a].email).is_none());
                continue;
            }
            let ab = mask(ra, &users[b].email);
            let ba = mask(rb, &users[a].email);
            assert_eq!(ab & FL != 0, ba & RL != 0, "user{a:02} FL vs user{b:02} RL");
            if let Some(pair) = expected.get(&(a, b)) {
                assert_eq!(ab & AL != 0, pair.al, "user{a:02} AL user{b:02}");
                assert_eq!(ab & BL != 0, pair.bl, "user{a:02} BL user{b:02}");
                if !chaos_touched.contains(&(a, b)) {
                    assert_eq!(ab & FL != 0, pair.fl, "user{a:02} FL user{b:02}");
                }
            }
            if let Some(c) = ra.contact(&users[b].email) {
                assert_eq!(
                    c.peer.lists_of_me.0, ba,
                    "peer view of user{b:02} in user{a:02}'s roster"
                );
            }
        }
    }
}

/// Many tasks editing one owner at once (each task its own contact): the owner's edits take
/// turns, so the versions they return are exactly 1..=n with none twice, the final version
/// is n, every acknowledged change is present, and each contact's RL and version follow
/// its task's FL edits.
pub async fn concurrent_edits_of_one_owner(store: Arc<dyn Store>) {
    const TASKS: usize = 12;
    const STEPS: usize = 10;

    let owner = user(&*store, "owner").await;
    let mut peers = Vec::new();
    for i in 0..TASKS {
        peers.push(user(&*store, &format!("peer{i:02}")).await);
    }
    let barrier = Arc::new(tokio::sync::Barrier::new(TASKS));
    let mut tasks = Vec::new();
    for peer in peers.iter().cloned() {
        let (store, owner, barrier) = (store.clone(), owner.clone(), barrier.clone());
        tasks.push(tokio::spawn(async move {
            barrier.wait().await;
            let (mut fl, mut al) = (false, false);
            let mut versions = Vec::new();
            for step in 0..STEPS {
                // Even steps toggle FL (and so the peer's RL), odd steps AL.
                let (list, on) = if step % 2 == 0 {
                    fl = !fl;
                    (List::Forward, fl)
                } else {
                    al = !al;
                    (List::Allow, al)
                };
                let target = ContactRef::Email(peer.email.clone());
                let op = if on {
                    ListOp::Add {
                        list,
                        target,
                        group: None,
                    }
                } else {
                    ListOp::Remove {
                        list,
                        target,
                        group: None,
                    }
                };
                versions.push(ok(&*store, &owner, op).await.version);
            }
            (versions, fl, al)
        }));
    }
    let mut versions = Vec::new();
    let mut expected = Vec::new();
    for t in tasks {
        let (v, fl, al) = t.await.unwrap();
        versions.extend(v);
        expected.push((fl, al));
    }
    versions.sort_unstable();
    let n = (TASKS * STEPS) as u64;
    assert_eq!(versions, (1..=n).collect::<Vec<_>>(), "versions handed out");

    let r = store.roster(owner.id).await.unwrap();
    assert_eq!(r.version, n);
    let fl_toggles = STEPS.div_ceil(2) as u64;
    for (peer, (fl, al)) in peers.iter().zip(expected) {
        let m = mask(&r, &peer.email);
        assert_eq!((m & FL != 0, m & AL != 0), (fl, al), "{}", peer.email);
        let p = store.roster(peer.id).await.unwrap();
        assert_eq!(mask(&p, &owner.email) & RL != 0, fl, "RL of {}", peer.email);
        assert_eq!(p.version, fl_toggles, "version of {}", peer.email);
    }
}

/// The variable naming the Postgres server that tests create their databases on.
pub const TEST_DATABASE_URL_VAR: &str = "BUTTERFLY_TEST_DATABASE_URL";
/// Where tests look when [`TEST_DATABASE_URL_VAR`] is unset: the local server, trust auth.
pub const DEFAULT_TEST_DATABASE_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// A Postgres server on which tests create throw-away databases, `bf_test_<random hex>`,
/// so that tests run in parallel and against a clean schema without seeing each other.
///
/// Get one with [`with_postgres`], which also drops the databases afterwards.
#[derive(Debug)]
pub struct TestPostgres {
    /// The server as the test URL names it (its database is only used to connect).
    admin: PgConnectOptions,
    /// The databases created so far, as (name, URL).
    created: Mutex<Vec<(String, String)>>,
}

impl TestPostgres {
    /// The server at [`TEST_DATABASE_URL_VAR`] (default [`DEFAULT_TEST_DATABASE_URL`]),
    /// or `None` when it cannot be reached — after printing that the test is skipped and
    /// how to start the server, so that `cargo test` passes on a machine without Postgres.
    ///
    /// # Panics
    /// When it cannot be reached and `CI` is `true`: in CI a skipped test would hide that
    /// the Postgres store went untested.
    pub async fn reachable() -> Option<Arc<Self>> {
        let url = std::env::var(TEST_DATABASE_URL_VAR)
            .unwrap_or_else(|_| DEFAULT_TEST_DATABASE_URL.to_string());
        let problem = match PgConnectOptions::from_str(&url) {
            Err(e) => e.to_string(),
            Ok(admin) => {
                let attempt = tokio::time::timeout(
                    Duration::from_secs(10),
                    PgConnection::connect_with(&admin),
                )
                .await;
                match attempt {
                    Ok(Ok(conn)) => {
                        let _ = conn.close().await;
                        return Some(Arc::new(TestPostgres {
                            admin,
                            created: Mutex::new(Vec::new()),
                        }));
                    }
                    Ok(Err(e)) => e.to_string(),
                    Err(_) => "no answer within 10 s".to_string(),
                }
            }
        };
        let skipped = format!(
            "skipped: Postgres not reachable at {url}; start it (e.g. pg_ctlcluster \
             --skip-systemctl-redirect 15 main start) or set {TEST_DATABASE_URL_VAR}"
        );
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{skipped}\n({problem}; CI=true, so this fails instead of skipping)");
        }
        eprintln!("{skipped}\n({problem})");
        None
    }

    /// Pool settings for test stores: patient, since tests load a small machine with many
    /// concurrent edits; the defaults are for production.
    pub fn options() -> PgOptions {
        PgOptions {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(60),
            statement_timeout: Some(Duration::from_secs(60)),
        }
    }

    /// Create a new, empty database (no schema); returns its URL.
    pub async fn create_database(&self) -> String {
        let hex = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("bf_test_{}", &hex[..16]);
        self.admin_execute(&format!("CREATE DATABASE {name}")).await;
        let url = self
            .admin
            .clone()
            .database(&name)
            .to_url_lossy()
            .to_string();
        self.created.lock().unwrap().push((name, url.clone()));
        url
    }

    /// A store on a new, migrated database.
    pub async fn store(&self) -> PgStore {
        let url = self.create_database().await;
        let store = PgStore::connect(&url, Self::options()).await.unwrap();
        store.migrate().await.unwrap();
        store
    }

    /// The URLs of the databases created so far, oldest first: to look at what the API
    /// cannot show (leftover rows) after a test.
    pub fn database_urls(&self) -> Vec<String> {
        let created = self.created.lock().unwrap();
        created.iter().map(|(_, url)| url.clone()).collect()
    }

    /// Drop every database created so far, disconnecting whoever still uses it.
    pub async fn drop_databases(&self) {
        let names: Vec<String> = {
            let mut created = self.created.lock().unwrap();
            created.drain(..).map(|(name, _)| name).collect()
        };
        for name in names {
            self.admin_execute(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                .await;
        }
    }

    async fn admin_execute(&self, sql: &str) {
        let mut conn = PgConnection::connect_with(&self.admin).await.unwrap();
        sqlx::query(sql).execute(&mut conn).await.unwrap();
        let _ = conn.close().await;
    }
}

/// Run `test` with a reachable [`TestPostgres`] (or skip it, see
/// [`TestPostgres::reachable`]), then drop the databases it created — also when it fails:
/// the test runs as a task of its own, and its panic is re-raised after the cleanup.
pub async fn with_postgres<F, Fut>(test: F)
where
    F: FnOnce(Arc<TestPostgres>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let Some(pg) = TestPostgres::reachable().await else {
        return;
    };
    let outcome = tokio::spawn(test(pg.clone())).await;
    pg.drop_databases().await;
    if let Err(e) = outcome {
        match e.try_into_panic() {
            Ok(panic) => std::panic::resume_unwind(panic),
            Err(e) => panic!("test task failed: {e}"),
        }
    }
}

/// An offline message from `from` to `to`.
pub fn oim(from: &str, to: &Account, text: &str) -> OimNew {
    OimNew {
        recipient: to.id,
        sender: email(from),
        sender_name: format!("{from} name"),
        run_id: uuid::Uuid::new_v4(),
        seq: 1,
        text: text.into(),
    }
}

async fn stored(store: &dyn Store, new: OimNew) -> OimMeta {
    store.oim_store(new).await.unwrap().unwrap()
}

/// Offline messages are listed oldest first, fetched whole, marked read on request,
/// deleted by id, kept per recipient (nobody sees or deletes another's), and go with the
/// recipient's account.
pub async fn offline_messages(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;
    assert!(store.oims(bob.id).await.unwrap().is_empty());

    let mut first = oim("alice", &bob, "hello bob \u{1F98B}");
    first.seq = 7;
    let run = first.run_id;
    let m1 = stored(store, first).await;
    let m2 = stored(store, oim("carol", &bob, "second")).await;
    let m3 = stored(store, oim("bob", &alice, "for alice")).await;
    assert_eq!(
        (m1.sender.clone(), m1.sender_name.as_str(), m1.size, m1.read),
        (
            email("alice"),
            "alice name",
            "hello bob \u{1F98B}".len() as u32,
            false
        )
    );
    assert!(m2.received_at > m1.received_at, "arrival order is strict");

    let listed = store.oims(bob.id).await.unwrap();
    assert_eq!(listed, vec![m1.clone(), m2.clone()]);
    assert_eq!(store.oims(alice.id).await.unwrap(), vec![m3.clone()]);
    assert!(store.oims(UserId(i64::MAX)).await.unwrap().is_empty());

    let got = store.oim_get(bob.id, m1.id, false).await.unwrap().unwrap();
    assert_eq!(
        (&got.meta, got.run_id, got.seq, got.text.as_str()),
        (&m1, run, 7, "hello bob \u{1F98B}")
    );
    // Another recipient's message is not there for bob, nor an unknown id.
    assert_eq!(store.oim_get(bob.id, m3.id, true).await.unwrap(), None);
    assert_eq!(
        store
            .oim_get(bob.id, uuid::Uuid::new_v4(), false)
            .await
            .unwrap(),
        None
    );
    assert!(
        !store
            .oim_get(alice.id, m3.id, false)
            .await
            .unwrap()
            .unwrap()
            .meta
            .read
    );

    let read = store.oim_get(bob.id, m1.id, true).await.unwrap().unwrap();
    assert!(read.meta.read);
    let listed = store.oims(bob.id).await.unwrap();
    assert_eq!((listed[0].read, listed[1].read), (true, false));

    // Deleting names only the recipient's own; other ids count nothing.
    assert_eq!(store.oim_delete(bob.id, &[m3.id]).await.unwrap(), 0);
    assert_eq!(
        store
            .oim_delete(bob.id, &[m1.id, m2.id, uuid::Uuid::new_v4()])
            .await
            .unwrap(),
        2
    );
    assert!(store.oims(bob.id).await.unwrap().is_empty());
    assert_eq!(store.oims(alice.id).await.unwrap(), vec![m3]);
    assert_eq!(store.oim_delete(bob.id, &[m1.id]).await.unwrap(), 0);

    // The mailbox goes with the account; the sender's account does not matter.
    stored(store, oim("alice", &bob, "again")).await;
    assert!(store.delete_account(&email("alice")).await.unwrap());
    assert_eq!(store.oims(bob.id).await.unwrap().len(), 1);
    assert!(store.delete_account(&email("bob")).await.unwrap());
    assert!(store.oims(bob.id).await.unwrap().is_empty());
}

/// The limits: the text size cap, the per-recipient cap (another recipient is not
/// affected, and deleting makes room), sender names cut, unknown recipients refused.
pub async fn offline_message_limits(store: Arc<dyn Store>) {
    let store = &*store;
    let alice = user(store, "alice").await;
    let bob = user(store, "bob").await;

    let big = "x".repeat(MAX_OIM_TEXT + 1);
    assert_eq!(
        store.oim_store(oim("alice", &bob, &big)).await.unwrap(),
        Err(OimRefused::TooLarge)
    );
    stored(store, oim("alice", &bob, &big[1..])).await;
    let gone = Account {
        id: UserId(i64::MAX),
        ..bob.clone()
    };
    assert_eq!(
        store.oim_store(oim("alice", &gone, "hi")).await.unwrap(),
        Err(OimRefused::NoRecipient)
    );
    let mut named = oim("alice", &alice, "hi");
    named.sender_name = "n".repeat(MAX_OIM_SENDER_NAME + 10);
    assert_eq!(
        stored(store, named).await.sender_name.len(),
        MAX_OIM_SENDER_NAME
    );

    for _ in 1..MAX_OIMS_PER_RECIPIENT {
        stored(store, oim("alice", &bob, "hi")).await;
    }
    assert_eq!(
        store
            .oim_store(oim("alice", &bob, "one too many"))
            .await
            .unwrap(),
        Err(OimRefused::MailboxFull)
    );
    let mailbox = store.oims(bob.id).await.unwrap();
    assert_eq!(mailbox.len(), MAX_OIMS_PER_RECIPIENT);
    stored(store, oim("bob", &alice, "alice has room")).await;
    assert_eq!(store.oim_delete(bob.id, &[mailbox[0].id]).await.unwrap(), 1);
    stored(store, oim("alice", &bob, "room again")).await;
}
