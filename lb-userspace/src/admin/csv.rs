//! `/stats;csv` (also `/stats.csv`) and the stats socket's `show stat`: HAProxy 2.6's CSV
//! stats format, its 128 columns in its order (`pxname,svname,qcur,…,h1_spliced_bytes_out`),
//! so scripts written for HAProxy's `show stat` keep working. Fields lb does not track are left empty, as HAProxy does for
//! fields that do not apply.

use super::stats::{CounterStats, ServerStats, StatsDoc};

/// HAProxy 2.6's CSV columns.
pub const COLUMNS: [&str; 128] = [
    "pxname",
    "svname",
    "qcur",
    "qmax",
    "scur",
    "smax",
    "slim",
    "stot",
    "bin",
    "bout",
    "dreq",
    "dresp",
    "ereq",
    "econ",
    "eresp",
    "wretr",
    "wredis",
    "status",
    "weight",
    "act",
    "bck",
    "chkfail",
    "chkdown",
    "lastchg",
    "downtime",
    "qlimit",
    "pid",
    "iid",
    "sid",
    "throttle",
    "lbtot",
    "tracked",
    "type",
    "rate",
    "rate_lim",
    "rate_max",
    "check_status",
    "check_code",
    "check_duration",
    "hrsp_1xx",
    "hrsp_2xx",
    "hrsp_3xx",
    "hrsp_4xx",
    "hrsp_5xx",
    "hrsp_other",
    "hanafail",
    "req_rate",
    "req_rate_max",
    "req_tot",
    "cli_abrt",
    "srv_abrt",
    "comp_in",
    "comp_out",
    "comp_byp",
    "comp_rsp",
    "lastsess",
    "last_chk",
    "last_agt",
    "qtime",
    "ctime",
    "rtime",
    "ttime",
    "agent_status",
    "agent_code",
    "agent_duration",
    "check_desc",
    "agent_desc",
    "check_rise",
    "check_fall",
    "check_health",
    "agent_rise",
    "agent_fall",
    "agent_health",
    "addr",
    "cookie",
    "mode",
    "algo",
    "conn_rate",
    "conn_rate_max",
    "conn_tot",
    "intercepted",
    "dcon",
    "dses",
    "wrew",
    "connect",
    "reuse",
    "cache_lookups",
    "cache_hits",
    "srv_icur",
    "src_ilim",
    "qtime_max",
    "ctime_max",
    "rtime_max",
    "ttime_max",
    "eint",
    "idle_conn_cur",
    "safe_conn_cur",
    "used_conn_cur",
    "need_conn_est",
    "uweight",
    "agg_server_status",
    "agg_server_check_status",
    "agg_check_status",
    "-",
    "ssl_sess",
    "ssl_reused_sess",
    "ssl_failed_handshake",
    "h2_headers_rcvd",
    "h2_data_rcvd",
    "h2_settings_rcvd",
    "h2_rst_stream_rcvd",
    "h2_goaway_rcvd",
    "h2_detected_conn_protocol_errors",
    "h2_detected_strm_protocol_errors",
    "h2_rst_stream_resp",
    "h2_goaway_resp",
    "h2_open_connections",
    "h2_backend_open_streams",
    "h2_total_connections",
    "h2_backend_total_streams",
    "h1_open_connections",
    "h1_open_streams",
    "h1_total_connections",
    "h1_total_streams",
    "h1_bytes_in",
    "h1_bytes_out",
    "h1_spliced_bytes_in",
    "h1_spliced_bytes_out",
];

fn idx(name: &str) -> usize {
    COLUMNS.iter().position(|c| *c == name).unwrap_or(0)
}

/// A CSV field: commas, quotes and newlines are not expected in names, but are quoted
/// safely anyway.
fn field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_owned()
    }
}

struct Row(Vec<String>);

impl Row {
    fn new(px: &str, sv: &str, kind: u8, pid: u32) -> Self {
        let mut r = Row(vec![String::new(); COLUMNS.len()]);
        r.set("pxname", px);
        r.set("svname", sv);
        r.set("type", kind);
        r.set("pid", pid);
        r
    }

    fn set(&mut self, col: &str, v: impl ToString) {
        let i = idx(col);
        if let Some(slot) = self.0.get_mut(i) {
            *slot = v.to_string();
        }
    }

    fn counters(&mut self, c: &CounterStats, http: bool) {
        self.set("scur", c.active_conns);
        self.set("stot", c.total_conns);
        self.set("bin", c.bytes_in);
        self.set("bout", c.bytes_out);
        self.set("eresp", c.errors);
        if http {
            let r = &c.responses;
            self.set("hrsp_1xx", r.r1xx);
            self.set("hrsp_2xx", r.r2xx);
            self.set("hrsp_3xx", r.r3xx);
            self.set("hrsp_4xx", r.r4xx);
            self.set("hrsp_5xx", r.r5xx);
            self.set("hrsp_other", r.other);
            self.set("req_tot", c.requests);
        }
    }

    fn line(&self) -> String {
        let mut l = self
            .0
            .iter()
            .map(|f| field(f))
            .collect::<Vec<_>>()
            .join(",");
        l.push_str(",\n");
        l
    }
}

fn server_status(s: &ServerStats) -> String {
    match (&s.check, s.status.as_str()) {
        (_, "MAINT" | "DRAIN") => s.status.clone(),
        (Some(c), _) if s.checked => c.progress.clone(),
        _ => "no check".to_owned(),
    }
}

/// Proxy names in id order (HAProxy's `iid`, 1-based): frontends, then backends; a listen
/// section's two halves share one id.
pub fn proxy_ids(doc: &StatsDoc) -> Vec<String> {
    let mut ids: Vec<String> = Vec::new();
    for n in doc
        .frontends
        .iter()
        .map(|f| &f.name)
        .chain(doc.backends.iter().map(|b| &b.name))
    {
        if !ids.contains(n) {
            ids.push(n.clone());
        }
    }
    ids
}

/// Renders the CSV document.
pub fn render(doc: &StatsDoc) -> String {
    let mut out = format!("# {},\n", COLUMNS.join(","));
    let iids = proxy_ids(doc);
    let iid = |name: &str| iids.iter().position(|n| n == name).map_or(0, |i| i + 1);
    for f in &doc.frontends {
        let mut r = Row::new(&f.name, "FRONTEND", 0, doc.pid);
        r.set("iid", iid(&f.name));
        r.set("sid", 0);
        r.counters(&f.counters, true);
        r.set("status", "OPEN");
        r.set("ereq", f.counters.errors);
        r.set("eresp", "");
        out.push_str(&r.line());
    }
    for b in &doc.backends {
        for (sid, s) in b.servers.iter().enumerate() {
            let mut r = Row::new(&b.name, &s.name, 2, doc.pid);
            r.set("iid", iid(&b.name));
            r.set("sid", sid + 1);
            r.set("addr", &s.addr);
            r.counters(&s.counters, true);
            r.set("status", server_status(s));
            r.set("weight", s.weight);
            r.set("act", if s.backup { 0 } else { 1 });
            r.set("bck", if s.backup { 1 } else { 0 });
            if let Some(c) = s.check.as_ref().filter(|_| s.checked) {
                r.set("chkfail", c.failures);
                r.set("chkdown", c.up_down);
                r.set("check_status", &c.status);
                r.set("check_desc", &c.desc);
                r.set("check_rise", c.rise);
                r.set("check_fall", c.fall);
                r.set("check_health", c.health);
                if let Some(code) = c.code {
                    r.set("check_code", code);
                }
                if let Some(ms) = c.duration_ms {
                    r.set("check_duration", ms.round() as u64);
                }
            }
            out.push_str(&r.line());
        }
        let mut r = Row::new(&b.name, "BACKEND", 1, doc.pid);
        r.set("iid", iid(&b.name));
        r.set("sid", 0);
        r.counters(&b.counters, true);
        r.set("status", &b.status);
        let weight = b.up_weight();
        r.set("weight", weight);
        r.set("act", b.active_servers);
        r.set("bck", b.backup_servers);
        out.push_str(&r.line());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_in_haproxy_positions() {
        assert_eq!(idx("pxname"), 0);
        assert_eq!(idx("status"), 17);
        assert_eq!(idx("type"), 32);
        assert_eq!(idx("check_status"), 36);
        assert_eq!(idx("hrsp_2xx"), 40);
        assert_eq!(idx("req_tot"), 48);
        assert_eq!(idx("addr"), 73);
        assert_eq!(idx("h1_spliced_bytes_out"), 127);
    }

    #[test]
    fn quoting() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\","), "\"say \"\"hi\"\",\"");
    }
}
