//! `/metrics`: Prometheus text exposition (version 0.0.4), named after HAProxy's exporter
//! with an `lb_` prefix: `lb_frontend_*{frontend}`, `lb_backend_*{backend}`,
//! `lb_server_*{backend,server}`, `lb_l4_*`.

use std::fmt::Write;

use super::stats::{CounterStats, StatsDoc};

/// The content type of the exposition.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Escapes a label value (`\`, `"` and newlines).
pub fn escape_label(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

fn fmt_value(v: f64) -> String {
    if v.is_infinite() {
        if v > 0.0 { "+Inf" } else { "-Inf" }.to_owned()
    } else if v.is_nan() {
        "NaN".to_owned()
    } else {
        format!("{v}")
    }
}

struct Out {
    buf: String,
}

impl Out {
    fn family(&mut self, name: &str, kind: &str, help: &str) {
        let _ = writeln!(self.buf, "# HELP {name} {help}");
        let _ = writeln!(self.buf, "# TYPE {name} {kind}");
    }

    fn sample(&mut self, name: &str, labels: &[(&str, &str)], value: f64) {
        self.buf.push_str(name);
        if !labels.is_empty() {
            self.buf.push('{');
            for (i, (k, v)) in labels.iter().enumerate() {
                if i > 0 {
                    self.buf.push(',');
                }
                let _ = write!(self.buf, "{k}=\"{}\"", escape_label(v));
            }
            self.buf.push('}');
        }
        let _ = writeln!(self.buf, " {}", fmt_value(value));
    }
}

/// The counter families shared by frontends, backends and servers.
const COUNTER_FAMILIES: [(&str, &str, &str); 6] = [
    (
        "connections_current",
        "gauge",
        "Current connections (sessions).",
    ),
    (
        "connections_total",
        "counter",
        "Total connections (sessions).",
    ),
    ("requests_total", "counter", "Total HTTP requests."),
    ("bytes_in_total", "counter", "Bytes received from clients."),
    ("bytes_out_total", "counter", "Bytes sent to clients."),
    (
        "errors_total",
        "counter",
        "Request, connection and response errors.",
    ),
];

fn counter_value(c: &CounterStats, family: &str) -> u64 {
    match family {
        "connections_current" => c.active_conns,
        "connections_total" => c.total_conns,
        "requests_total" => c.requests,
        "bytes_in_total" => c.bytes_in,
        "bytes_out_total" => c.bytes_out,
        _ => c.errors,
    }
}

/// Writes the counter families of `rows` (labels, counters) under `prefix`.
fn counters(out: &mut Out, prefix: &str, rows: &[(Vec<(&str, &str)>, &CounterStats)]) {
    for (suffix, kind, help) in COUNTER_FAMILIES {
        let name = format!("{prefix}_{suffix}");
        out.family(&name, kind, help);
        for (labels, c) in rows {
            out.sample(&name, labels, counter_value(c, suffix) as f64);
        }
    }
    let name = format!("{prefix}_http_responses_total");
    out.family(&name, "counter", "HTTP responses by status class.");
    for (labels, c) in rows {
        for (code, v) in c.responses.classes() {
            let mut l = labels.clone();
            l.push(("code", code));
            out.sample(&name, &l, v as f64);
        }
    }
}

/// Renders the exposition.
pub fn render(doc: &StatsDoc) -> String {
    let mut out = Out {
        buf: String::with_capacity(16 * 1024),
    };

    out.family("lb_build_info", "gauge", "lb version.");
    out.sample("lb_build_info", &[("version", &doc.version)], 1.0);
    out.family(
        "lb_uptime_seconds",
        "gauge",
        "Seconds since the admin listener started.",
    );
    out.sample("lb_uptime_seconds", &[], doc.uptime_seconds as f64);
    out.family(
        "lb_log_dropped_total",
        "counter",
        "Log lines dropped because a log target could not take them at once.",
    );
    out.sample("lb_log_dropped_total", &[], crate::syslog::dropped() as f64);

    // HTTP caches.
    if !doc.caches.is_empty() {
        type Get = fn(&super::stats::CacheStats) -> u64;
        let families: [(&str, &str, &str, Get); 9] = [
            (
                "lb_cache_lookups_total",
                "counter",
                "Requests looked up in the cache.",
                |c| c.lookups,
            ),
            (
                "lb_cache_hits_total",
                "counter",
                "Requests answered from the cache.",
                |c| c.hits,
            ),
            (
                "lb_cache_misses_total",
                "counter",
                "Lookups the cache could not answer.",
                |c| c.misses,
            ),
            (
                "lb_cache_stores_total",
                "counter",
                "Responses stored.",
                |c| c.stores,
            ),
            (
                "lb_cache_evictions_total",
                "counter",
                "Entries evicted to make room.",
                |c| c.evictions,
            ),
            (
                "lb_cache_served_bytes_total",
                "counter",
                "Body bytes served from the cache.",
                |c| c.bytes_served,
            ),
            (
                "lb_cache_used_bytes",
                "gauge",
                "Bytes the cache's entries take.",
                |c| c.bytes_used,
            ),
            (
                "lb_cache_capacity_bytes",
                "gauge",
                "The cache's total-max-size in bytes.",
                |c| c.capacity,
            ),
            ("lb_cache_entries", "gauge", "Entries in the cache.", |c| {
                c.entries
            }),
        ];
        for (name, kind, help, get) in families {
            out.family(name, kind, help);
            for c in &doc.caches {
                out.sample(name, &[("cache", &c.name)], get(c) as f64);
            }
        }
    }

    // Frontends.
    let rows: Vec<_> = doc
        .frontends
        .iter()
        .map(|f| (vec![("frontend", f.name.as_str())], &f.counters))
        .collect();
    counters(&mut out, "lb_frontend", &rows);

    // Backends.
    out.family(
        "lb_backend_status",
        "gauge",
        "1 when the backend has at least one usable server, else 0.",
    );
    for b in &doc.backends {
        let v = if b.status == "UP" { 1.0 } else { 0.0 };
        out.sample("lb_backend_status", &[("backend", &b.name)], v);
    }
    out.family(
        "lb_backend_active_servers",
        "gauge",
        "Usable non-backup servers.",
    );
    for b in &doc.backends {
        out.sample(
            "lb_backend_active_servers",
            &[("backend", &b.name)],
            f64::from(b.active_servers),
        );
    }
    out.family(
        "lb_backend_backup_servers",
        "gauge",
        "Usable backup servers.",
    );
    for b in &doc.backends {
        out.sample(
            "lb_backend_backup_servers",
            &[("backend", &b.name)],
            f64::from(b.backup_servers),
        );
    }
    let rows: Vec<_> = doc
        .backends
        .iter()
        .map(|b| (vec![("backend", b.name.as_str())], &b.counters))
        .collect();
    counters(&mut out, "lb_backend", &rows);

    // Servers.
    let servers: Vec<_> = doc
        .backends
        .iter()
        .flat_map(|b| b.servers.iter().map(move |s| (b.name.as_str(), s)))
        .collect();
    out.family(
        "lb_server_status",
        "gauge",
        "Server status: 1 for the current state, 0 for the others.",
    );
    for (b, s) in &servers {
        for state in ["UP", "DOWN", "DRAIN", "MAINT"] {
            let v = if s.status == state { 1.0 } else { 0.0 };
            out.sample(
                "lb_server_status",
                &[("backend", b), ("server", &s.name), ("state", state)],
                v,
            );
        }
    }
    out.family("lb_server_weight", "gauge", "Server weight (0..256).");
    for (b, s) in &servers {
        out.sample(
            "lb_server_weight",
            &[("backend", b), ("server", &s.name)],
            f64::from(s.weight),
        );
    }
    let rows: Vec<_> = servers
        .iter()
        .map(|(b, s)| {
            (
                vec![("backend", *b), ("server", s.name.as_str())],
                &s.counters,
            )
        })
        .collect();
    counters(&mut out, "lb_server", &rows);

    // Checks.
    let checked: Vec<_> = servers
        .iter()
        .filter_map(|(b, s)| s.check.as_ref().filter(|_| s.checked).map(|c| (*b, s, c)))
        .collect();
    out.family(
        "lb_server_check_duration_seconds",
        "histogram",
        "Duration of health checks.",
    );
    for (b, s, c) in &checked {
        let Some(h) = &c.durations else { continue };
        let name = "lb_server_check_duration_seconds";
        for (le, count) in &h.buckets {
            let le = fmt_value(*le);
            out.sample(
                &format!("{name}_bucket"),
                &[("backend", b), ("server", &s.name), ("le", &le)],
                *count as f64,
            );
        }
        let labels = [("backend", *b), ("server", s.name.as_str())];
        out.sample(&format!("{name}_sum"), &labels, h.sum_seconds);
        out.sample(&format!("{name}_count"), &labels, h.count as f64);
    }
    out.family(
        "lb_server_check_failures_total",
        "counter",
        "Failed health checks.",
    );
    for (b, s, c) in &checked {
        out.sample(
            "lb_server_check_failures_total",
            &[("backend", b), ("server", &s.name)],
            c.failures as f64,
        );
    }
    out.family(
        "lb_server_check_up_down_total",
        "counter",
        "UP to DOWN transitions.",
    );
    for (b, s, c) in &checked {
        out.sample(
            "lb_server_check_up_down_total",
            &[("backend", b), ("server", &s.name)],
            c.up_down as f64,
        );
    }
    out.family(
        "lb_server_check_last_duration_seconds",
        "gauge",
        "Duration of the last health check.",
    );
    for (b, s, c) in &checked {
        if let Some(ms) = c.duration_ms {
            out.sample(
                "lb_server_check_last_duration_seconds",
                &[("backend", b), ("server", &s.name)],
                ms / 1000.0,
            );
        }
    }
    out.family(
        "lb_server_check_status",
        "gauge",
        "Last health check status code: 1 for the current code.",
    );
    for (b, s, c) in &checked {
        out.sample(
            "lb_server_check_status",
            &[("backend", b), ("server", &s.name), ("status", &c.status)],
            1.0,
        );
    }

    // L4 (XDP).
    out.family(
        "lb_l4_stats_up",
        "gauge",
        "1 when the data plane's L4 counters could be read.",
    );
    out.sample(
        "lb_l4_stats_up",
        &[],
        if doc.l4.is_some() { 1.0 } else { 0.0 },
    );
    if let Some(l4) = &doc.l4 {
        let vip_strings: Vec<String> = l4.vips.iter().map(|v| v.vip.to_string()).collect();
        for (suffix, help) in [
            ("packets_total", "Packets to the VIP."),
            ("bytes_total", "Bytes to the VIP."),
            ("new_flows_total", "New flows to the VIP."),
        ] {
            let name = format!("lb_l4_vip_{suffix}");
            out.family(&name, "counter", help);
            for (v, vip) in l4.vips.iter().zip(&vip_strings) {
                let value = match suffix {
                    "packets_total" => v.packets,
                    "bytes_total" => v.bytes,
                    _ => v.new_flows,
                };
                out.sample(
                    &name,
                    &[("frontend", &v.frontend), ("vip", vip), ("proto", &v.proto)],
                    value as f64,
                );
            }
        }
        for (name, kind, help) in [
            (
                "lb_l4_vip_flows",
                "gauge",
                "Flow-table entries of the VIP at the last occupancy sample.",
            ),
            (
                "lb_l4_vip_non_syn_misses_total",
                "counter",
                "TCP packets without SYN that found no flow entry (evicted, or balanced by another node).",
            ),
        ] {
            out.family(name, kind, help);
            for (v, vip) in l4.vips.iter().zip(&vip_strings) {
                let value = if kind == "gauge" {
                    v.flows
                } else {
                    v.non_syn_misses
                };
                out.sample(
                    name,
                    &[("frontend", &v.frontend), ("vip", vip), ("proto", &v.proto)],
                    value as f64,
                );
            }
        }
        if let Some(t) = &l4.flow_table {
            out.family(
                "lb_l4_flow_table_entries",
                "gauge",
                "Entries in the LRU flow table of each address family.",
            );
            out.sample(
                "lb_l4_flow_table_entries",
                &[("family", "ipv4")],
                t.v4 as f64,
            );
            out.sample(
                "lb_l4_flow_table_entries",
                &[("family", "ipv6")],
                t.v6 as f64,
            );
            out.family(
                "lb_l4_flow_table_capacity",
                "gauge",
                "Entries each flow table holds (conntrack_size).",
            );
            out.sample("lb_l4_flow_table_capacity", &[], t.capacity as f64);
        }
        let addr_strings: Vec<String> = l4.backends.iter().map(|b| b.addr.to_string()).collect();
        for (suffix, help) in [
            ("packets_total", "Packets balanced to the server."),
            ("bytes_total", "Bytes balanced to the server."),
            ("new_flows_total", "New flows balanced to the server."),
        ] {
            let name = format!("lb_l4_server_{suffix}");
            out.family(&name, "counter", help);
            for (b, addr) in l4.backends.iter().zip(&addr_strings) {
                let value = match suffix {
                    "packets_total" => b.packets,
                    "bytes_total" => b.bytes,
                    _ => b.new_flows,
                };
                out.sample(
                    &name,
                    &[
                        ("backend", &b.backend),
                        ("server", &b.server),
                        ("addr", addr),
                    ],
                    value as f64,
                );
            }
        }
        out.family(
            "lb_l4_packets_total",
            "counter",
            "Packets dropped or passed to the kernel, by reason.",
        );
        for r in &l4.reasons {
            out.sample(
                "lb_l4_packets_total",
                &[("action", &r.action), ("reason", &r.reason)],
                r.packets as f64,
            );
        }
    }
    out.buf
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping() {
        assert_eq!(escape_label("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }

    #[test]
    fn cache_families() {
        let doc = StatsDoc {
            caches: vec![super::super::stats::CacheStats {
                name: "c1".into(),
                lookups: 10,
                hits: 7,
                misses: 3,
                stores: 2,
                evictions: 1,
                bytes_served: 7000,
                bytes_used: 2048,
                capacity: 1 << 20,
                entries: 2,
            }],
            ..StatsDoc::default()
        };
        let text = render(&doc);
        for line in [
            "# TYPE lb_cache_hits_total counter",
            "lb_cache_hits_total{cache=\"c1\"} 7",
            "lb_cache_misses_total{cache=\"c1\"} 3",
            "lb_cache_served_bytes_total{cache=\"c1\"} 7000",
            "# TYPE lb_cache_used_bytes gauge",
            "lb_cache_used_bytes{cache=\"c1\"} 2048",
            "lb_cache_entries{cache=\"c1\"} 2",
        ] {
            assert!(text.lines().any(|l| l == line), "{line}\n{text}");
        }
        // and the HTML page shows the table
        let html = super::super::html::render(&doc);
        assert!(
            html.contains("HTTP caches") && html.contains(">c1<"),
            "{html}"
        );
    }

    #[test]
    fn values() {
        assert_eq!(fmt_value(f64::INFINITY), "+Inf");
        assert_eq!(fmt_value(3.0), "3");
        assert_eq!(fmt_value(0.0005), "0.0005");
    }
}
