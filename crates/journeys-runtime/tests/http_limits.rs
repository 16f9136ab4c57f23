//! The HTTP port against parked and hostile clients, on a real socket: headers sent a byte at a
//! time or never finished, idle keep-alive connections, oversized headers, and more clients
//! than the connection cap. Each case checks that the server stays able to answer.

// Test code: a failed unwrap is a failed test with its message.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::time::Duration;

use journeys_runtime::Shutdown;
use journeys_runtime::http::{HttpLimits, serve_with};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};

/// Bounds every wait of these tests; none should come near it.
const PATIENCE: Duration = Duration::from_secs(10);

fn limits() -> HttpLimits {
    HttpLimits {
        max_connections: 4,
        header_read_timeout: Duration::from_millis(300),
        max_header_bytes: 16 * 1024,
        body_read_timeout: Duration::from_secs(1),
    }
}

async fn start() -> (SocketAddr, Shutdown) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = axum::Router::new().route("/health", axum::routing::get(|| async { "ok" }));
    let stop = Shutdown::new();
    let wait = stop.wait();
    tokio::spawn(async move { serve_with(listener, router, limits(), wait).await });
    (addr, stop)
}

/// One request on a fresh connection; the status line.
async fn get(addr: SocketAddr, extra_headers: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request =
        format!("GET /health HTTP/1.1\r\nhost: x\r\nconnection: close\r\n{extra_headers}\r\n");
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer))
        .await
        .expect("an answer in time")
        .unwrap();
    String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned()
}

/// Reads until the server closes the connection (or resets it).
async fn closed_by_server(tcp: &mut TcpStream) -> bool {
    let mut buf = [0_u8; 1024];
    matches!(
        tokio::time::timeout(PATIENCE, tcp.read(&mut buf)).await,
        Ok(Ok(0) | Err(_))
    )
}

#[tokio::test]
async fn headers_that_never_finish_are_cut_off_and_the_server_still_answers() {
    let (addr, _stop) = start().await;
    let mut slow = TcpStream::connect(addr).await.unwrap();
    // A byte at a time, never the blank line that ends the head.
    let mut cut_off = false;
    for byte in b"GET /health HTTP/1.1\r\nhost" {
        if slow.write_all(&[*byte]).await.is_err() {
            cut_off = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        cut_off || closed_by_server(&mut slow).await,
        "the slow client was let be"
    );
    assert_eq!(get(addr, "").await, "HTTP/1.1 200 OK");
}

#[tokio::test]
async fn idle_connections_are_closed_so_the_cap_frees_up() {
    let (addr, _stop) = start().await;
    // As many parked sockets as the cap allows, sending nothing.
    let mut parked = Vec::new();
    for _ in 0..limits().max_connections {
        parked.push(TcpStream::connect(addr).await.unwrap());
    }
    // One more client still gets its answer once the parked ones time out.
    assert_eq!(get(addr, "").await, "HTTP/1.1 200 OK");
    for tcp in &mut parked {
        assert!(closed_by_server(tcp).await, "a parked socket stayed open");
    }
}

#[tokio::test]
async fn an_oversized_request_head_is_refused() {
    let (addr, _stop) = start().await;
    let huge = format!("x-padding: {}\r\n", "a".repeat(500 * 1024));
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET /health HTTP/1.1\r\nhost: x\r\n{huge}\r\n");
    // The server may stop reading (and answer) before the whole head is written.
    let _ = tcp.write_all(request.as_bytes()).await;
    let mut answer = Vec::new();
    let _ = tokio::time::timeout(PATIENCE, tcp.read_to_end(&mut answer)).await;
    let status = String::from_utf8_lossy(&answer)
        .lines()
        .next()
        .unwrap_or_default()
        .to_owned();
    assert!(
        status.is_empty() || status.starts_with("HTTP/1.1 431"),
        "a 500 KB head was answered {status:?}"
    );
    assert!(!status.contains("200"), "{status}");
    assert_eq!(get(addr, "").await, "HTTP/1.1 200 OK");
}
