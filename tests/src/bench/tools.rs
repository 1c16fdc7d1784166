//! Load generators (wrk, h2load) and their output parsers.

use std::process::Command;
use std::time::Duration;

/// What one load run measured.
#[derive(Debug, Clone, Copy, Default)]
pub struct Load {
    pub requests: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub errors: f64,
}

/// Runs `wrk --latency` against `url`; `close` sends `Connection: close` on every request.
pub fn wrk(url: &str, threads: u32, conns: u32, dur: Duration, close: bool) -> Option<Load> {
    let mut cmd = Command::new("wrk");
    cmd.args([
        "--latency",
        "-t",
        &threads.to_string(),
        "-c",
        &conns.to_string(),
        "-d",
        &format!("{}s", dur.as_secs()),
    ]);
    if close {
        cmd.args(["-H", "Connection: close"]);
    }
    cmd.arg(url);
    let out = cmd.output().ok()?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

fn to_ms(v: &str) -> Option<f64> {
    let (num, unit) = v.split_at(v.find(|c: char| c.is_ascii_alphabetic())?);
    let n: f64 = num.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

/// Parses wrk's `--latency` report.
pub fn parse_wrk(text: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in text.lines() {
        let w: Vec<&str> = line.split_whitespace().collect();
        match w.as_slice() {
            ["50%", v] => load.p50_ms = to_ms(v)?,
            ["99%", v] => load.p99_ms = to_ms(v)?,
            ["Requests/sec:", v] => load.rps = v.parse().ok()?,
            [n, "requests", "in", ..] => load.requests = n.parse().ok()?,
            ["Non-2xx", "or", "3xx", "responses:", n] => load.errors += n.parse::<f64>().ok()?,
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|t| t.trim_end_matches(',').parse::<f64>().ok())
                    .sum::<f64>();
            }
            _ => {}
        }
    }
    (load.rps > 0.0).then_some(load)
}

/// Runs h2load (HTTP/2 over TLS) against `url`.
pub fn h2load(url: &str, clients: u32, streams: u32, requests: u32) -> Option<Load> {
    let out = Command::new("h2load")
        .args([
            "-c",
            &clients.to_string(),
            "-m",
            &streams.to_string(),
            "-n",
            &requests.to_string(),
            url,
        ])
        .output()
        .ok()?;
    parse_h2load(&String::from_utf8_lossy(&out.stdout))
}

/// Parses h2load's summary (`finished in …, N req/s`, `requests: … succeeded`, request time).
pub fn parse_h2load(text: &str) -> Option<Load> {
    let mut load = Load::default();
    for line in text.lines() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("finished in") {
            let rps = rest.split(',').nth(1)?.split_whitespace().next()?;
            load.rps = rps.parse().ok()?;
        } else if let Some(rest) = line.strip_prefix("requests:") {
            for part in rest.split(',') {
                let w: Vec<&str> = part.split_whitespace().collect();
                match w.as_slice() {
                    [n, "succeeded"] => load.requests = n.parse().ok()?,
                    [n, "failed"] | [n, "errored"] => load.errors += n.parse::<f64>().ok()?,
                    _ => {}
                }
            }
        } else if let Some(rest) = line.strip_prefix("time for request:") {
            // min max mean sd +/- sd
            let w: Vec<&str> = rest.split_whitespace().collect();
            load.p50_ms = w.get(2).and_then(|v| to_ms(v)).unwrap_or(0.0);
            load.p99_ms = w.get(1).and_then(|v| to_ms(v)).unwrap_or(0.0);
        }
    }
    (load.rps > 0.0).then_some(load)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_wrk_latency_report() {
        let text = "Running 2s test @ http://127.0.0.1:1/\n  2 threads and 10 connections\n  Latency Distribution\n     50%  210.00us\n     75%  300.00us\n     90%    1.00ms\n     99%    2.50ms\n  41234 requests in 2.00s, 5.00MB read\n  Socket errors: connect 0, read 2, write 0, timeout 1\nRequests/sec:  20617.00\nTransfer/sec:      2.50MB\n";
        let l = parse_wrk(text).expect("parsed");
        assert_eq!(l.rps, 20617.0);
        assert_eq!(l.requests, 41234.0);
        assert!((l.p50_ms - 0.21).abs() < 1e-9);
        assert_eq!(l.p99_ms, 2.5);
        assert_eq!(l.errors, 3.0);
    }

    #[test]
    fn parses_h2load_summary() {
        let text = "finished in 1.23s, 81300.81 req/s, 3.10MB/s\nrequests: 100000 total, 100000 started, 100000 done, 99990 succeeded, 10 failed, 0 errored, 0 timeout\ntime for request:      120us      9.50ms      1.10ms       800us    70.00%\n";
        let l = parse_h2load(text).expect("parsed");
        assert_eq!(l.rps, 81300.81);
        assert_eq!(l.requests, 99990.0);
        assert_eq!(l.errors, 10.0);
        assert_eq!(l.p50_ms, 1.1);
        assert_eq!(l.p99_ms, 9.5);
    }
}
