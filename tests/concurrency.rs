//! Many clients editing lists at once, over real connections: nothing acknowledged is
//! lost, including edits to users who are offline and edits to the same user made from
//! many sides at the same moment (the best-known existing server keeps only the last of
//! two edits made to an offline user within about a second).

use std::collections::HashSet;

use butterfly_core::account::Email;
use butterfly_core::lists::List;
use butterfly_testkit::{TestCluster, line_of};

const ONLINE: usize = 12;
const OFFLINE: usize = 12;

fn user(i: usize) -> String {
    format!("user{i:02}@example.com")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_list_edits_lose_nothing() {
    let cluster = std::sync::Arc::new(TestCluster::start().await);
    for i in 0..ONLINE + OFFLINE {
        cluster.add_user(&user(i), "pw", &format!("User{i}")).await;
    }
    // Every online user, at once, adds every other user (online or not) to FL, puts the
    // offline ones on AL too, and then removes every third one again.
    let mut tasks = Vec::new();
    for i in 0..ONLINE {
        let cluster = cluster.clone();
        tasks.push(tokio::spawn(async move {
            let d = if i % 2 == 0 { 12 } else { 9 };
            let mut c = cluster.login(d, &user(i), "pw").await;
            let mut acked = Vec::new();
            for j in (0..ONLINE + OFFLINE).filter(|j| *j != i) {
                let tr = if d >= 10 {
                    c.cmd("ADC", &format!("FL N={} F=U", user(j))).await
                } else {
                    c.cmd("ADD", &format!("FL {} U", user(j))).await
                };
                // RL notices from others may arrive in between: skip them.
                let reply = c
                    .expect_where("the ADD/ADC reply", |f| f.tr_id() == Some(tr))
                    .await;
                assert!(
                    matches!(reply.verb.as_str(), "ADD" | "ADC"),
                    "{}",
                    line_of(&reply)
                );
                acked.push((j, List::Forward));
                if j >= ONLINE {
                    let tr = if d >= 10 {
                        c.cmd("ADC", &format!("AL N={}", user(j))).await
                    } else {
                        c.cmd("ADD", &format!("AL {} U", user(j))).await
                    };
                    let reply = c
                        .expect_where("the AL reply", |f| f.tr_id() == Some(tr))
                        .await;
                    assert!(
                        matches!(reply.verb.as_str(), "ADD" | "ADC"),
                        "{}",
                        line_of(&reply)
                    );
                    acked.push((j, List::Allow));
                }
            }
            let mut removed = HashSet::new();
            for j in (0..ONLINE + OFFLINE).filter(|j| *j != i && j % 3 == 0) {
                let tr = if d >= 10 {
                    // MSNP10+ removes FL entries by contact GUID: look it up from a sync.
                    let guid = cluster
                        .store()
                        .roster(
                            cluster
                                .store()
                                .account_by_email(&Email::parse(&user(i)).unwrap())
                                .await
                                .unwrap()
                                .unwrap()
                                .id,
                        )
                        .await
                        .unwrap()
                        .contact(&Email::parse(&user(j)).unwrap())
                        .unwrap()
                        .guid;
                    c.cmd("REM", &format!("FL {guid}")).await
                } else {
                    c.cmd("REM", &format!("FL {}", user(j))).await
                };
                let reply = c
                    .expect_where("the REM reply", |f| f.tr_id() == Some(tr))
                    .await;
                assert_eq!(reply.verb.as_str(), "REM", "{}", line_of(&reply));
                removed.insert(j);
            }
            (i, acked, removed)
        }));
    }
    let mut expected = Vec::new();
    for t in tasks {
        expected.push(t.await.expect("client task"));
    }

    // Everything acknowledged is stored, and FL and RL agree everywhere.
    let store = cluster.store();
    let store = store.as_ref();
    let id = |i: usize| async move {
        store
            .account_by_email(&Email::parse(&user(i)).unwrap())
            .await
            .unwrap()
            .unwrap()
            .id
    };
    for (i, acked, removed) in &expected {
        let roster = store.roster(id(*i).await).await.unwrap();
        for (j, list) in acked {
            let c = roster.contact(&Email::parse(&user(*j)).unwrap());
            let on = c.is_some_and(|c| c.lists.contains(*list));
            let want = !(*list == List::Forward && removed.contains(j));
            assert_eq!(on, want, "{} {:?} {}", user(*i), list, user(*j));
        }
    }
    for a in 0..ONLINE + OFFLINE {
        let ra = store.roster(id(a).await).await.unwrap();
        for b in (0..ONLINE + OFFLINE).filter(|b| *b != a) {
            let ea = Email::parse(&user(a)).unwrap();
            let eb = Email::parse(&user(b)).unwrap();
            let a_has_b = ra
                .contact(&eb)
                .is_some_and(|c| c.lists.contains(List::Forward));
            let rb = store.roster(id(b).await).await.unwrap();
            let b_rl_a = rb
                .contact(&ea)
                .is_some_and(|c| c.lists.contains(List::Reverse));
            assert_eq!(a_has_b, b_rl_a, "{} FL {} vs RL", user(a), user(b));
        }
    }
    // Each offline user was added by every online user, minus the removals.
    for j in ONLINE..ONLINE + OFFLINE {
        let r = store.roster(id(j).await).await.unwrap();
        let expect = if j % 3 == 0 { 0 } else { ONLINE };
        assert_eq!(r.on_list(List::Reverse).count(), expect, "{}", user(j));
        assert_eq!(
            r.on_list(List::Allow).count(),
            0,
            "AL is the adder's list, not the target's"
        );
    }
}
