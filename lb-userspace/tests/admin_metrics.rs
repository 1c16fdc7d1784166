//! `/metrics` parsed by a real Prometheus text parser: names, labels, values.

mod admin_common;

use std::collections::{HashMap, HashSet};

use admin_common::{get, lab};
use prometheus_parse::{Sample, Scrape, Value};

fn scrape(body: &str) -> Scrape {
    Scrape::parse(body.lines().map(|l| Ok(l.to_owned()))).expect("valid exposition")
}

fn find<'a>(s: &'a Scrape, name: &str, labels: &[(&str, &str)]) -> Option<&'a Sample> {
    s.samples
        .iter()
        .find(|x| x.metric == name && labels.iter().all(|(k, v)| x.labels.get(k) == Some(*v)))
}

fn scalar(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> f64 {
    match find(s, name, labels).map(|x| &x.value) {
        Some(Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v)) => *v,
        other => panic!("{name}{labels:?}: {other:?}"),
    }
}

fn is_counter(s: &Scrape, name: &str, labels: &[(&str, &str)]) -> bool {
    matches!(
        find(s, name, labels).map(|x| &x.value),
        Some(Value::Counter(_))
    )
}

#[tokio::test]
async fn metrics_names_labels_values() {
    let lab = lab(None).await;
    let r = get(lab.addr, "/metrics").await;
    assert_eq!(r.status, 200);
    assert!(
        r.header("content-type")
            .expect("ct")
            .starts_with("text/plain; version=0.0.4")
    );
    let s = scrape(&r.body);

    // Frontend.
    let fe = [("frontend", "web")];
    assert_eq!(scalar(&s, "lb_frontend_requests_total", &fe), 42.0);
    assert!(is_counter(&s, "lb_frontend_requests_total", &fe));
    assert_eq!(scalar(&s, "lb_frontend_connections_current", &fe), 2.0);
    assert_eq!(scalar(&s, "lb_frontend_bytes_in_total", &fe), 4096.0);
    assert_eq!(scalar(&s, "lb_frontend_bytes_out_total", &fe), 0.0);
    assert_eq!(scalar(&s, "lb_frontend_connections_total", &fe), 0.0);

    // Backend.
    let be = [("backend", "app")];
    assert_eq!(scalar(&s, "lb_backend_requests_total", &be), 7.0);
    assert_eq!(scalar(&s, "lb_backend_status", &be), 1.0);
    assert_eq!(scalar(&s, "lb_backend_active_servers", &be), 1.0);
    assert_eq!(scalar(&s, "lb_backend_backup_servers", &be), 1.0);

    // Server status: one line per state, 1 for the current one.
    let st = |server: &str, state: &str| {
        scalar(
            &s,
            "lb_server_status",
            &[("backend", "app"), ("server", server), ("state", state)],
        )
    };
    assert_eq!(st("s1", "UP"), 1.0);
    assert_eq!(st("s1", "DOWN"), 0.0);
    assert_eq!(st("s1", "DRAIN"), 0.0);
    assert_eq!(st("s1", "MAINT"), 0.0);
    let s1 = [("backend", "app"), ("server", "s1")];
    assert_eq!(scalar(&s, "lb_server_weight", &s1), 2.0);
    assert_eq!(scalar(&s, "lb_server_requests_total", &s1), 7.0);
    assert_eq!(scalar(&s, "lb_server_connections_current", &s1), 3.0);
    assert_eq!(scalar(&s, "lb_server_connections_total", &s1), 11.0);
    assert_eq!(scalar(&s, "lb_server_bytes_in_total", &s1), 1234.0);
    assert_eq!(scalar(&s, "lb_server_bytes_out_total", &s1), 5678.0);
    let code = |c: &str| {
        scalar(
            &s,
            "lb_server_http_responses_total",
            &[("backend", "app"), ("server", "s1"), ("code", c)],
        )
    };
    assert_eq!((code("2xx"), code("5xx"), code("4xx")), (1.0, 1.0, 0.0));

    // Check-duration histogram for the checked server only.
    let h = s
        .samples
        .iter()
        .find(|x| {
            x.metric == "lb_server_check_duration_seconds"
                && x.labels.get("server") == Some("s1")
                && matches!(x.value, Value::Histogram(_))
        })
        .expect("histogram for s1");
    let Value::Histogram(buckets) = &h.value else {
        unreachable!()
    };
    assert!(buckets.len() >= 10);
    assert!(buckets.iter().any(|b| b.less_than.is_infinite()));
    let inf = buckets
        .iter()
        .find(|b| b.less_than.is_infinite())
        .map(|b| b.count)
        .expect("+Inf");
    assert!(inf >= 1.0);
    assert!(
        buckets.windows(2).all(|w| w[0].count <= w[1].count),
        "cumulative"
    );
    let count = scalar(&s, "lb_server_check_duration_seconds_count", &s1);
    assert_eq!(count, inf);
    assert!(scalar(&s, "lb_server_check_duration_seconds_sum", &s1) >= 0.0);
    assert!(
        find(
            &s,
            "lb_server_check_duration_seconds_count",
            &[("server", "s2")]
        )
        .is_none(),
        "unchecked servers have no check histogram"
    );
    assert_eq!(
        scalar(
            &s,
            "lb_server_check_status",
            &[("backend", "app"), ("server", "s1"), ("status", "L4OK")]
        ),
        1.0
    );

    // L4.
    assert_eq!(scalar(&s, "lb_l4_stats_up", &[]), 1.0);
    let vip = [
        ("frontend", "edge"),
        ("vip", "203.0.113.10:443"),
        ("proto", "tcp"),
    ];
    assert_eq!(scalar(&s, "lb_l4_vip_packets_total", &vip), 1000.0);
    assert_eq!(scalar(&s, "lb_l4_vip_bytes_total", &vip), 64000.0);
    assert_eq!(scalar(&s, "lb_l4_vip_new_flows_total", &vip), 10.0);
    assert_eq!(scalar(&s, "lb_l4_vip_flows", &vip), 7.0);
    assert_eq!(scalar(&s, "lb_l4_vip_non_syn_misses_total", &vip), 3.0);
    assert_eq!(
        scalar(&s, "lb_l4_flow_table_entries", &[("family", "ipv4")]),
        7.0
    );
    assert_eq!(scalar(&s, "lb_l4_flow_table_capacity", &[]), 1024.0);
    let l4s = [
        ("backend", "api"),
        ("server", "a1"),
        ("addr", "127.0.0.1:8443"),
    ];
    assert_eq!(scalar(&s, "lb_l4_server_packets_total", &l4s), 900.0);
    assert_eq!(
        scalar(
            &s,
            "lb_l4_packets_total",
            &[("action", "drop"), ("reason", "deny_src")]
        ),
        5.0
    );
    assert_eq!(
        scalar(
            &s,
            "lb_l4_packets_total",
            &[("action", "pass"), ("reason", "fragment")]
        ),
        2.0
    );
}

/// Stricter than the parser: every sample's family is declared once with HELP and TYPE
/// before it, families are contiguous, and no series is repeated.
#[tokio::test]
async fn exposition_is_well_formed() {
    let lab = lab(None).await;
    lab.health
        .set_admin("app", "s1", lb::health::AdminState::Maint)
        .expect("maint");
    let body = get(lab.addr, "/metrics").await.body;
    let mut declared: HashMap<String, String> = HashMap::new();
    let mut helped: HashSet<String> = HashSet::new();
    let mut finished: HashSet<String> = HashSet::new();
    let mut current: Option<String> = None;
    let mut series: HashSet<String> = HashSet::new();
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().expect("name").to_owned();
            assert!(helped.insert(name), "HELP twice: {line}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut it = rest.split(' ');
            let name = it.next().expect("name").to_owned();
            let kind = it.next().expect("kind").to_owned();
            assert!(
                ["counter", "gauge", "histogram", "summary", "untyped"].contains(&kind.as_str())
            );
            if let Some(prev) = current.replace(name.clone()) {
                finished.insert(prev);
            }
            assert!(declared.insert(name, kind).is_none(), "TYPE twice: {line}");
        } else if !line.is_empty() {
            let (series_key, value) = line.rsplit_once(' ').expect("name value");
            value
                .parse::<f64>()
                .or_else(|_| {
                    if value == "+Inf" {
                        Ok(f64::INFINITY)
                    } else {
                        Err(())
                    }
                })
                .expect("numeric value");
            let name = series_key.split('{').next().expect("name");
            let family = current.clone().expect("sample after a TYPE");
            let base = ["_bucket", "_sum", "_count"]
                .iter()
                .find_map(|suf| name.strip_suffix(suf))
                .filter(|b| declared.get(*b).map(String::as_str) == Some("histogram"))
                .unwrap_or(name);
            assert_eq!(base, family, "sample outside its family: {line}");
            assert!(!finished.contains(base), "family not contiguous: {line}");
            if declared.get(base).map(String::as_str) == Some("counter") {
                assert!(name.ends_with("_total"), "counter without _total: {name}");
            }
            assert!(
                series.insert(series_key.to_owned()),
                "duplicate series: {line}"
            );
        }
    }
    assert!(body.contains("lb_server_status{backend=\"app\",server=\"s1\",state=\"MAINT\"} 1\n"));
}

#[tokio::test]
async fn label_values_are_escaped() {
    let reg = std::sync::Arc::new(lb::state::Registry::new());
    let fe = std::sync::Arc::new(lb::state::Counters::default());
    reg.replace(
        HashMap::new(),
        HashMap::from([("we\"ird\\name".to_owned(), fe)]),
    );
    let ctx = lb::admin::AdminContext::new(reg);
    let doc = lb::admin::stats::collect(&ctx);
    let text = lb::admin::prometheus::render(&doc);
    assert!(
        text.contains("lb_frontend_requests_total{frontend=\"we\\\"ird\\\\name\"} 0"),
        "{text}"
    );
    // Without a data plane, L4 is reported as down rather than missing.
    assert!(text.contains("lb_l4_stats_up 0\n"));
}
