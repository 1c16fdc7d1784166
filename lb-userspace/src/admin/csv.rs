//! `/stats;csv` (also `/stats.csv`): HAProxy's CSV stats format, columns 0 to 48 in
//! HAProxy's order (`pxname,svname,qcur,…,req_tot`), so scripts written for HAProxy's
//! `show stat` keep working. Fields lb does not track are left empty, as HAProxy does for
//! fields that do not apply.

use super::stats::{CounterStats, ServerStats, StatsDoc};

/// HAProxy's first 49 CSV columns.
pub const COLUMNS: [&str; 49] = [
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

/// Renders the CSV document.
pub fn render(doc: &StatsDoc) -> String {
    let mut out = format!("# {},\n", COLUMNS.join(","));
    for f in &doc.frontends {
        let mut r = Row::new(&f.name, "FRONTEND", 0, doc.pid);
        r.counters(&f.counters, true);
        r.set("status", "OPEN");
        r.set("ereq", f.counters.errors);
        r.set("eresp", "");
        out.push_str(&r.line());
    }
    for b in &doc.backends {
        for s in &b.servers {
            let mut r = Row::new(&b.name, &s.name, 2, doc.pid);
            r.counters(&s.counters, true);
            r.set("status", server_status(s));
            r.set("weight", s.weight);
            r.set("act", if s.backup { 0 } else { 1 });
            r.set("bck", if s.backup { 1 } else { 0 });
            if let Some(c) = s.check.as_ref().filter(|_| s.checked) {
                r.set("chkfail", c.failures);
                r.set("chkdown", c.up_down);
                r.set("check_status", &c.status);
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
    }

    #[test]
    fn quoting() {
        assert_eq!(field("plain"), "plain");
        assert_eq!(field("a,b"), "\"a,b\"");
        assert_eq!(field("say \"hi\","), "\"say \"\"hi\"\",\"");
    }
}
