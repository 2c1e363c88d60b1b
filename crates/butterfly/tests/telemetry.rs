//! Traces leave the process over OTLP/HTTP when `OTEL_EXPORTER_OTLP_ENDPOINT` is set:
//! the real binary, a real sign-in, and a minimal OTLP receiver that records what is
//! POSTed to `/v1/traces`.

use std::net::SocketAddr;
use std::process::Stdio;
use std::time::Duration;

use butterfly_testkit::{Client, TIMEOUT};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpListener;
use tokio::sync::mpsc;

const BIN: &str = env!("CARGO_BIN_EXE_butterfly");

/// One HTTP request: its request line and body.
struct Posted {
    request_line: String,
    body: Vec<u8>,
}

/// Accept HTTP/1.1 requests, answer 200 with an empty (valid) protobuf response, and
/// pass each request on.
async fn otlp_receiver() -> (SocketAddr, mpsc::UnboundedReceiver<Posted>) {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind receiver");
    let addr = listener.local_addr().expect("receiver address");
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                loop {
                    let mut request_line = String::new();
                    if reader.read_line(&mut request_line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let mut length = 0usize;
                    loop {
                        let mut header = String::new();
                        if reader.read_line(&mut header).await.unwrap_or(0) == 0 {
                            return;
                        }
                        let header = header.trim_end();
                        if header.is_empty() {
                            break;
                        }
                        if let Some((name, value)) = header.split_once(':')
                            && name.eq_ignore_ascii_case("content-length")
                        {
                            length = value.trim().parse().unwrap_or(0);
                        }
                    }
                    let mut body = vec![0; length.min(16 << 20)];
                    if reader.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let _ = tx.send(Posted {
                        request_line: request_line.trim_end().to_owned(),
                        body,
                    });
                    let reply = "HTTP/1.1 200 OK\r\ncontent-type: application/x-protobuf\r\ncontent-length: 0\r\n\r\n";
                    if reader.get_mut().write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, rx)
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[tokio::test]
async fn traces_are_exported_over_otlp_when_configured() {
    let (receiver, mut posted) = otlp_receiver().await;
    let dir = std::env::temp_dir().join(format!("butterfly-otlp-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("data dir");
    let data_dir = dir.display().to_string();
    let cheap = ["--argon2-memory-kib", "64", "--argon2-iterations", "1"];
    let add = std::process::Command::new(BIN)
        .args(["user", "add", "alice@example.com", "--password", "pw"])
        .args(["--data-dir", &data_dir])
        .args(cheap)
        .output()
        .expect("butterfly user add");
    assert!(
        add.status.success(),
        "{}",
        String::from_utf8_lossy(&add.stderr)
    );

    let mut server = tokio::process::Command::new(BIN)
        .arg("serve")
        .args(["--data-dir", &data_dir])
        .args(["--ns-listen", "127.0.0.1:0", "--sb-listen", "127.0.0.1:0"])
        .args([
            "--http-listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
        ])
        .args(["--drain-seconds", "1"])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{receiver}"))
        .env("OTEL_SERVICE_NAME", "butterfly-otlp-test")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("butterfly serve");
    let mut lines = BufReader::new(server.stdout.take().expect("stdout")).lines();
    let mut addrs = std::collections::HashMap::new();
    tokio::time::timeout(TIMEOUT, async {
        while let Ok(Some(l)) = lines.next_line().await {
            if let Some((name, addr)) = l.split_once(" listening on ") {
                addrs.insert(
                    name.to_owned(),
                    addr.parse::<SocketAddr>().expect("address"),
                );
                if name == "admin" {
                    return;
                }
            }
        }
    })
    .await
    .expect("the server starts");

    let mut alice = Client::connect(addrs["ns"], 12).await;
    alice.login(addrs["http"], "alice@example.com", "pw").await;

    // Stopping flushes the batch exporter.
    let pid = server.id().expect("running").to_string();
    std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .expect("kill");
    let status = tokio::time::timeout(TIMEOUT, server.wait()).await;
    assert!(matches!(status, Ok(Ok(s)) if s.success()), "{status:?}");

    let got = tokio::time::timeout(Duration::from_secs(5), posted.recv())
        .await
        .expect("a POST to the receiver")
        .expect("receiver running");
    assert_eq!(got.request_line, "POST /v1/traces HTTP/1.1");
    assert!(
        contains(&got.body, b"butterfly-otlp-test"),
        "the service name is in the export"
    );
    assert!(
        contains(&got.body, b"ns"),
        "the connection span is in the export"
    );
    let _ = std::fs::remove_dir_all(&dir);
}
