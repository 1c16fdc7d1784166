//! `/stats`: a human-readable page in the spirit of HAProxy's stats page — one table per
//! frontend and per backend, a row per server coloured by status, auto-refreshing.

use std::fmt::Write;

use super::stats::{BackendStats, CounterStats, ServerStats, StatsDoc};

/// Seconds between automatic refreshes.
pub const REFRESH_SECONDS: u32 = 5;

/// Escapes text for HTML element content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// HAProxy's palette, by row class.
const STYLE: &str = "\
body{font-family:Arial,Helvetica,sans-serif;font-size:12px;background:#fff;color:#000;margin:8px}\
h1{font-size:18px;margin:0 0 4px}\
.info{margin:0 0 10px;color:#333}\
table.px{border-collapse:collapse;margin:0 0 14px;min-width:900px}\
table.px th,table.px td{border:1px solid #999;padding:2px 5px;text-align:right;white-space:nowrap}\
table.px td.l,table.px th.l{text-align:left}\
table.px th.pxname{background:#b00040;color:#ffff40;font-weight:bold;text-align:left;font-size:13px}\
tr.titre th{background:#20d0d0;color:#000}\
tr.frontend td{background:#e8e8d0}\
tr.backend td{background:#e8e8d0;font-weight:bold}\
tr.up td{background:#c0ffc0}\
tr.going_down td{background:#ffffa0}\
tr.going_up td{background:#ffd020}\
tr.down td{background:#ff9090}\
tr.drain td{background:#20a0ff}\
tr.maint td{background:#c07820}\
tr.nocheck td{background:#e0e0e0}\
.legend span{display:inline-block;padding:1px 6px;margin-right:4px;border:1px solid #999}\
";

fn counters_cells(out: &mut String, c: &CounterStats) {
    let r = &c.responses;
    let _ = write!(
        out,
        "<td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td>\
         <td>{}</td><td>{}</td><td>{}</td><td>{}</td>",
        c.active_conns,
        c.total_conns,
        c.requests,
        human_bytes(c.bytes_in),
        human_bytes(c.bytes_out),
        c.errors,
        r.r2xx,
        r.r3xx,
        r.r4xx,
        r.r5xx,
    );
}

/// A check duration: `0.4ms`, `12ms`.
pub fn millis(ms: f64) -> String {
    if ms < 10.0 {
        format!("{ms:.1}ms")
    } else {
        format!("{ms:.0}ms")
    }
}

/// `1.2 MB` style sizes.
pub fn human_bytes(b: u64) -> String {
    const UNITS: [&str; 5] = ["B", "kB", "MB", "GB", "TB"];
    let mut v = b as f64;
    let mut unit = 0;
    while v >= 1000.0 && unit + 1 < UNITS.len() {
        v /= 1000.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{b} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

const COUNTER_HEADERS: &str = "<th>Cur</th><th>Total</th><th>Req</th><th>Bytes in</th>\
    <th>Bytes out</th><th>Errors</th><th>2xx</th><th>3xx</th><th>4xx</th><th>5xx</th>";

fn row_class(s: &ServerStats) -> &'static str {
    let progress = s.check.as_ref().map(|c| c.progress.as_str()).unwrap_or("");
    match s.status.as_str() {
        "MAINT" => "maint",
        "DRAIN" => "drain",
        "DOWN" if progress.starts_with("DOWN ") => "going_up",
        "DOWN" => "down",
        _ if !s.checked => "nocheck",
        _ if progress.starts_with("UP ") => "going_down",
        _ => "up",
    }
}

fn server_row(out: &mut String, s: &ServerStats) {
    let (status_text, check_text, last_dur) = match &s.check {
        Some(c) if s.checked => {
            let mut chk = escape(&c.status);
            if let Some(code) = c.code {
                let _ = write!(chk, " {code}");
            }
            if let Some(info) = &c.info {
                let _ = write!(chk, " &quot;{}&quot;", escape(info));
            }
            let dur = c.duration_ms.map(millis).unwrap_or_default();
            let status = if s.status == "UP" || s.status == "DOWN" {
                escape(&c.progress)
            } else {
                escape(&s.status)
            };
            (status, chk, dur)
        }
        _ => (
            format!(
                "{}{}",
                escape(&s.status),
                if s.checked { "" } else { " (no check)" }
            ),
            String::new(),
            String::new(),
        ),
    };
    let (chk, dwn) = s
        .check
        .as_ref()
        .filter(|_| s.checked)
        .map(|c| (c.failures.to_string(), c.up_down.to_string()))
        .unwrap_or_default();
    let _ = write!(
        out,
        "<tr class=\"{}\"><td class=\"l\">{}</td><td class=\"l\">{}</td>",
        row_class(s),
        escape(&s.name),
        escape(&s.addr),
    );
    counters_cells(out, &s.counters);
    let _ = writeln!(
        out,
        "<td>{}</td><td class=\"l\">{status_text}</td><td class=\"l\">{check_text}</td>\
         <td>{last_dur}</td><td>{chk}</td><td>{dwn}</td><td>{}</td><td>{}</td>\
         <td>{}</td></tr>",
        s.packets.map(|p| p.to_string()).unwrap_or_default(),
        s.weight,
        if s.backup { "Y" } else { "-" },
        if s.checked { "Y" } else { "-" },
    );
}

fn backend_table(out: &mut String, b: &BackendStats) {
    let _ = writeln!(
        out,
        "<table class=\"px\"><tr><th class=\"pxname\" colspan=\"21\">backend {}</th></tr>\
         <tr class=\"titre\"><th class=\"l\">Server</th><th class=\"l\">Address</th>\
         {COUNTER_HEADERS}<th>L4 pkts</th><th class=\"l\">Status</th>\
         <th class=\"l\">Last check</th><th>Chk time</th><th>Chk fail</th><th>Dwn</th>\
         <th>Wght</th><th>Bck</th><th>Chk</th></tr>",
        escape(&b.name)
    );
    for s in &b.servers {
        server_row(out, s);
    }
    let weight = b.up_weight();
    let _ = write!(
        out,
        "<tr class=\"backend\"><td class=\"l\">Backend</td><td class=\"l\"></td>"
    );
    counters_cells(out, &b.counters);
    let _ = writeln!(
        out,
        "<td></td><td class=\"l\">{}</td><td class=\"l\">{} active, {} backup up</td>\
         <td></td><td></td><td></td><td>{weight}</td><td></td><td></td></tr></table>",
        escape(&b.status),
        b.active_servers,
        b.backup_servers,
    );
}

/// Renders the page.
pub fn render(doc: &StatsDoc) -> String {
    render_page(doc, None, false, true)
}

/// Renders the page with a refresh interval (`None`: lb's default), with or without lb's
/// version, and with or without links to the admin listener's JSON and metrics (a proxy's
/// `stats uri` page is not served by the admin listener).
pub fn render_page(
    doc: &StatsDoc,
    refresh: Option<std::time::Duration>,
    hide_version: bool,
    admin_links: bool,
) -> String {
    let refresh = refresh.map_or(u64::from(REFRESH_SECONDS), |d| d.as_secs().max(1));
    let version = if hide_version {
        String::new()
    } else {
        format!("version {} &middot; ", escape(&doc.version))
    };
    let links = if admin_links {
        " &middot; <a href=\"/stats.json\">JSON</a> &middot; <a href=\"/metrics\">Prometheus</a>"
    } else {
        ""
    };
    let mut out = String::with_capacity(32 * 1024);
    let _ = writeln!(
        out,
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\">\
         <meta http-equiv=\"refresh\" content=\"{refresh}\">\
         <title>lb statistics</title><style>{STYLE}</style></head><body>\
         <h1>lb statistics report</h1>\
         <p class=\"info\">{version}pid {} &middot; uptime {}s &middot; \
         refresh every {refresh}s{links}</p>\
         <p class=\"legend\"><span style=\"background:#c0ffc0\">UP</span>\
         <span style=\"background:#ffffa0\">UP, going down</span>\
         <span style=\"background:#ffd020\">DOWN, going up</span>\
         <span style=\"background:#ff9090\">DOWN</span>\
         <span style=\"background:#20a0ff\">DRAIN</span>\
         <span style=\"background:#c07820\">MAINT</span>\
         <span style=\"background:#e0e0e0\">not checked</span></p>",
        doc.pid, doc.uptime_seconds,
    );
    for f in &doc.frontends {
        let _ = write!(
            out,
            "<table class=\"px\"><tr><th class=\"pxname\" colspan=\"11\">frontend {}</th></tr>\
             <tr class=\"titre\"><th class=\"l\"></th>{COUNTER_HEADERS}</tr>\
             <tr class=\"frontend\"><td class=\"l\">Frontend</td>",
            escape(&f.name)
        );
        counters_cells(&mut out, &f.counters);
        let _ = writeln!(out, "</tr></table>");
    }
    for b in &doc.backends {
        backend_table(&mut out, b);
    }
    if let Some(l4) = &doc.l4 {
        let _ = writeln!(
            out,
            "<table class=\"px\"><tr><th class=\"pxname\" colspan=\"6\">L4 (XDP) VIPs</th></tr>\
             <tr class=\"titre\"><th class=\"l\">Frontend</th><th class=\"l\">VIP</th>\
             <th class=\"l\">Proto</th><th>Packets</th><th>Bytes</th><th>New flows</th></tr>"
        );
        for v in &l4.vips {
            let _ = writeln!(
                out,
                "<tr class=\"frontend\"><td class=\"l\">{}</td><td class=\"l\">{}</td>\
                 <td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                escape(&v.frontend),
                escape(&v.vip.to_string()),
                escape(&v.proto),
                v.packets,
                human_bytes(v.bytes),
                v.new_flows
            );
        }
        let _ = writeln!(out, "</table>");
        if !l4.reasons.is_empty() {
            let _ = writeln!(
                out,
                "<table class=\"px\"><tr><th class=\"pxname\" colspan=\"3\">L4 drops and passes\
                 </th></tr><tr class=\"titre\"><th class=\"l\">Action</th>\
                 <th class=\"l\">Reason</th><th>Packets</th></tr>"
            );
            for r in &l4.reasons {
                let _ = writeln!(
                    out,
                    "<tr class=\"frontend\"><td class=\"l\">{}</td><td class=\"l\">{}</td>\
                     <td>{}</td></tr>",
                    escape(&r.action),
                    escape(&r.reason),
                    r.packets
                );
            }
            let _ = writeln!(out, "</table>");
        }
    }
    if !doc.caches.is_empty() {
        let _ = writeln!(
            out,
            "<table class=\"px\"><tr><th class=\"pxname\" colspan=\"8\">HTTP caches</th></tr>\
             <tr class=\"titre\"><th class=\"l\">Cache</th><th>Lookups</th><th>Hits</th>\
             <th>Misses</th><th>Stores</th><th>Evictions</th><th>Served</th><th>Used</th></tr>"
        );
        for c in &doc.caches {
            let _ = writeln!(
                out,
                "<tr class=\"frontend\"><td class=\"l\">{}</td><td>{}</td><td>{}</td><td>{}</td>\
                 <td>{}</td><td>{}</td><td>{}</td><td>{} / {} ({} entries)</td></tr>",
                escape(&c.name),
                c.lookups,
                c.hits,
                c.misses,
                c.stores,
                c.evictions,
                human_bytes(c.bytes_served),
                human_bytes(c.bytes_used),
                human_bytes(c.capacity),
                c.entries
            );
        }
        let _ = writeln!(out, "</table>");
    }
    if let Some(e) = &doc.l4_error {
        let _ = writeln!(
            out,
            "<p class=\"info\">L4 counters unavailable: {}</p>",
            escape(e)
        );
    }
    out.push_str("</body></html>\n");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes() {
        assert_eq!(
            escape("<a href=\"x\">&'"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;"
        );
    }

    #[test]
    fn bytes() {
        assert_eq!(human_bytes(999), "999 B");
        assert_eq!(human_bytes(1500), "1.5 kB");
        assert_eq!(human_bytes(2_000_000_000), "2.0 GB");
    }
}
