//! HTTP/2 abuse from one client connection, against lb and, as the reference, HAProxy 2.6
//! running the same haproxy.cfg (issue #13 item 6): rapid reset, a CONTINUATION flood, an
//! HPACK bomb, and PING and SETTINGS floods from a client that never reads. lb must bound
//! each (close the connection or refuse the request, forward little or nothing, within
//! seconds); HAProxy's figures are printed beside lb's.
//!
//! The client speaks HTTP/2 with prior knowledge over cleartext TCP on loopback, writing
//! frames by hand; every loop is bounded in count and time.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use lb_tests::differential::Pair;
use lb_tests::h2wire::{
    CONTINUATION, END_HEADERS, END_STREAM, GOAWAY, HEADERS, PING, RST_STREAM, SETTINGS, frame,
    get_block, hpack_int, hpack_str, literal, preface,
};

/// A backend that answers every request with an empty 200 and counts the requests.
fn counting_backend() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind backend");
    let port = l.local_addr().expect("addr").port();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { return };
            let counter = counter.clone();
            std::thread::spawn(move || {
                let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
                let mut buf = Vec::new();
                let mut tmp = [0u8; 4096];
                loop {
                    while let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                        buf.drain(..end + 4);
                        counter.fetch_add(1, Ordering::SeqCst);
                        if s.write_all(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n")
                            .is_err()
                        {
                            return;
                        }
                    }
                    match s.read(&mut tmp) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&tmp[..n]),
                    }
                }
            });
        }
    });
    (port, seen)
}

fn pair(tag: &str, backend: u16) -> Pair {
    Pair::start(tag, |p| {
        format!(
            "defaults\n    mode http\n    timeout client 3s\n    timeout connect 2s\n    timeout server 5s\n\n\
frontend fe\n    bind 127.0.0.1:{p} proto h2\n    default_backend be\n\n\
backend be\n    server s1 127.0.0.1:{backend}\n"
        )
    })
}

/// What the proxy did with one abusive connection.
#[derive(Debug, Default)]
struct Outcome {
    /// The error code of a GOAWAY it sent.
    goaway: Option<u32>,
    /// RST_STREAM frames it sent.
    resets: usize,
    /// Responses (HEADERS frames) it sent.
    responses: usize,
    /// It closed the connection (EOF, reset, or a failed write) …
    closed: bool,
    /// … this long after the abuse started.
    after: Duration,
}

/// Sends `wire` from a second thread (the proxy's answers are read meanwhile, so neither
/// side blocks the other) and reads frames until the connection ends or `limit` passes.
fn abuse(addr: SocketAddr, wire: Vec<u8>, limit: Duration) -> Outcome {
    let mut c = TcpStream::connect(addr).expect("connect");
    let mut w = c.try_clone().expect("clone");
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        for piece in wire.chunks(16 * 1024) {
            if w.write_all(piece).is_err() {
                return false;
            }
        }
        true
    });
    let mut out = Outcome::default();
    let mut buf = Vec::new();
    let mut tmp = [0u8; 16 * 1024];
    let _ = c.set_read_timeout(Some(Duration::from_millis(200)));
    while start.elapsed() < limit {
        match c.read(&mut tmp) {
            Ok(0) => {
                out.closed = true;
                break;
            }
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => {
                out.closed = true;
                break;
            }
        }
        while buf.len() >= 9 {
            let len =
                (usize::from(buf[0]) << 16) | (usize::from(buf[1]) << 8) | usize::from(buf[2]);
            if buf.len() < 9 + len {
                break;
            }
            match buf[3] {
                GOAWAY if len >= 8 => {
                    out.goaway = Some(u32::from_be_bytes([buf[13], buf[14], buf[15], buf[16]]));
                }
                RST_STREAM => out.resets += 1,
                HEADERS => out.responses += 1,
                _ => {}
            }
            buf.drain(..9 + len);
        }
    }
    out.after = start.elapsed();
    drop(c);
    let _ = writer.join();
    out
}

/// Waits until the backend's count has been still for 300 ms (bounded: 3 s).
fn settled(seen: &AtomicUsize) -> usize {
    let start = Instant::now();
    let mut last = seen.load(Ordering::SeqCst);
    while start.elapsed() < Duration::from_secs(3) {
        std::thread::sleep(Duration::from_millis(300));
        let now = seen.load(Ordering::SeqCst);
        if now == last {
            break;
        }
        last = now;
    }
    last
}

fn have_haproxy() -> bool {
    if std::process::Command::new("haproxy")
        .arg("-v")
        .output()
        .is_err()
    {
        eprintln!("skipped: haproxy is not installed (CI installs it)");
        return false;
    }
    true
}

/// Runs `wire` against HAProxy, then lb (each with a fresh backend count); prints both and
/// returns lb's outcome and backend count.
fn both(tag: &str, wire: &[u8], limit: Duration) -> (Outcome, usize) {
    let (port, seen) = counting_backend();
    let p = pair(tag, port);
    let h = abuse(p.h, wire.to_vec(), limit);
    let h_seen = settled(&seen);
    seen.store(0, Ordering::SeqCst);
    let l = abuse(p.l, wire.to_vec(), limit);
    let l_seen = settled(&seen);
    eprintln!("{tag}: HAProxy {h:?}, backend saw {h_seen}");
    eprintln!("{tag}: lb      {l:?}, backend saw {l_seen}");
    (l, l_seen)
}

/// Rapid reset (CVE-2023-44487): 5,000 streams opened and cancelled at once. lb answers
/// with GOAWAY ENHANCE_YOUR_CALM and closes; the server sees a bounded share.
#[test]
fn rapid_reset_is_cut_off() {
    if !have_haproxy() {
        return;
    }
    let block = get_block();
    let mut wire = preface();
    for i in 0..5_000u32 {
        let id = 2 * i + 1;
        wire.extend_from_slice(&frame(HEADERS, END_STREAM | END_HEADERS, id, &block));
        wire.extend_from_slice(&frame(RST_STREAM, 0, id, &8u32.to_be_bytes())); // CANCEL
    }
    let (l, seen) = both("rapidreset", &wire, Duration::from_secs(10));
    assert!(l.closed, "lb closes the connection: {l:?}");
    assert!(l.after < Duration::from_secs(5), "within 5 s: {l:?}");
    assert_eq!(l.goaway, Some(0xb), "GOAWAY ENHANCE_YOUR_CALM: {l:?}");
    assert!(
        seen < 1_000,
        "the server saw {seen} of 5000 cancelled requests"
    );
}

/// A header block that never ends: HEADERS without END_HEADERS, then 20,000 CONTINUATION
/// frames of 1 KiB fields (20 MiB). lb refuses it long before the end, and forwards nothing.
#[test]
fn continuation_flood_is_cut_off() {
    if !have_haproxy() {
        return;
    }
    let mut wire = preface();
    wire.extend_from_slice(&frame(HEADERS, END_STREAM, 1, &get_block()));
    let mut field = Vec::new();
    literal(&mut field, "x-flood", &"a".repeat(1024));
    let cont = frame(CONTINUATION, 0, 1, &field);
    for _ in 0..20_000 {
        wire.extend_from_slice(&cont);
    }
    let (l, seen) = both("continuation", &wire, Duration::from_secs(10));
    assert!(l.closed, "lb closes the connection: {l:?}");
    assert!(l.after < Duration::from_secs(5), "within 5 s: {l:?}");
    assert_eq!(
        seen, 0,
        "nothing of the endless header block reaches the server"
    );
}

/// An HPACK bomb: a 4 KiB field entered in the dynamic table once, then referenced by its
/// one-byte index 4,000 times in one header block (16 MiB decoded from 20 KiB). lb refuses
/// the request and forwards nothing.
#[test]
fn hpack_bomb_is_refused() {
    if !have_haproxy() {
        return;
    }
    let mut wire = preface();
    let mut block = get_block();
    // Literal with incremental indexing, new name: becomes dynamic index 62.
    block.push(0x40);
    hpack_str(&mut block, "x-bomb");
    hpack_str(&mut block, &"b".repeat(4096));
    for _ in 0..4_000 {
        hpack_int(&mut block, 0x80, 7, 62);
    }
    // One HEADERS frame and CONTINUATIONs within the default 16 KiB frame size.
    let mut pieces = block.chunks(16_000);
    let first = pieces.next().unwrap_or_default();
    let rest: Vec<&[u8]> = pieces.collect();
    let flags = if rest.is_empty() {
        END_STREAM | END_HEADERS
    } else {
        END_STREAM
    };
    wire.extend_from_slice(&frame(HEADERS, flags, 1, first));
    for (i, p) in rest.iter().enumerate() {
        let f = if i + 1 == rest.len() { END_HEADERS } else { 0 };
        wire.extend_from_slice(&frame(CONTINUATION, f, 1, p));
    }
    let (l, seen) = both("hpackbomb", &wire, Duration::from_secs(6));
    assert_eq!(seen, 0, "the bomb is not forwarded");
    assert!(
        l.closed || l.resets > 0 || l.responses > 0,
        "lb refuses the stream or closes: {l:?}"
    );
    assert!(
        !l.closed || l.after < Duration::from_secs(5),
        "within 5 s: {l:?}"
    );
}

/// Control-frame floods from a client that never reads what it asks for (each PING and
/// SETTINGS wants an ACK): frames are written for up to 15 s. lb stops serving the
/// connection within `timeout client` (3 s) plus a margin, as HAProxy does.
#[test]
fn ping_and_settings_floods_from_a_non_reader_are_closed() {
    if !have_haproxy() {
        return;
    }
    let (port, _seen) = counting_backend();
    let p = pair("ctlflood", port);
    for (name, f) in [
        ("PING", frame(PING, 0, 0, &[7u8; 8])),
        ("SETTINGS", frame(SETTINGS, 0, 0, &[0, 3, 0, 0, 0, 100])),
    ] {
        let batch: Vec<u8> = f.iter().copied().cycle().take(f.len() * 512).collect();
        for (who, addr) in [("HAProxy", p.h), ("lb", p.l)] {
            // The client never reads: only its writes tell when the proxy gave up.
            let mut c = TcpStream::connect(addr).expect("connect");
            let _ = c.set_write_timeout(Some(Duration::from_millis(500)));
            let start = Instant::now();
            let mut failed = c.write_all(&preface()).is_err();
            let mut off = 0;
            while !failed && start.elapsed() < Duration::from_secs(15) {
                match c.write(&batch[off..]) {
                    Ok(n) => off = (off + n) % batch.len(),
                    Err(e)
                        if matches!(
                            e.kind(),
                            std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                        ) => {}
                    Err(_) => failed = true,
                }
            }
            let took = start.elapsed();
            eprintln!("{name} flood: {who} closed: {failed} after {took:?}");
            if who == "lb" {
                assert!(failed, "lb closes a non-reading {name} flooder");
                assert!(
                    took < Duration::from_secs(12),
                    "{name}: within timeout client and a margin: {took:?}"
                );
            }
        }
    }
}
