//! The HTTP port beyond the Segment bodies: its other routes (health, metrics, the dev sink,
//! the console), odd requests (methods, paths, huge heads, bad framing), and clients that hold
//! sockets: slow headers, idle connections, bodies that never finish.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use super::{ADMIN_TOKEN, Case, Ctx, Got, case, get_request, keyed, raw, response};

/// A raw request built from `ctx`.
fn request(
    name: &str,
    status: &str,
    message: &str,
    build: impl Fn(&Ctx) -> Vec<u8> + Send + Sync + 'static,
) -> Case {
    let build = Arc::new(build);
    case(name, status, message, move |ctx: Arc<Ctx>| {
        let bytes = build(&ctx);
        async move { Ok(raw(ctx.http, bytes).await) }
    })
}

fn get(name: &str, path: &'static str, status: &str, message: &str) -> Case {
    request(name, status, message, move |_| get_request(path, &[]))
}

pub fn cases() -> Vec<Case> {
    let bearer = || vec![("authorization", format!("Bearer {ADMIN_TOKEN}"))];
    vec![
        get("GET /health", "/health", "200", "\"ok\""),
        get("GET /metrics", "/metrics", "200", "# TYPE"),
        get("an unknown path", "/v1/nope", "404", ""),
        get("GET on an ingest route", "/v1/track", "405", ""),
        get(
            "a path climbing out of the console",
            "/console/../../etc/passwd",
            "404",
            "",
        ),
        get(
            "an encoded NUL in the path",
            "/console/journeys/%00",
            "303",
            "/console/login",
        ),
        get(
            "the dev sink's list without the admin token (one is set)",
            "/dev/sink",
            "401",
            "listing the dev sink needs the admin token: missing bearer token",
        ),
        request(
            "the dev sink's list with a wrong admin token",
            "401",
            "listing the dev sink needs the admin token: invalid bearer token",
            |_| get_request("/dev/sink", &[("authorization", "Bearer nope".to_owned())]),
        ),
        request(
            "the dev sink's list with the admin token as Basic auth",
            "401",
            "listing the dev sink needs the admin token",
            |_| {
                get_request(
                    "/dev/sink",
                    &[("authorization", "Basic aG9zdGlsZTo=".to_owned())],
                )
            },
        ),
        request("the dev sink with the admin token", "200", "[", move |_| {
            get_request("/dev/sink", &bearer())
        }),
        request(
            "a delivery to the dev sink needs no token",
            "200",
            "{\"ok\":true}",
            |_| {
                let body = br#"{"hello":"sink"}"#;
                let mut r = format!(
                    "POST /dev/sink HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                    body.len()
                )
                .into_bytes();
                r.extend_from_slice(body);
                r
            },
        ),
        get("the console without a session", "/console/", "303", "login"),
        get("the console's login form", "/console/login", "200", "<form"),
        request("a wrong console token", "403", "", |_| {
            let body = b"token=wrong";
            let mut r = format!(
                "POST /console/login HTTP/1.1\r\nhost: 127.0.0.1\r\nconnection: close\r\ncontent-type: application/x-www-form-urlencoded\r\ncontent-length: {}\r\n\r\n",
                body.len()
            )
            .into_bytes();
            r.extend_from_slice(body);
            r
        }),
        request("a request line that is not HTTP", "400", "", |_| {
            b"HELLO THERE\r\n\r\n".to_vec()
        }),
        request("a path of 70 KB", "414", "", |_| {
            get_request(&format!("/v1/{}", "a".repeat(70 * 1024)), &[])
        }),
        request("a request head of 500 KB", "431", "", |_| {
            get_request("/health", &[("x-padding", "a".repeat(500 * 1024))])
        }),
        request("2,000 small headers", "431", "", |_| {
            let headers: Vec<(&str, String)> = (0..2000).map(|_| ("x-h", "v".repeat(40))).collect();
            get_request("/health", &headers)
        }),
        request("two different content-lengths", "400", "", |ctx| {
            let mut r = format!(
                "POST /v1/track HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: 2\r\ncontent-length: 40\r\n\r\n{{}}",
                keyed(&ctx.key)[0].1
            )
            .into_bytes();
            r.extend_from_slice(&[b' '; 38]);
            r
        }),
        request("HTTP/1.0 is still answered", "200", "\"ok\"", |_| {
            b"GET /health HTTP/1.0\r\n\r\n".to_vec()
        }),
        request(
            "Expect: 100-continue is honoured",
            "100",
            "HTTP/1.1 200 OK",
            |ctx| {
                let body = br#"{"userId":"expect-user","event":"signup"}"#;
                format!(
                "POST /v1/track HTTP/1.1\r\nhost: x\r\nconnection: close\r\nexpect: 100-continue\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n{}",
                keyed(&ctx.key)[0].1,
                body.len(),
                String::from_utf8_lossy(body)
            )
            .into_bytes()
            },
        ),
        case(
            "a body shorter than its content-length, then closed",
            "closed",
            "",
            |ctx: Arc<Ctx>| async move {
                let mut tcp = TcpStream::connect(ctx.http).await?;
                let head = format!(
                    "POST /v1/track HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: 100\r\n\r\n{{\"userId\"",
                    keyed(&ctx.key)[0].1
                );
                tcp.write_all(head.as_bytes()).await?;
                tcp.shutdown().await?;
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(40), tcp.read_to_end(&mut answer))
                    .await;
                let got = response(&answer);
                // Either no answer or a 400: never a stored event.
                Ok(if got.status == "400" {
                    Got::new("closed", got.message)
                } else {
                    got
                })
            },
        ),
        case(
            "200 concurrent connections are all answered",
            "200",
            "200 answered",
            |ctx: Arc<Ctx>| async move {
                let tasks: Vec<_> = (0..200)
                    .map(|_| tokio::spawn(raw(ctx.http, get_request("/health", &[]))))
                    .collect();
                let mut ok = 0;
                for task in tasks {
                    if task.await?.status == "200" {
                        ok += 1;
                    }
                }
                Ok(Got::new("200", format!("{ok} answered")))
            },
        ),
    ]
}

/// Cases that wait for the server's header, idle and body timeouts; they run beside the others.
pub fn slow_cases() -> Vec<Case> {
    vec![
        case(
            "headers sent a byte at a time are cut off",
            "closed",
            "",
            |ctx: Arc<Ctx>| async move {
                let mut tcp = TcpStream::connect(ctx.http).await?;
                let head = b"POST /v1/track HTTP/1.1\r\nhost: 127.0.0.1\r\nx-slow: ";
                for byte in head {
                    if tcp.write_all(&[*byte]).await.is_err() {
                        return Ok(Got::new("closed", ""));
                    }
                }
                // Then one more byte a second, never the end of the head.
                for _ in 0..40 {
                    if tcp.write_all(b"a").await.is_err() {
                        return Ok(Got::new("closed", ""));
                    }
                    let mut buf = [0_u8; 512];
                    if let Ok(read) =
                        tokio::time::timeout(Duration::from_secs(1), tcp.read(&mut buf)).await
                    {
                        return Ok(match read {
                            Ok(0) | Err(_) => Got::new("closed", ""),
                            Ok(n) => response(&buf[..n]),
                        });
                    }
                }
                Ok(Got::new("still open after 40 s", ""))
            },
        ),
        case(
            "an idle socket is closed",
            "closed",
            "",
            |ctx: Arc<Ctx>| async move {
                let mut tcp = TcpStream::connect(ctx.http).await?;
                let mut buf = [0_u8; 512];
                Ok(
                    match tokio::time::timeout(Duration::from_secs(40), tcp.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => Got::new("closed", ""),
                        Ok(Ok(n)) => response(&buf[..n]),
                        Err(_) => Got::new("still open after 40 s", ""),
                    },
                )
            },
        ),
        case(
            "an idle keep-alive connection is closed after its answer",
            "closed",
            "",
            |ctx: Arc<Ctx>| async move {
                let mut tcp = TcpStream::connect(ctx.http).await?;
                tcp.write_all(b"GET /health HTTP/1.1\r\nhost: x\r\n\r\n")
                    .await?;
                let mut buf = vec![0_u8; 4096];
                let n = tcp.read(&mut buf).await?;
                if !response(&buf[..n]).status.starts_with('2') {
                    return Ok(response(&buf[..n]));
                }
                Ok(
                    match tokio::time::timeout(Duration::from_secs(40), tcp.read(&mut buf)).await {
                        Ok(Ok(0) | Err(_)) => Got::new("closed", ""),
                        Ok(Ok(n)) => response(&buf[..n]),
                        Err(_) => Got::new("still open after 40 s", ""),
                    },
                )
            },
        ),
        case(
            "a body that never finishes is refused",
            "400",
            "unreadable_body",
            |ctx: Arc<Ctx>| async move {
                let mut tcp = TcpStream::connect(ctx.http).await?;
                let head = format!(
                    "POST /v1/track HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: 1000\r\n\r\n{{\"userId\":",
                    keyed(&ctx.key)[0].1
                );
                tcp.write_all(head.as_bytes()).await?;
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(50), tcp.read_to_end(&mut answer))
                    .await;
                Ok(response(&answer))
            },
        ),
        case(
            "a slow but complete body is accepted",
            "200",
            "success",
            |ctx: Arc<Ctx>| async move {
                let body = br#"{"userId":"slow-body","event":"probe"}"#;
                let mut tcp = TcpStream::connect(ctx.http).await?;
                let head = format!(
                    "POST /v1/track HTTP/1.1\r\nhost: x\r\nconnection: close\r\ncontent-type: application/json\r\nauthorization: {}\r\ncontent-length: {}\r\n\r\n",
                    keyed(&ctx.key)[0].1,
                    body.len()
                );
                tcp.write_all(head.as_bytes()).await?;
                for chunk in body.chunks(8) {
                    tcp.write_all(chunk).await?;
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                let mut answer = Vec::new();
                let _ = tokio::time::timeout(Duration::from_secs(40), tcp.read_to_end(&mut answer))
                    .await;
                let got = response(&answer);
                if got.status == "200" {
                    ctx.sent("slow-body");
                }
                Ok(got)
            },
        ),
    ]
}
