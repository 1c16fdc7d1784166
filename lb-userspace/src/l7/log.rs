//! Access logs: HAProxy's `option httplog` / `tcplog` line or a JSON object, per
//! `Global.log_format`, sent to the frontend's `log` targets (syslog, see [`crate::syslog`])
//! at severity info, or, when it has none, through `tracing` (target `lb::access`, lb's own
//! log on stderr).

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use http::{Method, Uri, Version};
use tokio::time::Instant;

use crate::config::model::LogFormat;
use crate::state::Counters;
use crate::syslog::{self, Logger};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("formatting failed")]
    Fmt(#[from] std::fmt::Error),
}

/// Client connections open in the whole process, over every frontend (HAProxy's
/// `actconn`, the `%ac` of a log line).
pub static PROCESS_CONNS: AtomicU64 = AtomicU64::new(0);

/// The connection counts of a log line when it is written, as HAProxy logs them:
/// `%ac/%fc/%bc/%sc` (process, frontend, backend, server; the session logged included).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ConnCounts {
    pub process: u64,
    pub frontend: u64,
    pub backend: u64,
    pub server: u64,
}

impl ConnCounts {
    /// The counts now, of `fe`, `be` and `srv` (none: 0, as HAProxy's `<NOSRV>`).
    pub fn now(fe: &Counters, be: Option<&Counters>, srv: Option<&Counters>) -> ConnCounts {
        let get = |c: Option<&Counters>| c.map_or(0, |c| c.active_conns.load(Ordering::Relaxed));
        ConnCounts {
            process: PROCESS_CONNS.load(Ordering::Relaxed),
            frontend: get(Some(fe)),
            backend: get(be),
            server: get(srv),
        }
    }
}

/// What one access-log line says.
#[derive(Debug)]
pub struct LogRecord {
    pub start: Instant,
    pub wall: SystemTime,
    pub src: SocketAddr,
    pub frontend: Arc<str>,
    pub tls: bool,
    pub backend: Arc<str>,
    pub server: Arc<str>,
    pub method: Method,
    pub uri: Uri,
    pub version: Version,
    pub status: u16,
    pub bytes: u64,
    pub retries: u32,
    pub t_wait_ms: i64,
    pub t_connect_ms: i64,
    pub t_response_ms: i64,
    /// HAProxy's session state at termination, its first two characters (`--`: normal;
    /// `cD`: the client timed out while data was sent to it).
    pub termination: [u8; 2],
    /// Taken when the line is written.
    pub conns: ConnCounts,
}

/// `26/Nov/2026:07:51:35.123` (UTC).
pub fn haproxy_date(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (year, month, day, h, m, sec) = syslog::civil(d.as_secs() as i64);
    format!(
        "{:02}/{}/{}:{:02}:{:02}:{:02}.{:03}",
        day,
        syslog::MONTHS[(month - 1) as usize],
        year,
        h,
        m,
        sec,
        d.subsec_millis()
    )
}

fn version_str(v: Version) -> &'static str {
    match v {
        Version::HTTP_09 => "HTTP/0.9",
        Version::HTTP_10 => "HTTP/1.0",
        Version::HTTP_2 => "HTTP/2.0",
        Version::HTTP_3 => "HTTP/3.0",
        _ => "HTTP/1.1",
    }
}

/// The HAProxy `httplog` line.
pub fn httplog(r: &LogRecord) -> Result<String, LogError> {
    let total = r.start.elapsed().as_millis();
    let mut s = String::with_capacity(160);
    write!(
        s,
        "{}:{} [{}] {}{} {}/{} 0/{}/{}/{}/{} {} {} - - {}{}-- {}/{}/{}/{}/{} 0/0 \"{} {} {}\"",
        r.src.ip(),
        r.src.port(),
        haproxy_date(r.wall),
        r.frontend,
        if r.tls { "~" } else { "" },
        r.backend,
        r.server,
        r.t_wait_ms,
        r.t_connect_ms,
        r.t_response_ms,
        total,
        r.status,
        r.bytes,
        char::from(r.termination[0]),
        char::from(r.termination[1]),
        r.conns.process,
        r.conns.frontend,
        r.conns.backend,
        r.conns.server,
        r.retries,
        r.method,
        r.uri,
        version_str(r.version),
    )?;
    Ok(s)
}

/// The JSON form.
pub fn json(r: &LogRecord) -> String {
    serde_json::json!({
        "client_ip": r.src.ip().to_string(),
        "client_port": r.src.port(),
        "date": haproxy_date(r.wall),
        "frontend": &*r.frontend,
        "tls": r.tls,
        "backend": &*r.backend,
        "server": &*r.server,
        "tw": r.t_wait_ms,
        "tc": r.t_connect_ms,
        "tr": r.t_response_ms,
        "ta": r.start.elapsed().as_millis() as u64,
        "status": r.status,
        "bytes": r.bytes,
        "retries": r.retries,
        "actconn": r.conns.process,
        "feconn": r.conns.frontend,
        "beconn": r.conns.backend,
        "srv_conn": r.conns.server,
        "termination_state": String::from_utf8_lossy(&r.termination),
        "method": r.method.as_str(),
        "uri": r.uri.to_string(),
        "version": version_str(r.version),
    })
    .to_string()
}

/// One `mode tcp` session, HAProxy `option tcplog` style.
#[derive(Debug)]
pub struct TcpRecord<'a> {
    pub wall: SystemTime,
    pub src: SocketAddr,
    pub frontend: &'a str,
    pub backend: &'a str,
    pub server: &'a str,
    pub t_connect_ms: i64,
    pub t_total_ms: i64,
    pub bytes_out: u64,
    pub retries: u32,
    pub conns: ConnCounts,
}

/// The `tcplog` line (or JSON object) of a session.
pub fn tcp_line(r: &TcpRecord<'_>, format: LogFormat) -> String {
    match format {
        LogFormat::Haproxy => format!(
            "{}:{} [{}] {} {}/{} 0/{}/{} {} -- {}/{}/{}/{}/{} 0/0",
            r.src.ip(),
            r.src.port(),
            haproxy_date(r.wall),
            r.frontend,
            r.backend,
            r.server,
            r.t_connect_ms,
            r.t_total_ms,
            r.bytes_out,
            r.conns.process,
            r.conns.frontend,
            r.conns.backend,
            r.conns.server,
            r.retries
        ),
        LogFormat::Json => serde_json::json!({
            "client_ip": r.src.ip().to_string(),
            "client_port": r.src.port(),
            "date": haproxy_date(r.wall),
            "frontend": r.frontend,
            "backend": r.backend,
            "server": r.server,
            "tc": r.t_connect_ms,
            "tt": r.t_total_ms,
            "bytes": r.bytes_out,
            "retries": r.retries,
            "actconn": r.conns.process,
            "feconn": r.conns.frontend,
            "beconn": r.conns.backend,
            "srv_conn": r.conns.server,
        })
        .to_string(),
    }
}

/// Sends one access-log line: to the syslog targets, or to lb's own log when there are none.
fn send(line: &str, targets: &Logger) {
    if targets.is_empty() {
        tracing::info!(target: "lb::access", "{line}");
    } else {
        targets.send(syslog::INFO, line);
    }
}

pub fn emit_tcp(r: &TcpRecord<'_>, format: LogFormat, targets: &Logger) {
    send(&tcp_line(r, format), targets);
}

pub fn emit(r: &LogRecord, format: LogFormat, targets: &Logger) {
    match format {
        LogFormat::Haproxy => match httplog(r) {
            Ok(line) => send(&line, targets),
            Err(e) => tracing::warn!(target: "lb::access", error = %e, "log line"),
        },
        LogFormat::Json => send(&json(r), targets),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn record() -> LogRecord {
        LogRecord {
            start: Instant::now(),
            wall: UNIX_EPOCH + Duration::from_millis(1_795_680_695_123),
            src: "192.0.2.7:40000".parse().expect("addr"),
            frontend: Arc::from("web"),
            tls: true,
            backend: Arc::from("app1"),
            server: Arc::from("s1"),
            method: Method::GET,
            uri: Uri::from_static("/app1?x=1"),
            version: Version::HTTP_11,
            status: 200,
            bytes: 345,
            retries: 1,
            t_wait_ms: 0,
            t_connect_ms: 1,
            t_response_ms: 2,
            termination: *b"--",
            conns: ConnCounts {
                process: 7,
                frontend: 5,
                backend: 3,
                server: 2,
            },
        }
    }

    #[test]
    fn httplog_line() {
        let line = httplog(&record()).expect("fmt");
        assert!(
            line.starts_with("192.0.2.7:40000 [26/Nov/2026:08:11:35.123] web~ app1/s1 0/0/1/2/"),
            "{line}"
        );
        assert!(
            line.ends_with(" 200 345 - - ---- 7/5/3/2/1 0/0 \"GET /app1?x=1 HTTP/1.1\""),
            "{line}"
        );
        let j: serde_json::Value = serde_json::from_str(&json(&record())).expect("json");
        assert_eq!(j["status"], 200);
        assert_eq!(j["server"], "s1");
        assert_eq!(j["uri"], "/app1?x=1");
    }

    #[test]
    fn date_format() {
        let t = UNIX_EPOCH + Duration::from_millis(1_795_680_695_123);
        assert_eq!(haproxy_date(t), "26/Nov/2026:08:11:35.123");
    }
}
