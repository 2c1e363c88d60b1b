//! The command line as users and scripts call it: the real binary, real processes.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use butterfly_testkit::Client;
use tokio::io::{AsyncBufReadExt, BufReader};

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_butterfly"));
    // Cheap hashing keeps the test fast; the flags are what a user would pass.
    c.env_remove("BUTTERFLY_DATA_DIR")
        .env("BUTTERFLY_ARGON2_MEMORY_KIB", "64")
        .env("BUTTERFLY_ARGON2_ITERATIONS", "1");
    c
}

fn temp_dir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("butterfly-cli-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn run(args: &[&str]) -> Output {
    bin().args(args).output().expect("run butterfly")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn dir_arg(d: &Path) -> String {
    d.display().to_string()
}

#[test]
fn user_commands_with_data_dir_before_or_after_the_subcommand() {
    let d = temp_dir("user");
    let dir = dir_arg(&d);
    let o = run(&[
        "--data-dir",
        &dir,
        "user",
        "add",
        "alice@example.com",
        "--password",
        "pw",
        "--name",
        "Alice A",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("added alice@example.com"),
        "{}",
        stdout(&o)
    );
    let o = run(&[
        "user",
        "add",
        "Bob@Example.com",
        "--password",
        "pw",
        "--legacy-md5",
        "--data-dir",
        &dir,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    // Duplicates and bad names are refused with a clear message and a failing status.
    let o = run(&[
        "user",
        "add",
        "alice@example.com",
        "--password",
        "x",
        "--data-dir",
        &dir,
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("already exists"), "{}", stderr(&o));
    let o = run(&[
        "user",
        "add",
        "not-an-email",
        "--password",
        "x",
        "--data-dir",
        &dir,
    ]);
    assert!(!o.status.success());
    assert!(
        stderr(&o).contains("not a valid sign-in name"),
        "{}",
        stderr(&o)
    );

    let o = run(&["user", "list", "--data-dir", &dir]);
    assert_eq!(
        stdout(&o),
        "alice@example.com\tAlice A\nbob@example.com\tbob@example.com  legacy-md5\n"
    );
    let o = run(&[
        "--data-dir",
        &dir,
        "user",
        "passwd",
        "alice@example.com",
        "--password",
        "new",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&[
        "--data-dir",
        &dir,
        "user",
        "passwd",
        "nobody@example.com",
        "--password",
        "new",
    ]);
    assert!(!o.status.success());
    let o = run(&["user", "delete", "bob@example.com", "--data-dir", &dir]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = run(&["user", "list", "--data-dir", &dir]);
    assert_eq!(stdout(&o), "alice@example.com\tAlice A\n");
    let o = run(&["migrate", "--data-dir", &dir]);
    assert_eq!(stdout(&o), "migrations applied\n");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn environment_variables_work_like_flags() {
    let d = temp_dir("env");
    let o = bin()
        .env("BUTTERFLY_DATA_DIR", &d)
        .args(["user", "add", "carol@example.com", "--password", "pw"])
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(d.join("butterfly.db").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

/// A composition that cannot work is refused at once, saying what is missing.
#[test]
fn role_compositions_that_cannot_work_are_refused_clearly() {
    let d = temp_dir("roles");
    let dir = dir_arg(&d);
    let secret = "0123456789abcdef0123456789abcdef";
    let listen = ["--ns-listen", "127.0.0.1:0", "--sb-listen", "127.0.0.1:0"];
    let cases: [(&[&str], &str); 7] = [
        (&["--target", "gateway"], "unknown role 'gateway'"),
        (&["--target", "ns-gateway"], "give --redis-url"),
        (
            &[
                "--target",
                "ns-gateway",
                "--redis-url",
                "redis://127.0.0.1:1",
            ],
            "same --ticket-secret",
        ),
        (
            &[
                "--target",
                "switchboard",
                "--redis-url",
                "redis://127.0.0.1:1",
                "--ticket-secret",
                secret,
            ],
            "needs --addressbook-url",
        ),
        // The address book's edits reach users of gateways elsewhere only through Redis,
        // from either side.
        (
            &[
                "--target",
                "addressbook,passport",
                "--ticket-secret",
                secret,
            ],
            "give --redis-url (the one the gateways use)",
        ),
        (
            &[
                "--target",
                "ns-gateway,switchboard",
                "--ticket-secret",
                secret,
                "--addressbook-url",
                "http://127.0.0.1:1",
            ],
            "give --redis-url (the one the address book uses)",
        ),
        // Nothing listens on port 1: the bus cannot start, and says where it looked.
        (
            &["--redis-url", "redis://127.0.0.1:1"],
            "connecting to Redis at redis://127.0.0.1:1",
        ),
    ];
    for (args, expected) in cases {
        let mut all = vec!["serve", "--data-dir", &dir];
        all.extend(listen);
        all.extend(args);
        let o = run(&all);
        assert!(!o.status.success(), "{args:?} started");
        assert!(stderr(&o).contains(expected), "{args:?}: {}", stderr(&o));
    }
    let _ = std::fs::remove_dir_all(&d);
}

/// `serve` prints one line per listener, real clients sign in, and SIGTERM drains:
/// every client gets OUT SSD and the process exits 0.
#[tokio::test]
async fn serve_prints_listeners_and_drains_on_sigterm() {
    let d = temp_dir("serve");
    let dir = dir_arg(&d);
    let o = run(&[
        "user",
        "add",
        "alice@example.com",
        "--password",
        "pw",
        "--legacy-md5",
        "--data-dir",
        &dir,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let mut child = tokio::process::Command::from(bin())
        .args(["serve", "--data-dir", &dir])
        .args([
            "--ns-listen",
            "127.0.0.1:0",
            "--sb-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("spawn serve");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut addrs = std::collections::HashMap::new();
    for _ in 0..4 {
        let l = tokio::time::timeout(butterfly_testkit::TIMEOUT, lines.next_line())
            .await
            .expect("listening line in time")
            .unwrap()
            .unwrap();
        let (role, addr) = l
            .split_once(" listening on ")
            .unwrap_or_else(|| panic!("unexpected line {l:?}"));
        addrs.insert(
            role.to_owned(),
            addr.parse::<std::net::SocketAddr>().unwrap(),
        );
    }
    assert_eq!(addrs.len(), 4, "{addrs:?}");
    let mut md5 = Client::connect(addrs["ns"], 7).await;
    md5.login(addrs["http"], "alice@example.com", "pw").await;
    let mut twn = Client::connect(addrs["ns"], 12).await;
    twn.login(addrs["http"], "alice@example.com", "pw").await;
    // The second sign-in replaced the first.
    assert_eq!(md5.closed_lines().await, ["OUT OTH"]);

    let pid = child.id().unwrap().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    assert_eq!(twn.closed_lines().await, ["OUT SSD"]);
    let status = tokio::time::timeout(butterfly_testkit::TIMEOUT, child.wait())
        .await
        .expect("exit in time")
        .unwrap();
    assert!(status.success(), "{status:?}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `user bulk-add`: many accounts in one go, usable like any other (listed, MD5 secret
/// when asked); a second run with names that exist fails and adds nothing.
#[test]
fn bulk_add_creates_numbered_accounts() {
    let d = temp_dir("bulk");
    let dir = dir_arg(&d);
    let args = [
        "user",
        "bulk-add",
        "--prefix",
        "load",
        "--count",
        "3",
        "--domain",
        "example.com",
        "--password",
        "pw",
        "--legacy-md5",
        "--data-dir",
        &dir,
    ];
    let o = run(&args);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).starts_with("added 3 accounts load0@example.com … load2@example.com"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("argon2id m=64 KiB, t=1"),
        "{}",
        stdout(&o)
    );
    let o = run(&["user", "list", "--data-dir", &dir]);
    assert_eq!(
        stdout(&o),
        "load0@example.com\tload0  legacy-md5\nload1@example.com\tload1  legacy-md5\n\
         load2@example.com\tload2  legacy-md5\n"
    );
    let o = run(&args);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("exists already"), "{}", stderr(&o));
    let o = run(&["user", "list", "--data-dir", &dir]);
    assert_eq!(stdout(&o).lines().count(), 3);
    let _ = std::fs::remove_dir_all(&d);
}
