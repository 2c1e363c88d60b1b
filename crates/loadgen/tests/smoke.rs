//! The CI smoke run: the real `butterfly-loadgen` binary (two worker processes) against
//! the embedded server — 200 users with 10 contacts each, MSNP7 (MD5), MSNP12 and MSNP18
//! (pre-issued tickets), presence changes, chats and churn — and thresholds on
//! correctness only: no errors, no missed or duplicate notifications, every message
//! delivered. Speed is for the benchmark (docs/BENCHMARKS.md), not for this test.

use std::process::Command;

use butterfly_core::account::PasswordCost;
use butterfly_loadgen::graph::Degrees;
use butterfly_loadgen::seed;
use butterfly_testkit::TestCluster;

const SECRET: &str = "smoke-test-ticket-secret-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_hundred_users_without_a_missed_notification() {
    let cluster = TestCluster::start_with(|s| s.ticket_secret = Some(SECRET.to_owned())).await;
    let cheap = PasswordCost {
        memory_kib: 64,
        iterations: 1,
        parallelism: 1,
    };
    let store = cluster.store();
    let manifest = seed::seed(store.as_ref(), "smoke", 200, Degrees::Fixed(10), 3, cheap)
        .await
        .expect("seeding");
    let dir = std::env::temp_dir().join(format!("butterfly-loadgen-smoke-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest_path = dir.join("manifest.json");
    std::fs::write(&manifest_path, serde_json::to_vec(&manifest).unwrap()).unwrap();
    let json = dir.join("results.json");

    let ns = cluster.ns_addr().to_string();
    let args = [
        "run",
        "--manifest",
        manifest_path.to_str().unwrap(),
        "--ns",
        &ns,
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
        "--max-errors",
        "0",
        "--max-missed",
        "0",
        "--max-duplicates",
        "0",
        "--min-signins",
        "200",
        "--json",
        json.to_str().unwrap(),
    ];
    let args: Vec<String> = args.iter().map(|a| (*a).to_owned()).collect();
    let exe = env!("CARGO_BIN_EXE_butterfly-loadgen");
    let status = tokio::task::spawn_blocking(move || Command::new(exe).args(args).status())
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

    let count = |k: &str| results["counters"][k].as_u64().unwrap_or(0);
    assert_eq!(count("signins"), 200);
    // 360 changes, each to the watchers that can see it: most of 10 contacts each.
    assert!(
        count("notifications_expected") > 2000,
        "{}",
        results["counters"]
    );
    assert_eq!(count("notifications"), count("notifications_expected"));
    assert_eq!(count("chats_ok"), count("chats"));
    assert_eq!(count("messages_received"), count("messages_sent"));
    assert!(count("churned") > 0);
}
