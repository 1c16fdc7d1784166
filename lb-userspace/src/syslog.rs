//! Syslog log targets, as HAProxy's `log` lines: UDP (`ip:port`, default port 514), TCP
//! (`tcp@ip:port`), unix datagram sockets (`/dev/log`), `stdout` / `stderr`; facility,
//! level and minimum level;
//! RFC 3164, RFC 5424, `short` and `raw` framing, byte for byte as HAProxy 2.6 writes them
//! except for the tag, which is `lb`:
//!
//! * rfc3164: `<134>Dec  7 10:58:27 lb[5725]: MESSAGE\n`
//! * rfc5424: `<134>1 2026-12-07T10:58:48.096255+00:00 - lb 5725 - - MESSAGE\n`
//!
//! Sending never blocks the caller: the sockets are non-blocking and a line that cannot be
//! sent at once (buffer full, nobody listening, no such socket) is dropped and counted in
//! [`dropped`]. `stdout`/`stderr` go through one writer thread each, behind a bounded queue,
//! and so does each TCP target: its thread connects (again after a failure, at most once a
//! second; lines meanwhile are dropped) and writes each line LF-terminated, as HAProxy 2.6
//! frames its `log tcp@` targets (RFC 6587 non-transparent framing).
//! Timestamps are UTC.
//!
//! A leaf module: it imports nothing else of the crate.

use std::io::Write as _;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{SyncSender, sync_channel};
use std::time::{SystemTime, UNIX_EPOCH};

/// Errors of the syslog module.
#[derive(Debug, thiserror::Error)]
pub enum SyslogError {
    #[error("log target {target}: {source}")]
    Socket {
        target: String,
        source: std::io::Error,
    },
}

/// HAProxy's facility names, in code order.
pub const FACILITIES: [&str; 24] = [
    "kern", "user", "mail", "daemon", "auth", "syslog", "lpr", "news", "uucp", "cron", "auth2",
    "ftp", "ntp", "audit", "alert", "cron2", "local0", "local1", "local2", "local3", "local4",
    "local5", "local6", "local7",
];

/// Syslog severities, in code order.
pub const LEVELS: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The severity of access-log lines (HAProxy's).
pub const INFO: u8 = 6;

/// Where lines go.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Addr {
    Udp(SocketAddr),
    /// `tcp@ADDR:PORT`.
    Tcp(SocketAddr),
    Unix(PathBuf),
    Stdout,
    Stderr,
}

/// How a line is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Rfc3164,
    Rfc5424,
    /// `<PRI>MESSAGE`.
    Short,
    /// The message alone.
    Raw,
}

/// One `log ADDR [len N] [format F] FACILITY [LEVEL [MINLEVEL]]` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    pub addr: Addr,
    /// Longest line sent, framing included (HAProxy's default 1024); longer is truncated.
    pub len: usize,
    pub framing: Framing,
    pub facility: u8,
    /// Lines less severe than this are not sent.
    pub level: u8,
    /// Lines more severe than this are sent with this severity.
    pub minlevel: u8,
    /// The line as written, for messages.
    pub text: String,
}

fn word_index<T: PartialEq>(list: &[T], w: &T) -> Option<u8> {
    list.iter().position(|x| x == w).map(|i| i as u8)
}

/// Parses the words after `log` (`127.0.0.1:514 local0 info`). The error names the word
/// at fault by index.
pub fn parse_target(words: &[&str]) -> Result<LogTarget, (usize, String)> {
    let Some(first) = words.first() else {
        return Err((
            0,
            "`log` needs a target, e.g. \"127.0.0.1:514 local0\"".into(),
        ));
    };
    let addr = parse_addr(first).map_err(|m| (0, m))?;
    let mut i = 1;
    let mut len = 1024usize;
    let mut framing = Framing::Rfc3164;
    loop {
        match words.get(i).copied() {
            Some("len") => {
                let v = words
                    .get(i + 1)
                    .ok_or((i, "`len` needs a number".to_string()))?;
                len = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (80..=65535).contains(n))
                    .ok_or((i + 1, format!("`len {v}`: expected 80 to 65535")))?;
                i += 2;
            }
            Some("format") => {
                let v = words
                    .get(i + 1)
                    .ok_or((i, "`format` needs a name".to_string()))?;
                framing = match *v {
                    "rfc3164" => Framing::Rfc3164,
                    "rfc5424" => Framing::Rfc5424,
                    "short" => Framing::Short,
                    "raw" => Framing::Raw,
                    other => {
                        return Err((
                            i + 1,
                            format!(
                                "unsupported log format `{other}` (expected rfc3164, rfc5424, short or raw)"
                            ),
                        ));
                    }
                };
                i += 2;
            }
            Some("sample") => {
                return Err((i, "`sample` is not supported on log targets".into()));
            }
            _ => break,
        }
    }
    let fac = words.get(i).ok_or((
        words.len().saturating_sub(1),
        "the log target needs a facility, e.g. local0".to_string(),
    ))?;
    let facility = word_index(&FACILITIES, fac).ok_or((
        i,
        format!(
            "unknown syslog facility `{fac}` (expected one of {})",
            FACILITIES.join(", ")
        ),
    ))?;
    let level_at = |j: usize| -> Result<Option<u8>, (usize, String)> {
        match words.get(j) {
            None => Ok(None),
            Some(l) => word_index(&LEVELS, l).map(Some).ok_or((
                j,
                format!(
                    "unknown syslog level `{l}` (expected one of {})",
                    LEVELS.join(", ")
                ),
            )),
        }
    };
    let level = level_at(i + 1)?.unwrap_or(7);
    let minlevel = level_at(i + 2)?.unwrap_or(0);
    if let Some(w) = words.get(i + 3) {
        return Err((i + 3, format!("unexpected `{w}` after the log levels")));
    }
    Ok(LogTarget {
        addr,
        len,
        framing,
        facility,
        level,
        minlevel,
        text: words.join(" "),
    })
}

fn parse_addr(s: &str) -> Result<Addr, String> {
    match s {
        "stdout" => return Ok(Addr::Stdout),
        "stderr" => return Ok(Addr::Stderr),
        "fd@1" => return Ok(Addr::Stdout),
        "fd@2" => return Ok(Addr::Stderr),
        _ => {}
    }
    if let Some(p) = s.strip_prefix("unix@") {
        return Ok(Addr::Unix(PathBuf::from(p)));
    }
    if s.starts_with('/') {
        return Ok(Addr::Unix(PathBuf::from(s)));
    }
    if s.starts_with("ring@") {
        return Err(format!(
            "log target `{s}`: ring sections are not supported (use tcp@ADDR:PORT)"
        ));
    }
    let tcp = ["tcp@", "tcp4@", "tcp6@"]
        .iter()
        .find_map(|p| s.strip_prefix(p));
    let bare = tcp
        .or_else(|| {
            ["udp@", "udp4@", "udp6@", "ipv4@", "ipv6@"]
                .iter()
                .find_map(|p| s.strip_prefix(p))
        })
        .unwrap_or(s);
    let addr = bare.parse::<SocketAddr>().ok().or_else(|| {
        // Without a port: `10.0.0.1`, `[::1]`, `::1`.
        let ip = bare.trim_start_matches('[').trim_end_matches(']');
        ip.parse::<std::net::IpAddr>()
            .ok()
            .map(|ip| SocketAddr::new(ip, 514))
    });
    if let Some(a) = addr {
        return Ok(if tcp.is_some() {
            Addr::Tcp(a)
        } else {
            Addr::Udp(a)
        });
    }
    Err(format!(
        "log target `{s}` is not an address (expected IP[:PORT], a unix socket path, stdout or stderr)"
    ))
}

/// Civil UTC date of `secs` since the epoch: (year, month 1-12, day, hour, minute, second).
pub fn civil(secs: i64) -> (i64, u32, u32, u32, u32, u32) {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (
        year,
        month as u32,
        day as u32,
        (rem / 3600) as u32,
        ((rem / 60) % 60) as u32,
        (rem % 60) as u32,
    )
}

/// English month abbreviations.
pub const MONTHS: [&str; 12] = [
    "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
];

/// The line `target` sends for `msg` at severity `level` (framing and trailing newline
/// included, truncated to the target's `len`); `None` when the level filters it out.
pub fn frame(
    target: &LogTarget,
    level: u8,
    wall: SystemTime,
    pid: u32,
    msg: &str,
) -> Option<Vec<u8>> {
    if level > target.level {
        return None;
    }
    let sev = level.max(target.minlevel);
    let pri = u32::from(target.facility) * 8 + u32::from(sev);
    let d = wall.duration_since(UNIX_EPOCH).unwrap_or_default();
    let (y, mo, day, h, mi, s) = civil(d.as_secs() as i64);
    let mut out = Vec::with_capacity(msg.len() + 64);
    // Writes to a Vec cannot fail.
    let _ = match target.framing {
        Framing::Rfc3164 => write!(
            out,
            "<{pri}>{} {day:>2} {h:02}:{mi:02}:{s:02} lb[{pid}]: ",
            MONTHS[(mo - 1) as usize]
        ),
        Framing::Rfc5424 => write!(
            out,
            "<{pri}>1 {y:04}-{mo:02}-{day:02}T{h:02}:{mi:02}:{s:02}.{:06}+00:00 - lb {pid} - - ",
            d.subsec_micros()
        ),
        Framing::Short => write!(out, "<{pri}>"),
        Framing::Raw => Ok(()),
    };
    out.extend_from_slice(msg.as_bytes());
    out.truncate(target.len.saturating_sub(1));
    out.push(b'\n');
    Some(out)
}

static DROPPED: AtomicU64 = AtomicU64::new(0);

/// Lines dropped since start because a target could not take them at once.
pub fn dropped() -> u64 {
    DROPPED.load(Ordering::Relaxed)
}

enum Sink {
    Udp(UdpSocket, SocketAddr),
    Unix(UnixDatagram, PathBuf),
    Stream(&'static SyncSender<Vec<u8>>),
    /// The queue of a TCP target's writer thread (which ends when this is dropped).
    Tcp(SyncSender<Vec<u8>>),
}

/// Lines a TCP target's queue holds while its thread writes or reconnects.
const TCP_QUEUE: usize = 4096;
/// Connect and write limit of a TCP target, and the pause after a failed connect.
const TCP_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Starts the writer thread of TCP target `addr`: it connects when it has a line to send
/// and no connection (not within [`TCP_TIMEOUT`] of a failed attempt: those lines are
/// dropped), writes each line, and drops the connection on a write error.
fn tcp_writer(addr: SocketAddr) -> std::io::Result<SyncSender<Vec<u8>>> {
    let (tx, rx) = sync_channel::<Vec<u8>>(TCP_QUEUE);
    std::thread::Builder::new()
        .name("lb-log-tcp".into())
        .spawn(move || {
            let mut conn: Option<std::net::TcpStream> = None;
            let mut failed_at: Option<std::time::Instant> = None;
            for line in rx {
                if conn.is_none() && failed_at.is_none_or(|t| t.elapsed() >= TCP_TIMEOUT) {
                    match std::net::TcpStream::connect_timeout(&addr, TCP_TIMEOUT) {
                        Ok(c) => {
                            let _ = c.set_write_timeout(Some(TCP_TIMEOUT));
                            let _ = c.set_nodelay(true);
                            conn = Some(c);
                            failed_at = None;
                        }
                        Err(_) => failed_at = Some(std::time::Instant::now()),
                    }
                }
                let sent = match &mut conn {
                    Some(c) => c.write_all(&line).is_ok(),
                    None => false,
                };
                if !sent {
                    conn = None;
                    DROPPED.fetch_add(1, Ordering::Relaxed);
                }
            }
        })?;
    Ok(tx)
}

fn stream_writer(err: bool) -> &'static SyncSender<Vec<u8>> {
    static OUT: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();
    static ERR: OnceLock<SyncSender<Vec<u8>>> = OnceLock::new();
    let cell = if err { &ERR } else { &OUT };
    cell.get_or_init(|| {
        let (tx, rx) = sync_channel::<Vec<u8>>(4096);
        let spawned = std::thread::Builder::new()
            .name(
                if err {
                    "lb-log-stderr"
                } else {
                    "lb-log-stdout"
                }
                .into(),
            )
            .spawn(move || {
                for line in rx {
                    let r = if err {
                        std::io::stderr().lock().write_all(&line)
                    } else {
                        std::io::stdout().lock().write_all(&line)
                    };
                    if r.is_err() {
                        DROPPED.fetch_add(1, Ordering::Relaxed);
                    }
                }
            });
        if spawned.is_err() {
            // No writer: every line sent here is dropped (the queue fills and try_send fails).
            DROPPED.fetch_add(1, Ordering::Relaxed);
        }
        tx
    })
}

/// The open targets of one proxy.
pub struct Logger {
    targets: Vec<(LogTarget, Sink)>,
    pid: u32,
}

impl std::fmt::Debug for Logger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.targets.iter().map(|(t, _)| &t.text))
            .finish()
    }
}

impl Logger {
    /// Opens a non-blocking socket per network target.
    pub fn new(targets: &[LogTarget]) -> Result<Self, SyslogError> {
        let mut out = Vec::with_capacity(targets.len());
        for t in targets {
            let err = |source| SyslogError::Socket {
                target: t.text.clone(),
                source,
            };
            let sink = match &t.addr {
                Addr::Udp(a) => {
                    let local: SocketAddr = if a.is_ipv4() {
                        (Ipv4Addr::UNSPECIFIED, 0).into()
                    } else {
                        (Ipv6Addr::UNSPECIFIED, 0).into()
                    };
                    let s = UdpSocket::bind(local).map_err(err)?;
                    s.set_nonblocking(true).map_err(err)?;
                    Sink::Udp(s, *a)
                }
                Addr::Unix(p) => {
                    let s = UnixDatagram::unbound().map_err(err)?;
                    s.set_nonblocking(true).map_err(err)?;
                    Sink::Unix(s, p.clone())
                }
                Addr::Tcp(a) => Sink::Tcp(tcp_writer(*a).map_err(err)?),
                Addr::Stdout => Sink::Stream(stream_writer(false)),
                Addr::Stderr => Sink::Stream(stream_writer(true)),
            };
            out.push((t.clone(), sink));
        }
        Ok(Self {
            targets: out,
            pid: std::process::id(),
        })
    }

    /// Whether there is any target.
    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// Sends `msg` at severity `level` to every target that takes it; never blocks.
    pub fn send(&self, level: u8, msg: &str) {
        let wall = SystemTime::now();
        for (t, sink) in &self.targets {
            let Some(line) = frame(t, level, wall, self.pid, msg) else {
                continue;
            };
            let sent = match sink {
                Sink::Udp(s, a) => s.send_to(&line, a).is_ok(),
                Sink::Unix(s, p) => s.send_to(&line, p).is_ok(),
                Sink::Stream(tx) => tx.try_send(line).is_ok(),
                Sink::Tcp(tx) => tx.try_send(line).is_ok(),
            };
            if !sent {
                DROPPED.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn t(line: &str) -> LogTarget {
        let w: Vec<&str> = line.split_whitespace().collect();
        parse_target(&w).expect("target")
    }

    #[test]
    fn parses_haproxy_lines() {
        let a = t("127.0.0.1 local0");
        assert_eq!(a.addr, Addr::Udp("127.0.0.1:514".parse().expect("a")));
        assert_eq!((a.facility, a.level, a.minlevel), (16, 7, 0));
        let b = t("/dev/log len 2048 format rfc5424 daemon notice err");
        assert_eq!(b.addr, Addr::Unix("/dev/log".into()));
        assert_eq!((b.len, b.framing), (2048, Framing::Rfc5424));
        assert_eq!((b.facility, b.level, b.minlevel), (3, 5, 3));
        assert_eq!(t("stdout format raw local7").addr, Addr::Stdout);
        assert_eq!(
            t("udp@[::1]:5140 local1").addr,
            Addr::Udp("[::1]:5140".parse().expect("a"))
        );
        let e = |l: &str| {
            let w: Vec<&str> = l.split_whitespace().collect();
            parse_target(&w).expect_err(l)
        };
        assert_eq!(e("127.0.0.1 local9").0, 1);
        assert!(e("127.0.0.1 local9").1.contains("unknown syslog facility"));
        assert_eq!(e("127.0.0.1 local0 loud").0, 2);
        assert_eq!(e("127.0.0.1 format xml local0").0, 2);
        assert_eq!(e("nowhere local0").0, 0);
        assert!(e("ring@buf local0").1.contains("ring"));
        assert_eq!(
            t("tcp@127.0.0.1:6514 local0").addr,
            Addr::Tcp("127.0.0.1:6514".parse().expect("a"))
        );
        assert_eq!(
            t("tcp6@[::1] local0").addr,
            Addr::Tcp("[::1]:514".parse().expect("a"))
        );
        assert_eq!(e("127.0.0.1").0, 0);
    }

    #[test]
    fn framing_is_haproxys() {
        let wall = UNIX_EPOCH + Duration::from_micros(1_796_641_107_096_255);
        let a = t("127.0.0.1 local0");
        assert_eq!(
            frame(&a, INFO, wall, 42, "msg").expect("sent"),
            b"<134>Dec  7 10:58:27 lb[42]: msg\n"
        );
        let b = t("127.0.0.1 format rfc5424 local1");
        assert_eq!(
            frame(&b, INFO, wall, 42, "msg").expect("sent"),
            b"<142>1 2026-12-07T10:58:27.096255+00:00 - lb 42 - - msg\n"
        );
        // Filtered by level; capped by minlevel.
        assert!(frame(&t("127.0.0.1 local0 notice"), INFO, wall, 1, "m").is_none());
        let c = t("127.0.0.1 format short local0 debug notice");
        assert_eq!(frame(&c, 2, wall, 1, "m").expect("sent"), b"<133>m\n");
        assert_eq!(frame(&c, INFO, wall, 1, "m").expect("sent"), b"<134>m\n");
        let r = t("127.0.0.1 len 80 format raw local0");
        let long = "x".repeat(200);
        assert_eq!(frame(&r, INFO, wall, 1, &long).expect("sent").len(), 80);
    }
}
