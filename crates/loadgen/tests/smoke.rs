//! The CI smoke runs: the real `butterfly-loadgen` binary (two worker processes) against
//! the embedded server, with thresholds on correctness only — no errors, no missed or
//! duplicate notifications, every message delivered. Speed is for the benchmark
//! (docs/BENCHMARKS.md), not for these tests.
//!
//! - 200 users with 10 contacts each, MSNP7 (MD5), MSNP12 and MSNP18 (pre-issued
//!   tickets), presence changes, chats and churn;
//! - 40 users signing in each client's own way: MD5, Passport 1.4, the token service's
//!   RST (WLM 8.x) and RST2 (WLM 2009).

use std::path::PathBuf;
use std::process::Command;

use butterfly_core::account::PasswordCost;
use butterfly_loadgen::graph::Degrees;
use butterfly_loadgen::seed;
use butterfly_testkit::TestCluster;

const SECRET: &str = "smoke-test-ticket-secret-0123456789abcdef";

/// Seed `users` accounts with `contacts` each into the cluster's store and run the
/// generator with `args` (after `--manifest` and `--ns`) and the correctness thresholds:
/// no errors, nothing missed or duplicated, every user signed in. Checks that it passed
/// them, that every expected notification arrived, and returns its JSON results.
async fn run(
    cluster: &TestCluster,
    name: &str,
    users: usize,
    contacts: usize,
    args: &[&str],
) -> serde_json::Value {
    let cheap = PasswordCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let store = cluster.store();
    let manifest = seed::seed(
        store.as_ref(),
        name,
        users,
        Degrees::Fixed(contacts),
        3,
        cheap,
    )
    .await
    .expect("seeding");
    let dir: PathBuf =
        std::env::temp_dir().join(format!("butterfly-loadgen-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let json = dir.join("results.json");

    let ns = cluster.ns_addr().to_string();
    let mut all: Vec<String> = [
        "run",
        "--manifest",
        manifest_path.to_str().unwrap(),
        "--ns",
        &ns,
    ]
    .iter()
    .map(|a| (*a).to_owned())
    .collect();
    all.extend(args.iter().map(|a| (*a).to_owned()));
    let users_text = users.to_string();
    let thresholds = [
        "--max-errors",
        "0",
        "--max-missed",
        "0",
        "--max-duplicates",
        "0",
        "--min-signins",
        &users_text,
        "--json",
        json.to_str().unwrap(),
    ];
    all.extend(thresholds.iter().map(|a| (*a).to_owned()));
    let exe = env!("CARGO_BIN_EXE_butterfly-loadgen");
    let status = tokio::task::spawn_blocking(move || Command::new(exe).args(all).status())
        .await
        .unwrap()
        .expect("the load generator runs");
    let results: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&json).expect("results written")).unwrap();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(
        status.success(),
        "thresholds failed: {}",
        results["failed_thresholds"]
    );
    assert_eq!(count(&results, "signins"), users as u64);
    assert!(count(&results, "notifications_expected") > 0);
    assert_eq!(
        count(&results, "notifications"),
        count(&results, "notifications_expected")
    );
    results
}

fn count(results: &serde_json::Value, counter: &str) -> u64 {
    results["counters"][counter].as_u64().unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_without_a_missed_notification() {
    let cluster = TestCluster::start_with(|s| s.ticket_secret = Some(SECRET.to_owned())).await;

    let results = run(
        &cluster,
        "smoke",
        200,
        10,
        &[
            "--auth",
            "ticket",
            "--ticket-secret",
            SECRET,
            "--dialects",
            "7:20,12:40,18:40",
            "--workers",
            "2",
            "--ramp-rate",
            "400",
            "--settle-secs",
            "1",
            "--steady-secs",
            "6",
            "--presence-rate",
            "60",
            "--chat-rate",
            "5",
            "--grace-secs",
            "2",
            "--churn-secs",
            "2",
            "--churn-rate",
            "10",
        ],
    )
    .await;
    let count = |k: &str| count(&results, k);
    // 360 changes, each to the watchers that can see it: most of 10 contacts each.
    assert!(
        count("notifications_expected") > 2000,
        "{}",
        results["counters"]
    );
    assert_eq!(count("chats_ok"), count("chats"));
    assert_eq!(count("messages_received"), count("messages_sent"));
    assert!(count("churned") > 0);
    // Each churned user's watchers were told it left, and nobody else was said to leave.
    let signout_fanout = results["latencies"]
        .as_array()
        .unwrap()
        .iter()
        .find(|l| l[0] == "signout_fanout")
        .map(|l| l[2]["count"].as_u64().unwrap())
        .unwrap();
    assert!(signout_fanout > 0, "{}", results["latencies"]);
    assert_eq!(count("unexpected_signouts"), 0);
}

/// Every client's own sign-in: MD5 (MSNP7), Passport 1.4 (MSNP9), the token service's
/// RST with `USR TWN` (MSNP13) and RST2 with `USR SSO` and the MBI proof (MSNP16), each
/// checking the account's argon2id hash; then presence among them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_client_signs_in_its_own_way() {
    let cluster = TestCluster::start().await;
    let http = cluster.http_addr().to_string();
    let results = run(
        &cluster,
        "ownway",
        40,
        6,
        &[
            "--auth",
            "passport",
            "--http",
            &http,
            "--dialects",
            "7:25,9:25,13:25,16:25",
            "--workers",
            "2",
            "--ramp-rate",
            "100",
            "--settle-secs",
            "1",
            "--steady-secs",
            "3",
            "--presence-rate",
            "20",
            "--chat-rate",
            "2",
            "--grace-secs",
            "2",
        ],
    )
    .await;
    // Every dialect's users signed in (`run` checked all 40) and saw each other.
    assert!(count(&results, "notifications") > 0);
}
