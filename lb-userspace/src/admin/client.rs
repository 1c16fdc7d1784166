//! `lb stats`: fetches `/stats.json` from a running instance's admin listener and prints an
//! aligned table (or the JSON itself with `--json`). A small blocking HTTP/1.1 client: the
//! CLI needs one request, not a runtime.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use super::AdminError;
use super::html::human_bytes;
use super::stats::StatsDoc;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
const IO_TIMEOUT: Duration = Duration::from_secs(10);
/// Largest response accepted.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Runs `lb stats`: prints to `out`, errors to stderr; returns the exit code.
pub fn run_stats(admin: SocketAddr, json: bool, token: Option<&str>, out: &mut dyn Write) -> i32 {
    let result = fetch_body(admin, "/stats.json", token).and_then(|body| {
        let doc: StatsDoc = serde_json::from_slice(&body).map_err(|e| AdminError::Protocol {
            addr: admin,
            what: format!("/stats.json is not valid stats JSON: {e}"),
        })?;
        Ok((body, doc))
    });
    let (body, doc) = match result {
        Ok(x) => x,
        Err(e) => {
            eprintln!("lb stats: {e}");
            return 1;
        }
    };
    let written = if json {
        out.write_all(&body).and_then(|()| {
            if body.last() != Some(&b'\n') {
                out.write_all(b"\n")
            } else {
                Ok(())
            }
        })
    } else {
        out.write_all(render_table(&doc).as_bytes())
    };
    match written.and_then(|()| out.flush()) {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("lb stats: cannot write output: {e}");
            1
        }
    }
}

/// Fetches and parses `/stats.json`.
pub fn fetch_stats(admin: SocketAddr, token: Option<&str>) -> Result<StatsDoc, AdminError> {
    let body = fetch_body(admin, "/stats.json", token)?;
    serde_json::from_slice(&body).map_err(|e| AdminError::Protocol {
        addr: admin,
        what: format!("/stats.json is not valid stats JSON: {e}"),
    })
}

/// `GET path` on the admin API; the body of a 200 response.
pub fn fetch_body(
    admin: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<Vec<u8>, AdminError> {
    let (status, body) = send(admin, "GET", path, "", token)?;
    if status != 200 {
        return Err(AdminError::Status {
            addr: admin,
            status,
            body: String::from_utf8_lossy(&body).trim().to_owned(),
        });
    }
    Ok(body)
}

/// One request to the admin API over a fresh connection: (status, de-chunked body). It
/// names the listener in `Host` and carries [`super::ADMIN_HEADER`], so the listener takes
/// a state-changing request (`POST /api/…`) from it as not cross-site.
pub fn send(
    admin: SocketAddr,
    method: &str,
    path: &str,
    body: &str,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), AdminError> {
    let conn_err = |source| AdminError::Connect {
        addr: admin,
        source,
    };
    let mut stream = TcpStream::connect_timeout(&admin, CONNECT_TIMEOUT).map_err(conn_err)?;
    stream
        .set_read_timeout(Some(IO_TIMEOUT))
        .map_err(conn_err)?;
    stream
        .set_write_timeout(Some(IO_TIMEOUT))
        .map_err(conn_err)?;
    let mut req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {admin}\r\nUser-Agent: lb-stats\r\nAccept: */*\r\n\
         {}: 1\r\nConnection: close\r\n",
        super::ADMIN_HEADER
    );
    if let Some(t) = token {
        req.push_str(&format!("Authorization: Bearer {t}\r\n"));
    }
    if method != "GET" && method != "HEAD" {
        req.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    req.push_str("\r\n");
    req.push_str(body);
    stream.write_all(req.as_bytes()).map_err(conn_err)?;
    let mut raw = Vec::new();
    stream
        .take(MAX_RESPONSE)
        .read_to_end(&mut raw)
        .map_err(conn_err)?;
    parse_response(&raw).map_err(|what| AdminError::Protocol { addr: admin, what })
}

/// Splits an HTTP/1.1 response into status and (de-chunked) body.
pub fn parse_response(raw: &[u8]) -> Result<(u16, Vec<u8>), String> {
    let head_end = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .ok_or("incomplete HTTP response")?;
    let head = std::str::from_utf8(&raw[..head_end]).map_err(|_| "non-UTF-8 response head")?;
    let rest = &raw[head_end + 4..];
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let (status, _) = crate::health::check::parse_status_line(status_line.as_bytes())?;
    let mut chunked = false;
    let mut length = None;
    for line in lines {
        let Some((k, v)) = line.split_once(':') else {
            continue;
        };
        let v = v.trim();
        if k.eq_ignore_ascii_case("transfer-encoding") && v.eq_ignore_ascii_case("chunked") {
            chunked = true;
        } else if k.eq_ignore_ascii_case("content-length") {
            length = Some(
                v.parse::<usize>()
                    .map_err(|_| format!("bad Content-Length {v:?}"))?,
            );
        }
    }
    let body = if chunked {
        dechunk(rest)?
    } else if let Some(n) = length {
        rest.get(..n).ok_or("truncated response body")?.to_vec()
    } else {
        rest.to_vec()
    };
    Ok((status, body))
}

fn dechunk(mut data: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    loop {
        let eol = data
            .windows(2)
            .position(|w| w == b"\r\n")
            .ok_or("truncated chunked body")?;
        let size_text = std::str::from_utf8(&data[..eol]).map_err(|_| "bad chunk size")?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| format!("bad chunk size {size_text:?}"))?;
        data = &data[eol + 2..];
        if size == 0 {
            return Ok(out);
        }
        let chunk = data.get(..size).ok_or("truncated chunk")?;
        out.extend_from_slice(chunk);
        data = data.get(size + 2..).ok_or("truncated chunk")?;
    }
}

/// Lays out rows under headers; `right[i]` right-aligns column `i`.
fn table(headers: &[&str], rows: &[Vec<String>], right: &[bool]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for r in rows {
        for (i, c) in r.iter().enumerate() {
            if let Some(w) = widths.get_mut(i) {
                *w = (*w).max(c.chars().count());
            }
        }
    }
    let mut out = String::new();
    let mut line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut l = String::new();
        for (i, c) in cells.enumerate() {
            let w = widths.get(i).copied().unwrap_or(0);
            if i > 0 {
                l.push_str("  ");
            }
            if right.get(i).copied().unwrap_or(false) {
                l.push_str(&format!("{c:>w$}"));
            } else {
                l.push_str(&format!("{c:<w$}"));
            }
        }
        out.push_str(l.trim_end());
        out.push('\n');
    };
    line(&mut headers.iter().copied());
    for r in rows {
        line(&mut r.iter().map(String::as_str));
    }
    out
}

/// The human-readable rendering of a stats document.
pub fn render_table(doc: &StatsDoc) -> String {
    let mut out = format!(
        "lb {} (pid {}), up {}s\n\n",
        doc.version, doc.pid, doc.uptime_seconds
    );
    let counters = |c: &super::stats::CounterStats| {
        vec![
            c.active_conns.to_string(),
            c.total_conns.to_string(),
            c.requests.to_string(),
            human_bytes(c.bytes_in),
            human_bytes(c.bytes_out),
            c.errors.to_string(),
        ]
    };
    if !doc.frontends.is_empty() {
        let rows: Vec<Vec<String>> = doc
            .frontends
            .iter()
            .map(|f| {
                let mut r = vec![f.name.clone()];
                r.extend(counters(&f.counters));
                r
            })
            .collect();
        out.push_str(&table(
            &["FRONTEND", "CUR", "TOTAL", "REQ", "IN", "OUT", "ERR"],
            &rows,
            &[false, true, true, true, true, true, true],
        ));
        out.push('\n');
    }
    let mut rows = Vec::new();
    for b in &doc.backends {
        let mut r = vec![
            b.name.clone(),
            "BACKEND".to_owned(),
            String::new(),
            b.status.clone(),
            String::new(),
        ];
        r.extend(counters(&b.counters));
        r.push(String::new());
        r.push(format!(
            "{} active, {} backup",
            b.active_servers, b.backup_servers
        ));
        rows.push(r);
        for s in &b.servers {
            let mut name = format!("  {}", s.name);
            if s.backup {
                name.push_str(" (backup)");
            }
            let mut r = vec![
                String::new(),
                name,
                s.addr.clone(),
                s.status.clone(),
                s.weight.to_string(),
            ];
            r.extend(counters(&s.counters));
            r.push(s.packets.map(|p| p.to_string()).unwrap_or_default());
            let check = match &s.check {
                Some(c) if s.checked => {
                    let mut t = format!("{} {}", c.progress, c.status);
                    if let Some(code) = c.code {
                        t.push_str(&format!(" {code}"));
                    }
                    if let Some(d) = c.duration_ms {
                        t.push_str(&format!(" {}", super::html::millis(d)));
                    }
                    if let Some(info) = &c.info {
                        t.push_str(&format!(" \"{info}\""));
                    }
                    t
                }
                _ => "no check".to_owned(),
            };
            r.push(check);
            rows.push(r);
        }
    }
    if !rows.is_empty() {
        out.push_str(&table(
            &[
                "BACKEND", "SERVER", "ADDRESS", "STATUS", "WEIGHT", "CUR", "TOTAL", "REQ", "IN",
                "OUT", "ERR", "PKTS", "CHECK",
            ],
            &rows,
            &[
                false, false, false, false, true, true, true, true, true, true, true, true, false,
            ],
        ));
    }
    if let Some(l4) = &doc.l4
        && !l4.vips.is_empty()
    {
        out.push('\n');
        let rows: Vec<Vec<String>> = l4
            .vips
            .iter()
            .map(|v| {
                vec![
                    v.frontend.clone(),
                    v.vip.to_string(),
                    v.proto.clone(),
                    v.packets.to_string(),
                    human_bytes(v.bytes),
                    v.new_flows.to_string(),
                    v.flows.to_string(),
                    v.non_syn_misses.to_string(),
                ]
            })
            .collect();
        out.push_str(&table(
            &[
                "L4 FRONTEND",
                "VIP",
                "PROTO",
                "PACKETS",
                "BYTES",
                "FLOWS",
                "TRACKED",
                "MISSES",
            ],
            &rows,
            &[false, false, false, true, true, true, true, true],
        ));
        if let Some(t) = &l4.flow_table {
            out.push_str(&format!(
                "flow table: {} IPv4 + {} IPv6 entries of {} each\n",
                t.v4, t.v6, t.capacity
            ));
        }
    }
    if let Some(e) = &doc.l4_error {
        out.push_str(&format!("\nL4 counters unavailable: {e}\n"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_content_length_and_chunked() {
        let raw = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloXX";
        assert_eq!(parse_response(raw), Ok((200, b"hello".to_vec())));
        let raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n4;x=y\r\n abc\r\n0\r\n\r\n";
        let (_, body) = parse_response(raw).expect("chunked");
        assert_eq!(body, b"hello abc".to_vec());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n").is_err());
        assert_eq!(
            parse_response(b"HTTP/1.1 401 Unauthorized\r\n\r\nno").map(|r| r.0),
            Ok(401)
        );
    }

    #[test]
    fn table_alignment() {
        let t = table(
            &["A", "NUM"],
            &[
                vec!["long name".into(), "1".into()],
                vec!["x".into(), "100".into()],
            ],
            &[false, true],
        );
        assert_eq!(t, "A          NUM\nlong name    1\nx          100\n");
    }
}
