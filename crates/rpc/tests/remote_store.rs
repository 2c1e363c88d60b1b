//! `RemoteStore` against a real `serve` over TCP on 127.0.0.1, backed by in-memory SQLite
//! (or by a scripted store, where SQLite cannot produce an answer cheaply).

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use butterfly_core::account::{Account, Email, LegacyMd5, NewAccount, UserId};
use butterfly_core::lists::{
    Contact, ContactRef, EditOutcome, Group, GroupRef, Gtc, List, ListError, ListMask, ListOp,
    PeerView, Privacy, Roster, Tombstone, TombstoneKind,
};
use butterfly_core::metrics;
use butterfly_core::store::{Store, StoreError};
use butterfly_rpc::pb::addressbook::v1 as pb;
use butterfly_rpc::{RemoteOptions, RemoteStore};
use butterfly_store::SqliteStore;
use common::{BOUND, Server};
use tokio::net::TcpListener;
use tonic::Code;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;
use tonic_health::pb::{HealthCheckRequest, health_check_response};
use tracing::Instrument as _;
use uuid::Uuid;

fn email(name: &str) -> Email {
    Email::parse(&format!("{name}@example.com")).unwrap()
}

fn new_account(name: &str) -> NewAccount {
    NewAccount {
        email: email(name),
        friendly_name: name.to_string(),
        password_hash: format!("$argon2id$fake${name}"),
        legacy_md5: None,
    }
}

fn add(list: List, name: &str) -> ListOp {
    ListOp::Add {
        list,
        target: ContactRef::Email(email(name)),
        group: None,
    }
}

fn remove(list: List, name: &str) -> ListOp {
    ListOp::Remove {
        list,
        target: ContactRef::Email(email(name)),
        group: None,
    }
}

const ALL_LIST_ERRORS: [ListError; 15] = [
    ListError::InvalidUser,
    ListError::AlreadyOnList,
    ListError::NotOnList,
    ListError::InOppositeList,
    ListError::ListFull,
    ListError::ServerList,
    ListError::SelfContact,
    ListError::InvalidGroup,
    ListError::NotInGroup,
    ListError::TooManyGroups,
    ListError::GroupExists,
    ListError::GroupNameInvalid,
    ListError::GroupZero,
    ListError::InvalidName,
    ListError::InvalidProperty,
];

fn calls_recorded(method: &'static str) -> u64 {
    metrics::global()
        .grpc_client_seconds
        .histogram(method)
        .count()
}

#[tokio::test]
async fn accounts_over_grpc() {
    let server = Server::sqlite().await;
    let remote = server.client();
    let before = calls_recorded("CreateAccount");

    let mut new = new_account("alice");
    new.legacy_md5 = Some(LegacyMd5::new("pw"));
    let alice = remote.create_account(new.clone()).await.unwrap();
    assert_eq!(
        (&alice.email, &alice.friendly_name, &alice.legacy_md5),
        (&new.email, &new.friendly_name, &new.legacy_md5)
    );
    assert!(calls_recorded("CreateAccount") > before, "latency recorded");

    // The same name in other case is a duplicate, and says so distinctly.
    let mut again = new_account("alice");
    again.email = Email::parse("ALICE@example.com").unwrap();
    assert!(matches!(
        remote.create_account(again).await,
        Err(StoreError::DuplicateAccount)
    ));

    let bob = remote.create_account(new_account("bob")).await.unwrap();
    assert_eq!(
        remote.account_by_email(&alice.email).await.unwrap(),
        Some(alice.clone())
    );
    assert_eq!(
        remote.account_by_id(bob.id).await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        remote.account_by_email(&email("nobody")).await.unwrap(),
        None
    );
    assert_eq!(remote.account_by_id(UserId(9999)).await.unwrap(), None);
    assert_eq!(
        remote.accounts().await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );

    // Password change; `None` turns MD5 sign-in off.
    assert!(
        remote
            .set_password(&alice.email, "$argon2id$new".into(), None)
            .await
            .unwrap()
    );
    let changed = remote.account_by_id(alice.id).await.unwrap().unwrap();
    assert_eq!(
        (changed.password_hash.as_str(), changed.legacy_md5),
        ("$argon2id$new", None)
    );
    let md5 = LegacyMd5::new("other");
    assert!(
        remote
            .set_password(&bob.email, "$argon2id$b".into(), Some(md5.clone()))
            .await
            .unwrap()
    );
    assert_eq!(
        remote
            .account_by_id(bob.id)
            .await
            .unwrap()
            .unwrap()
            .legacy_md5,
        Some(md5)
    );
    assert!(
        !remote
            .set_password(&email("nobody"), "x".into(), None)
            .await
            .unwrap()
    );

    assert!(remote.delete_account(&bob.email).await.unwrap());
    assert!(!remote.delete_account(&bob.email).await.unwrap());
    assert_eq!(remote.accounts().await.unwrap(), vec![changed_with(&alice)]);
    server.stop().await;

    fn changed_with(a: &Account) -> Account {
        Account {
            password_hash: "$argon2id$new".into(),
            legacy_md5: None,
            ..a.clone()
        }
    }
}

/// Every list edit and read over gRPC, each answer compared with the store's own, and
/// every refusal SQLite can produce cheaply (all but `ListFull`) arriving as itself.
#[tokio::test]
async fn lists_over_grpc() {
    let local = Arc::new(SqliteStore::open_url("sqlite::memory:").await.unwrap());
    let server = Server::start(local.clone()).await;
    let remote = server.client();

    let alice = remote.create_account(new_account("alice")).await.unwrap();
    let bob = remote.create_account(new_account("bob")).await.unwrap();
    remote.create_account(new_account("carol")).await.unwrap();
    let edit = |op: ListOp| {
        let remote = remote.clone();
        async move { remote.edit(alice.id, op).await.unwrap() }
    };

    let friends = edit(ListOp::AddGroup {
        name: "Friends".into(),
    })
    .await
    .unwrap()
    .group
    .unwrap();
    let out = edit(ListOp::Add {
        list: List::Forward,
        target: ContactRef::Email(bob.email.clone()),
        group: Some(GroupRef::Guid(friends.guid)),
    })
    .await
    .unwrap();
    assert_eq!(out.reverse, Some((bob.email.clone(), true)));
    let bob_contact = out.contact.unwrap();
    assert_eq!(bob_contact.groups, vec![friends.number]);
    assert!(bob_contact.lists.contains(List::Forward));

    let out = edit(add(List::Allow, "bob")).await.unwrap();
    assert_eq!(out.privacy_changed, vec![bob.email.clone()]);
    edit(add(List::Block, "carol")).await.unwrap();
    edit(ListOp::SetPrivacy(Privacy::BlockAll)).await.unwrap();
    edit(ListOp::SetGtc(Gtc::NoAsk)).await.unwrap();
    edit(ListOp::SetFriendlyName("Alice A.".into()))
        .await
        .unwrap();
    let out = edit(ListOp::SetNickname {
        contact: bob_contact.guid,
        name: "Bobby".into(),
    })
    .await
    .unwrap();
    assert_eq!(out.contact.unwrap().nickname.as_deref(), Some("Bobby"));
    edit(ListOp::SetProperty {
        key: "PHH".into(),
        value: "555 0100".into(),
    })
    .await
    .unwrap();
    let work = edit(ListOp::AddGroup {
        name: "Work".into(),
    })
    .await
    .unwrap()
    .group
    .unwrap();
    edit(ListOp::RenameGroup {
        group: GroupRef::Number(work.number),
        name: "Office".into(),
    })
    .await
    .unwrap();
    edit(ListOp::RemoveGroup {
        group: GroupRef::Guid(work.guid),
    })
    .await
    .unwrap();
    let out = edit(ListOp::Remove {
        list: List::Forward,
        target: ContactRef::Guid(bob_contact.guid),
        group: Some(GroupRef::Number(friends.number)),
    })
    .await
    .unwrap();
    assert!(out.contact.unwrap().groups.is_empty());

    // Reads: exactly what the store itself answers.
    for id in [alice.id, bob.id, UserId(9999)] {
        assert_eq!(
            remote.roster(id).await.unwrap(),
            local.roster(id).await.unwrap()
        );
        assert_eq!(
            remote.tombstones(id, 0).await.unwrap(),
            local.tombstones(id, 0).await.unwrap()
        );
    }
    // The removed group left a tombstone, and it came through.
    let gone = remote.tombstones(alice.id, 0).await.unwrap();
    assert_eq!(gone.len(), 1);
    assert_eq!(
        (gone[0].kind, gone[0].guid),
        (TombstoneKind::Group, work.guid)
    );
    let roster = remote.roster(alice.id).await.unwrap();
    assert_eq!(
        (roster.privacy, roster.gtc, roster.friendly_name.as_str()),
        (Privacy::BlockAll, Gtc::NoAsk, "Alice A.")
    );
    assert_eq!(
        roster.properties,
        vec![("PHH".to_string(), "555 0100".to_string())]
    );
    let view = remote.peer_view(alice.id, bob.id).await.unwrap();
    assert_eq!(view, local.peer_view(alice.id, bob.id).await.unwrap());
    assert_eq!(view.privacy, Privacy::BlockAll);
    assert!(view.lists_of_me.contains(List::Allow) && view.lets_me_see());
    assert!(
        !remote
            .peer_view(alice.id, UserId(9999))
            .await
            .unwrap()
            .lists_of_me
            .contains(List::Allow)
    );

    // Refusals.
    let cases = [
        (add(List::Forward, "nobody"), ListError::InvalidUser),
        (add(List::Allow, "bob"), ListError::AlreadyOnList),
        (remove(List::Allow, "carol"), ListError::NotOnList),
        (add(List::Allow, "carol"), ListError::InOppositeList),
        (add(List::Reverse, "bob"), ListError::ServerList),
        (add(List::Forward, "alice"), ListError::SelfContact),
        (
            ListOp::Add {
                list: List::Forward,
                target: ContactRef::Email(bob.email.clone()),
                group: Some(GroupRef::Number(77)),
            },
            ListError::InvalidGroup,
        ),
        (
            ListOp::Remove {
                list: List::Forward,
                target: ContactRef::Email(bob.email.clone()),
                group: Some(GroupRef::Number(friends.number)),
            },
            ListError::NotInGroup,
        ),
        (
            ListOp::AddGroup {
                name: "Friends".into(),
            },
            ListError::GroupExists,
        ),
        (
            ListOp::AddGroup {
                name: String::new(),
            },
            ListError::GroupNameInvalid,
        ),
        (
            ListOp::RemoveGroup {
                group: GroupRef::Number(0),
            },
            ListError::GroupZero,
        ),
        (
            ListOp::SetFriendlyName("bad\u{7}".into()),
            ListError::InvalidName,
        ),
        (
            ListOp::SetProperty {
                key: "XYZ".into(),
                value: String::new(),
            },
            ListError::InvalidProperty,
        ),
    ];
    for (op, expected) in cases {
        assert_eq!(edit(op.clone()).await, Err(expected), "{op:?}");
    }
    // Groups up to the cap, then one more.
    for n in 0.. {
        let op = ListOp::AddGroup {
            name: format!("g{n}"),
        };
        match edit(op).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e, ListError::TooManyGroups);
                break;
            }
        }
    }
    assert_eq!(
        remote.roster(alice.id).await.unwrap(),
        local.roster(alice.id).await.unwrap()
    );
    server.stop().await;
}

/// Answers chosen by the test: every `ListError`, a full `EditOutcome`, and store errors.
struct Scripted;

fn full_outcome() -> EditOutcome {
    EditOutcome {
        version: u64::MAX,
        contact: Some(Contact {
            user: UserId(i64::MIN),
            email: email("bob"),
            friendly_name: "B\u{e9}b \u{1F98B}".into(),
            nickname: Some(String::new()),
            guid: Uuid::new_v4(),
            lists: ListMask(u8::MAX),
            groups: vec![0, 1, u32::MAX],
            peer: PeerView {
                privacy: Privacy::BlockAll,
                lists_of_me: ListMask(List::Pending.bit()),
            },
            changed_at: i64::MAX,
        }),
        group: Some(Group {
            number: 30,
            guid: Uuid::new_v4(),
            name: "Friends".into(),
            changed_at: 1,
        }),
        reverse: Some((email("carol"), false)),
        privacy_changed: vec![email("dave"), email("erin")],
    }
}

#[async_trait]
impl Store for Scripted {
    async fn create_account(&self, _: NewAccount) -> Result<Account, StoreError> {
        Err(StoreError::DuplicateAccount)
    }
    async fn account_by_email(&self, _: &Email) -> Result<Option<Account>, StoreError> {
        Err(StoreError::Backend("disk on fire".into()))
    }
    async fn account_by_id(&self, _: UserId) -> Result<Option<Account>, StoreError> {
        Err(StoreError::Backend("disk on fire".into()))
    }
    async fn accounts(&self) -> Result<Vec<Account>, StoreError> {
        Err(StoreError::Backend("disk on fire".into()))
    }
    async fn set_password(
        &self,
        _: &Email,
        _: String,
        _: Option<LegacyMd5>,
    ) -> Result<bool, StoreError> {
        Err(StoreError::Backend("disk on fire".into()))
    }
    async fn delete_account(&self, _: &Email) -> Result<bool, StoreError> {
        Err(StoreError::Backend("disk on fire".into()))
    }
    async fn roster(&self, owner: UserId) -> Result<Roster, StoreError> {
        Ok(Roster {
            owner: Some(owner),
            version: 7,
            friendly_name: "x".into(),
            privacy: Privacy::AllowAll,
            gtc: Gtc::Ask,
            groups: Vec::new(),
            contacts: full_outcome().contact.into_iter().collect(),
            properties: vec![("MOB".into(), "Y".into())],
            stamp: 1_714_557_600_123,
            settings_changed_at: 1_714_557_600_001,
        })
    }
    async fn peer_view(&self, _: UserId, _: UserId) -> Result<PeerView, StoreError> {
        Err(StoreError::Backend("disk on fire".into()))
    }
    async fn edit(
        &self,
        _: UserId,
        op: ListOp,
    ) -> Result<Result<EditOutcome, ListError>, StoreError> {
        match op {
            ListOp::SetFriendlyName(i) => Ok(Err(ALL_LIST_ERRORS[i.parse::<usize>().unwrap()])),
            ListOp::SetGtc(_) => Err(StoreError::Backend("disk on fire".into())),
            _ => Ok(Ok(full_outcome())),
        }
    }
    /// Owner 1 has one tombstone of each kind, stamped just after `since`.
    async fn tombstones(&self, owner: UserId, since: i64) -> Result<Vec<Tombstone>, StoreError> {
        if owner != UserId(1) {
            return Err(StoreError::Backend("disk on fire".into()));
        }
        Ok(scripted_tombstones(since))
    }
}

fn scripted_tombstones(since: i64) -> Vec<Tombstone> {
    let guid = |n| Uuid::from_u128(n);
    vec![
        Tombstone {
            kind: TombstoneKind::Contact,
            guid: guid(1),
            email: Some(email("bob")),
            deleted_at: since + 1,
        },
        Tombstone {
            kind: TombstoneKind::Group,
            guid: guid(2),
            email: None,
            deleted_at: since + 1,
        },
    ]
}

#[tokio::test]
async fn every_answer_kind_round_trips() {
    let server = Server::start(Arc::new(Scripted)).await;
    let remote = server.client();
    for (i, expected) in ALL_LIST_ERRORS.iter().enumerate() {
        let answer = remote
            .edit(UserId(1), ListOp::SetFriendlyName(i.to_string()))
            .await
            .unwrap();
        assert_eq!(answer, Err(*expected));
    }
    let outcome = remote
        .edit(UserId(1), ListOp::SetPrivacy(Privacy::AllowAll))
        .await
        .unwrap()
        .unwrap();
    let mut expected = full_outcome();
    // GUIDs are fresh per call; compare everything else exactly.
    expected.contact.as_mut().unwrap().guid = outcome.contact.as_ref().unwrap().guid;
    expected.group.as_mut().unwrap().guid = outcome.group.as_ref().unwrap().guid;
    assert_eq!(outcome, expected);
    let roster = remote.roster(UserId(-5)).await.unwrap();
    assert_eq!(roster.owner, Some(UserId(-5)));
    assert_eq!(
        (roster.stamp, roster.settings_changed_at),
        (1_714_557_600_123, 1_714_557_600_001)
    );
    assert_eq!(roster.contacts[0].changed_at, i64::MAX);
    assert_eq!(
        remote.tombstones(UserId(1), 41).await.unwrap(),
        scripted_tombstones(41)
    );

    assert!(matches!(
        remote.create_account(new_account("x")).await,
        Err(StoreError::DuplicateAccount)
    ));
    let backend = |r: Result<(), StoreError>| match r {
        Err(StoreError::Backend(m)) => assert!(m.contains("disk on fire"), "{m}"),
        other => panic!("{other:?}"),
    };
    backend(remote.account_by_email(&email("x")).await.map(drop));
    backend(remote.account_by_id(UserId(1)).await.map(drop));
    backend(remote.accounts().await.map(drop));
    backend(
        remote
            .set_password(&email("x"), String::new(), None)
            .await
            .map(drop),
    );
    backend(remote.delete_account(&email("x")).await.map(drop));
    backend(remote.peer_view(UserId(1), UserId(2)).await.map(drop));
    backend(
        remote
            .edit(UserId(1), ListOp::SetGtc(Gtc::Ask))
            .await
            .map(drop),
    );
    backend(remote.tombstones(UserId(2), 0).await.map(drop));
    server.stop().await;
}

/// The store-agnostic suite, each check against a fresh SQLite store behind a fresh server.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance_suite_over_grpc() {
    let servers = Arc::new(Mutex::new(Vec::new()));
    let make = {
        let servers = servers.clone();
        move || {
            let servers = servers.clone();
            async move {
                let server = Server::sqlite().await;
                // Generous deadlines: the concurrency checks queue many edits on one
                // writer, on a small and busy test machine.
                let options = RemoteOptions {
                    timeout: Duration::from_secs(20),
                    ..RemoteOptions::default()
                };
                let remote = RemoteStore::connect_lazy(&server.uri(), options).unwrap();
                servers.lock().unwrap().push(server);
                Arc::new(remote) as Arc<dyn Store>
            }
        }
    };
    butterfly_store::conformance::run_all(make).await;
    let servers = std::mem::take(&mut *servers.lock().unwrap());
    for server in servers {
        server.stop().await;
    }
}

#[tokio::test]
async fn unreachable_address_book_is_a_backend_error() {
    // A port nobody listens on: bind one, then close it.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let remote = RemoteStore::connect_lazy(&addr.to_string(), RemoteOptions::default()).unwrap();
    for _ in 0..2 {
        let answer = tokio::time::timeout(BOUND, remote.roster(UserId(1)))
            .await
            .expect("a refused connection fails, it does not hang");
        assert!(matches!(answer, Err(StoreError::Backend(_))), "{answer:?}");
    }
}

#[tokio::test]
async fn stuck_address_book_hits_the_deadline() {
    // Accepts connections and never says a word.
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hold = tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            held.push(socket);
        }
    });
    let options = RemoteOptions {
        timeout: Duration::from_millis(300),
        connect_timeout: Duration::from_millis(300),
    };
    let remote = RemoteStore::connect_lazy(&format!("http://{addr}"), options).unwrap();
    let answer = tokio::time::timeout(BOUND, remote.account_by_email(&email("alice")))
        .await
        .expect("the deadline ends the call");
    assert!(matches!(answer, Err(StoreError::Backend(_))), "{answer:?}");
    let answer = tokio::time::timeout(BOUND, remote.edit(UserId(1), ListOp::SetGtc(Gtc::Ask)))
        .await
        .expect("the deadline ends the call");
    assert!(matches!(answer, Err(StoreError::Backend(_))), "{answer:?}");
    let answer = tokio::time::timeout(BOUND, remote.tombstones(UserId(1), 0))
        .await
        .expect("the deadline ends the call");
    assert!(matches!(answer, Err(StoreError::Backend(_))), "{answer:?}");
    hold.abort();
}

#[tokio::test]
async fn malformed_uri_is_refused() {
    assert!(RemoteStore::connect_lazy("http://exa mple:1", RemoteOptions::default()).is_err());
}

#[tokio::test]
async fn health_is_serving_until_shutdown() {
    let server = Server::sqlite().await;
    let channel = tonic::transport::Endpoint::from_shared(server.uri())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "butterfly.addressbook.v1.AddressBook"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }

    // A watcher sees the service go NOT_SERVING when shutdown starts.
    let mut watch = health
        .watch(HealthCheckRequest {
            service: "butterfly.addressbook.v1.AddressBook".into(),
        })
        .await
        .unwrap()
        .into_inner();
    let first = watch.message().await.unwrap().unwrap();
    assert_eq!(first.status, ServingStatus::Serving as i32);
    server.shutdown.cancel();
    let next = tokio::time::timeout(BOUND, watch.message())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        health_check_response::ServingStatus::try_from(next.status),
        Ok(ServingStatus::NotServing)
    );
    drop((watch, health));
    server.stop().await;
}

#[tokio::test]
async fn invalid_requests_are_invalid_argument() {
    use pb::address_book_client::AddressBookClient;

    let server = Server::sqlite().await;
    let mut raw = AddressBookClient::connect(server.uri()).await.unwrap();
    let status = raw
        .account_by_email(pb::AccountByEmailRequest {
            email: "not a name".into(),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = raw
        .edit(pb::EditRequest { owner: 1, op: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = raw
        .edit(pb::EditRequest {
            owner: 1,
            op: Some(pb::ListOp {
                op: Some(pb::list_op::Op::SetPrivacy(pb::Privacy::Unspecified as i32)),
            }),
        })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let status = raw
        .create_account(pb::CreateAccountRequest { account: None })
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    server.stop().await;
}

/// With no propagator installed (no exporter configured), the client sends no trace
/// context and everything works as usual.
#[tokio::test]
async fn no_trace_context_without_a_propagator() {
    let (remote, seen, server) = common::traceparent_recorder().await;
    let accounts = remote
        .accounts()
        .instrument(tracing::info_span!("caller"))
        .await;
    assert_eq!(accounts.unwrap(), Vec::new());
    assert_eq!(*seen.lock().unwrap(), vec![None]);
    server.abort();
}
