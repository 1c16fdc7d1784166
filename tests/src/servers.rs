//! Identity servers for lab backends: each answers with its name, so a test can see which
//! backend a connection or request reached. Plain threads, bounded by the sockets' timeouts;
//! they stop when their listener is closed or the lab's namespace goes away.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream, UdpSocket};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

const IO_TIMEOUT: Duration = Duration::from_secs(30);

/// Stops a server when dropped (the accept loop polls a flag).
#[derive(Debug)]
pub struct ServerGuard {
    stop: Arc<AtomicBool>,
    handle: Option<JoinHandle<()>>,
}

impl ServerGuard {
    /// Stops the server and waits for its accept loop.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(h) = self.handle.take() {
            let _ = h.join();
        }
    }
}

impl Drop for ServerGuard {
    fn drop(&mut self) {
        self.shutdown();
    }
}

fn accept_loop(
    listener: TcpListener,
    stop: Arc<AtomicBool>,
    handler: impl Fn(TcpStream) + Send + Sync + 'static,
) -> JoinHandle<()> {
    let handler = Arc::new(handler);
    std::thread::spawn(move || {
        if listener.set_nonblocking(true).is_err() {
            return;
        }
        while !stop.load(Ordering::Relaxed) {
            match listener.accept() {
                Ok((conn, _)) => {
                    let _ = conn.set_nonblocking(false);
                    let _ = conn.set_read_timeout(Some(IO_TIMEOUT));
                    let h = handler.clone();
                    std::thread::spawn(move || h(conn));
                }
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    })
}

/// TCP identity server: sends `NAME\n` on accept, then echoes each line back prefixed with
/// `NAME:` until the client closes.
pub fn tcp_identity(listener: TcpListener, name: &str) -> ServerGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let name = name.to_owned();
    let handle = accept_loop(listener, stop.clone(), move |mut conn| {
        if conn.write_all(format!("{name}\n").as_bytes()).is_err() {
            return;
        }
        let Ok(reader) = conn.try_clone() else { return };
        for line in BufReader::new(reader).lines() {
            let Ok(line) = line else { break };
            if conn
                .write_all(format!("{name}:{line}\n").as_bytes())
                .is_err()
            {
                break;
            }
        }
    });
    ServerGuard {
        stop,
        handle: Some(handle),
    }
}

/// UDP identity server: answers each datagram with `NAME:` + payload.
pub fn udp_identity(socket: UdpSocket, name: &str) -> ServerGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = stop.clone();
    let name = name.to_owned();
    let handle = std::thread::spawn(move || {
        let _ = socket.set_read_timeout(Some(Duration::from_millis(50)));
        let mut buf = [0u8; 2048];
        while !flag.load(Ordering::Relaxed) {
            if let Ok((n, peer)) = socket.recv_from(&mut buf) {
                let mut reply = format!("{name}:").into_bytes();
                reply.extend_from_slice(&buf[..n]);
                let _ = socket.send_to(&reply, peer);
            }
        }
    });
    ServerGuard {
        stop,
        handle: Some(handle),
    }
}

/// HTTP/1.1 identity server: every request gets `200` with body `NAME` and headers
/// `X-Server: NAME`; `X-Seen-Cookie` echoes the Cookie header it received (or `-`), and
/// every request header `X-*` comes back as `X-Echo-*`; paths starting `/cacheable` get
/// `Cache-Control: max-age=60` and `Last-Modified`. Keep-alive is honoured.
/// `GET /healthz` answers `200 ok`.
pub fn http_identity(listener: TcpListener, name: &str) -> ServerGuard {
    let stop = Arc::new(AtomicBool::new(false));
    let name = name.to_owned();
    let handle = accept_loop(listener, stop.clone(), move |conn| serve_http(conn, &name));
    ServerGuard {
        stop,
        handle: Some(handle),
    }
}

fn serve_http(conn: TcpStream, name: &str) {
    let Ok(mut writer) = conn.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(conn);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut cookie = String::from("-");
        let mut content_length = 0usize;
        let mut close = false;
        let mut echoed = String::new();
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                let v = v.trim();
                let lower = k.to_ascii_lowercase();
                if let Some(rest) = lower.strip_prefix("x-") {
                    echoed.push_str(&format!("X-Echo-{rest}: {v}\r\n"));
                }
                match lower.as_str() {
                    "cookie" => cookie = v.to_owned(),
                    "content-length" => content_length = v.parse().unwrap_or(0),
                    "connection" => close = v.eq_ignore_ascii_case("close"),
                    _ => {}
                }
            }
        }
        let mut body = vec![0u8; content_length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let body = if request_line.starts_with("GET /healthz ") {
            "ok"
        } else {
            name
        };
        let target = request_line.split_whitespace().nth(1).unwrap_or("");
        let response = format!(
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nX-Server: {name}\r\nX-Seen-Cookie: {cookie}\r\nX-Seen-Target: {target}\r\n{echoed}\r\n{body}",
            body.len()
        );
        if writer.write_all(response.as_bytes()).is_err() || close {
            return;
        }
    }
}
