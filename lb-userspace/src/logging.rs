//! Process-wide log output (`tracing` subscriber), per `global.log_format`:
//!
//! * `haproxy`: one line per event, the way HAProxy writes to stderr, with a timestamp:
//!   `2026-11-26T07:51:34.123456Z [WARNING]  (4242) : Server be/s1 is DOWN, reason: …`.
//!   Levels map to HAProxy's: ERROR → `ALERT`, WARN → `WARNING`, INFO → `NOTICE`.
//!   Events whose target is `access` (access logs, already complete lines) are written
//!   as the bare message.
//! * `json`: one JSON object per line (`timestamp`, `level`, `target`, `message` and every
//!   structured field flattened).
//!
//! The filter comes from `RUST_LOG` when set (e.g. `RUST_LOG=lb=debug`), else `info`.

use std::fmt;

use tracing::{Event, Level, Subscriber};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::fmt::format::Writer;
use tracing_subscriber::fmt::time::{FormatTime, SystemTime};
use tracing_subscriber::fmt::{FmtContext, FormatEvent, FormatFields, MakeWriter};
use tracing_subscriber::registry::LookupSpan;

use crate::config::model::LogFormat;

/// Errors of the logging module.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    #[error("invalid log filter {filter:?}: {reason}")]
    Filter { filter: String, reason: String },
    #[error("a global logger is already installed: {0}")]
    AlreadySet(String),
}

/// The target whose events are printed as bare lines in `haproxy` format.
pub const ACCESS_TARGET: &str = "access";

/// HAProxy-style text lines.
#[derive(Debug, Clone)]
pub struct HaproxyFormat {
    pid: u32,
}

impl Default for HaproxyFormat {
    fn default() -> Self {
        Self {
            pid: std::process::id(),
        }
    }
}

/// HAProxy's name for a level.
pub fn haproxy_level(level: &Level) -> &'static str {
    match *level {
        Level::ERROR => "ALERT",
        Level::WARN => "WARNING",
        Level::INFO => "NOTICE",
        Level::DEBUG => "DEBUG",
        Level::TRACE => "TRACE",
    }
}

impl<S, N> FormatEvent<S, N> for HaproxyFormat
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    N: for<'a> FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &FmtContext<'_, S, N>,
        mut writer: Writer<'_>,
        event: &Event<'_>,
    ) -> fmt::Result {
        if event.metadata().target() != ACCESS_TARGET {
            SystemTime.format_time(&mut writer)?;
            let level = haproxy_level(event.metadata().level());
            // HAProxy pads the bracketed level to a fixed width.
            write!(writer, " {:<10} ({}) : ", format!("[{level}]"), self.pid)?;
        }
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

fn filter(directives: Option<&str>) -> Result<EnvFilter, LoggingError> {
    match directives {
        Some(d) => EnvFilter::try_new(d).map_err(|e| LoggingError::Filter {
            filter: d.to_owned(),
            reason: e.to_string(),
        }),
        None => Ok(EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"))),
    }
}

/// A subscriber writing to `writer`; `directives` overrides `RUST_LOG` (e.g. `"debug"`).
pub fn subscriber<W>(
    format: LogFormat,
    directives: Option<&str>,
    writer: W,
) -> Result<Box<dyn Subscriber + Send + Sync>, LoggingError>
where
    W: for<'a> MakeWriter<'a> + Send + Sync + 'static,
{
    let filter = filter(directives)?;
    // Plain text: these lines go to journald or files, as HAProxy's do (no ANSI styling).
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(false)
        .with_writer(writer);
    Ok(match format {
        LogFormat::Haproxy => Box::new(builder.event_format(HaproxyFormat::default()).finish()),
        LogFormat::Json => Box::new(
            builder
                .json()
                .flatten_event(true)
                .with_current_span(false)
                .with_span_list(false)
                .finish(),
        ),
    })
}

/// Installs the global logger writing to stderr. Call once, early in `main`.
pub fn init(format: LogFormat) -> Result<(), LoggingError> {
    let sub = subscriber(format, None, std::io::stderr)?;
    tracing::subscriber::set_global_default(sub)
        .map_err(|e| LoggingError::AlreadySet(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    #[derive(Clone, Default)]
    struct Buf(Arc<Mutex<Vec<u8>>>);

    impl Write for Buf {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().expect("lock").extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    impl<'a> MakeWriter<'a> for Buf {
        type Writer = Buf;
        fn make_writer(&'a self) -> Buf {
            self.clone()
        }
    }

    fn capture(format: LogFormat, f: impl FnOnce()) -> String {
        let buf = Buf::default();
        let sub = subscriber(format, Some("info"), buf.clone()).expect("subscriber");
        tracing::subscriber::with_default(sub, f);
        let bytes = buf.0.lock().expect("lock").clone();
        String::from_utf8(bytes).expect("utf8")
    }

    #[test]
    fn haproxy_lines() {
        let out = capture(LogFormat::Haproxy, || {
            tracing::warn!("Server be/s1 is DOWN, reason: Layer4 timeout");
            tracing::debug!("hidden");
            tracing::info!(target: "access", "127.0.0.1:1234 [x] web be/s1 200");
        });
        let lines: Vec<&str> = out.lines().collect();
        assert_eq!(lines.len(), 2, "{out}");
        assert!(
            lines[0].contains(&format!(
                "[WARNING]  ({}) : Server be/s1",
                std::process::id()
            )),
            "{}",
            lines[0]
        );
        assert_eq!(lines[1], "127.0.0.1:1234 [x] web be/s1 200");
    }

    #[test]
    fn json_lines() {
        let out = capture(LogFormat::Json, || {
            tracing::error!(backend = "be", "backend be has no server available!");
        });
        let v: serde_json::Value = serde_json::from_str(out.trim()).expect("json");
        assert_eq!(v["level"], "ERROR");
        assert_eq!(v["message"], "backend be has no server available!");
        assert_eq!(v["backend"], "be");
    }

    #[test]
    fn bad_filter_is_an_error() {
        assert!(subscriber(LogFormat::Haproxy, Some("lb=notalevel"), std::io::sink).is_err());
    }
}
