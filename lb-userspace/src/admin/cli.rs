//! The stats socket (`[global] stats_socket`, HAProxy's `stats socket PATH [mode M]
//! [level L]`): HAProxy's runtime CLI on a unix socket, with the commands tools and
//! scripts use, in HAProxy 2.6's words and formats, so `socat` scripts written for HAProxy
//! work unchanged.
//!
//! As in HAProxy, a connection sends one line of commands separated by `;`; each command's
//! output is followed by an empty line, and the connection closes after the line unless
//! `prompt` made it interactive (then `> ` follows each line's output, until `quit` or
//! `prompt` again). Levels: `user` may read (`show info|stat|servers state|backend`,
//! `get weight`), `operator` also `show sess`, `admin` may also change servers; a session
//! may lower its level with `operator` or `user`.

use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::task::JoinHandle;

use super::stats::{self, ServerStats, StatsDoc};
use super::{AdminContext, AdminError, WeightError, apply_admin, apply_weight, csv, parse_weight};
use crate::config::model::{CliLevel, StatsSocket};
use crate::health::AdminState;
use crate::state::StateError;

/// A session that sends nothing for this long is closed (HAProxy's `stats timeout`).
const IDLE: Duration = Duration::from_secs(10);
/// Longest command line taken.
const MAX_LINE: u64 = 64 * 1024;

/// A listening stats socket; stops and removes its file when dropped.
#[derive(Debug)]
pub struct StatsSocketServer {
    path: PathBuf,
    task: JoinHandle<()>,
}

impl StatsSocketServer {
    /// Binds the socket (a stale socket file left by a previous run is replaced; any other
    /// file at that path is an error) and sets its mode.
    pub fn bind(sock: &StatsSocket, ctx: AdminContext) -> Result<Self, AdminError> {
        let path = sock.path.clone();
        let err = |source| AdminError::Socket {
            path: path.clone(),
            source,
        };
        use std::os::unix::fs::{FileTypeExt, PermissionsExt};
        if let Ok(meta) = std::fs::symlink_metadata(&path) {
            if !meta.file_type().is_socket() {
                return Err(err(std::io::Error::new(
                    std::io::ErrorKind::AlreadyExists,
                    "a file that is not a socket is in the way",
                )));
            }
            std::fs::remove_file(&path).map_err(err)?;
        }
        let listener = UnixListener::bind(&path).map_err(err)?;
        if let Some(mode) = sock.mode {
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).map_err(err)?;
        }
        let level = sock.level;
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            loop {
                match listener.accept().await {
                    Ok((stream, _)) => {
                        while conns.try_join_next().is_some() {}
                        let ctx = ctx.clone();
                        conns.spawn(session(stream, ctx, level));
                    }
                    Err(e) => {
                        tracing::warn!("stats socket: accept failed: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        tracing::info!(
            "stats socket listening on {} (level {})",
            path.display(),
            level.as_str()
        );
        Ok(Self { path, task })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for StatsSocketServer {
    fn drop(&mut self) {
        self.task.abort();
        let _ = std::fs::remove_file(&self.path);
    }
}

/// One CLI session's state.
struct Session {
    level: CliLevel,
    interactive: bool,
}

async fn session(stream: UnixStream, ctx: AdminContext, level: CliLevel) {
    let (read, mut write) = stream.into_split();
    let mut read = BufReader::new(read);
    let mut s = Session {
        level,
        interactive: false,
    };
    loop {
        let mut line = Vec::new();
        let n = match tokio::time::timeout(
            IDLE,
            (&mut read).take(MAX_LINE).read_until(b'\n', &mut line),
        )
        .await
        {
            Ok(Ok(n)) => n,
            Ok(Err(_)) | Err(_) => return,
        };
        if n == 0 {
            return;
        }
        let eof = line.last() != Some(&b'\n');
        let text = String::from_utf8_lossy(&line);
        let (out, quit) = run_line(&ctx, &mut s, text.trim_end_matches(['\n', '\r']));
        let mut out = out;
        if s.interactive && !quit {
            out.push_str("> ");
        }
        if write.write_all(out.as_bytes()).await.is_err() || quit || !s.interactive || eof {
            let _ = write.shutdown().await;
            return;
        }
    }
}

/// Runs one line of `;`-separated commands: the output and whether to close now (`quit`).
fn run_line(ctx: &AdminContext, s: &mut Session, line: &str) -> (String, bool) {
    let mut out = String::new();
    for cmd in line.split(';') {
        let words: Vec<&str> = cmd.split_whitespace().collect();
        if words.first() == Some(&"quit") {
            return (out, true);
        }
        out.push_str(&command(ctx, s, &words));
        out.push('\n');
    }
    (out, false)
}

/// The commands lb answers, with HAProxy's usage text (`help`).
const HELP: &[(&str, &str)] = &[
    (
        "disable server (DEPRECATED)",
        "disable a server for maintenance (use 'set server' instead)",
    ),
    (
        "enable server  (DEPRECATED)",
        "enable a disabled server (use 'set server' instead)",
    ),
    ("get weight <bk>/<srv>", "report a server's current weight"),
    (
        "operator",
        "lower the level of the current CLI session to operator",
    ),
    (
        "set server <bk>/<srv> [opts]",
        "change a server's state or weight",
    ),
    (
        "set weight <bk>/<srv>  (DEPRECATED)",
        "change a server's weight (use 'set server' instead)",
    ),
    (
        "show backend",
        "list backends in the current running config",
    ),
    (
        "show cli level",
        "display the level of the current CLI session",
    ),
    ("show info", "report information about the running process"),
    (
        "show servers state [<backend>]",
        "dump volatile server information (all or for a single backend)",
    ),
    ("show sess", "report a summary of the current sessions"),
    ("show stat", "report counters for each proxy and server"),
    (
        "shutdown sessions server <bk>/<srv>",
        "kill sessions on a server",
    ),
    ("user", "lower the level of the current CLI session to user"),
    ("help [<command>]", "list matching or all commands"),
    ("prompt", "toggle interactive mode with prompt"),
    ("quit", "disconnect"),
];

fn help_lines(filter: impl Fn(&str) -> bool) -> String {
    HELP.iter()
        .filter(|(u, _)| filter(u) || matches!(*u, "help [<command>]" | "prompt" | "quit"))
        .map(|(u, d)| format!("  {u:<40}: {d}\n"))
        .collect()
}

/// HAProxy's answer to a command it does not know: the commands sharing its first word
/// when there are some, else all of them.
fn unknown(words: &[&str]) -> String {
    let first = words.first().copied().unwrap_or_default();
    let near = |u: &str| !first.is_empty() && u.split(' ').next() == Some(first);
    if HELP.iter().any(|(u, _)| near(u)) {
        format!(
            "Unknown command, but maybe one of the following ones is a better match:\n{}",
            help_lines(near)
        )
    } else {
        format!(
            "Unknown command. Please enter one of the following commands only:\n{}",
            help_lines(|_| true)
        )
    }
}

const DENIED: &str = "Permission denied\n";
const NEED_SERVER: &str = "Require 'backend/server'.\n";

fn command(ctx: &AdminContext, s: &mut Session, w: &[&str]) -> String {
    let need = |l: CliLevel| s.level >= l;
    match w {
        ["help", ..] => format!(
            "The following commands are valid at this level:\n{}",
            help_lines(|_| true)
        ),
        ["prompt", ..] => {
            s.interactive = !s.interactive;
            String::new()
        }
        ["user"] => {
            s.level = CliLevel::User;
            String::new()
        }
        ["operator"] if need(CliLevel::Operator) => {
            s.level = CliLevel::Operator;
            String::new()
        }
        ["operator"] => DENIED.to_owned(),
        ["show", "cli", "level"] => format!("{}\n", s.level.as_str()),
        ["show", "info", ..] => show_info(&stats::collect(ctx)),
        ["show", "stat", ..] => csv::render(&stats::collect(ctx)),
        ["show", "servers", "state", rest @ ..] => servers_state(ctx, rest.first().copied()),
        ["show", "backend"] => {
            let mut out = "# name\n".to_owned();
            for b in &stats::collect(ctx).backends {
                out.push_str(&b.name);
                out.push('\n');
            }
            out
        }
        ["show", "sess", ..] if need(CliLevel::Operator) => show_sess(&stats::collect(ctx)),
        ["show", "sess", ..] => DENIED.to_owned(),
        ["get", "weight", rest @ ..] => match server_arg(ctx, rest.first().copied()) {
            Ok((b, sv)) => {
                let cur = ctx
                    .registry
                    .backend(b)
                    .and_then(|x| x.server(sv).map(|x| x.weight()))
                    .unwrap_or(0);
                format!("{cur} (initial {})\n", initial_weight(ctx, b, sv, cur))
            }
            Err(e) => e,
        },
        ["disable" | "enable", "server", ..] | ["set", "server", ..] | ["set", "weight", ..]
            if !need(CliLevel::Admin) =>
        {
            DENIED.to_owned()
        }
        ["shutdown", "sessions", "server", ..] if !need(CliLevel::Admin) => DENIED.to_owned(),
        ["shutdown", "sessions", "server", rest @ ..] => {
            match server_arg(ctx, rest.first().copied()) {
                Ok((b, sv)) => match ctx.registry.shutdown_sessions(b, sv) {
                    Ok(()) => {
                        tracing::warn!("Server {b}/{sv}: sessions shut down by the stats socket");
                        String::new()
                    }
                    Err(e) => state_text(&e),
                },
                Err(e) => e,
            }
        }
        ["disable", "server", rest @ ..] => {
            admin_state(ctx, rest.first().copied(), AdminState::Maint)
        }
        ["enable", "server", rest @ ..] => {
            admin_state(ctx, rest.first().copied(), AdminState::Ready)
        }
        ["set", "weight", rest @ ..] => match server_arg(ctx, rest.first().copied()) {
            Ok((b, sv)) => set_weight(ctx, b, sv, rest.get(1).copied()),
            Err(e) => e,
        },
        ["set", "server", rest @ ..] => {
            let (b, sv) = match server_arg(ctx, rest.first().copied()) {
                Ok(x) => x,
                Err(e) => return e,
            };
            match rest.get(1..).unwrap_or_default() {
                ["state", state, ..] if AdminState::parse(state).is_some() => {
                    let st = AdminState::parse(state).unwrap_or_default();
                    admin_state(ctx, rest.first().copied(), st)
                }
                ["state", ..] => {
                    "'set server <srv> state' expects 'ready', 'drain' and 'maint'.\n".to_owned()
                }
                ["weight", value @ ..] => set_weight(ctx, b, sv, value.first().copied()),
                _ => "usage: set server <backend>/<server> state | weight\n".to_owned(),
            }
        }
        _ => unknown(w),
    }
}

/// `B/S` of an existing server, or HAProxy's error text.
fn server_arg<'a>(ctx: &AdminContext, arg: Option<&'a str>) -> Result<(&'a str, &'a str), String> {
    let Some((b, sv)) = arg.and_then(|a| a.split_once('/')) else {
        return Err(NEED_SERVER.to_owned());
    };
    let Some(be) = ctx.registry.backend(b) else {
        return Err("No such backend.\n".to_owned());
    };
    if be.server(sv).is_none() {
        return Err("No such server.\n".to_owned());
    }
    Ok((b, sv))
}

fn state_text(e: &StateError) -> String {
    match e {
        StateError::NoBackend(_) => "No such backend.\n".to_owned(),
        StateError::NoServer { .. } => "No such server.\n".to_owned(),
        StateError::Weight(_) => {
            "Absolute weight can only be between 0 and 256 inclusive.\n".to_owned()
        }
    }
}

fn admin_state(ctx: &AdminContext, arg: Option<&str>, st: AdminState) -> String {
    let (b, sv) = match server_arg(ctx, arg) {
        Ok(x) => x,
        Err(e) => return e,
    };
    match apply_admin(ctx, b, sv, st) {
        Ok(()) => {
            tracing::warn!("Server {b}/{sv} set to {} by the stats socket", st.as_str());
            String::new()
        }
        Err((_, msg)) => format!("{msg}\n"),
    }
}

fn set_weight(ctx: &AdminContext, b: &str, sv: &str, value: Option<&str>) -> String {
    let Some(v) = value else {
        return "Require <weight> or <weight%>.\n".to_owned();
    };
    let w = match parse_weight(ctx, b, sv, v) {
        Ok(w) => w,
        Err(WeightError::Syntax) if v.starts_with('-') => {
            return "Absolute weight can only be between 0 and 256 inclusive.\n".to_owned();
        }
        Err(WeightError::Syntax) => {
            return "Empty weight string empty or preceded by garbage\n".to_owned();
        }
        Err(WeightError::NoConfigured) => {
            return "Relative weight requires the configured weight, which is unknown.\n"
                .to_owned();
        }
    };
    match apply_weight(ctx, b, sv, w, "the stats socket") {
        Ok(()) => String::new(),
        Err(e) => state_text(&e),
    }
}

fn initial_weight(ctx: &AdminContext, b: &str, sv: &str, current: u32) -> u32 {
    ctx.health
        .as_ref()
        .and_then(|h| h.server(b, sv))
        .map(|h| h.configured_weight())
        .filter(|w| *w > 0)
        .unwrap_or(current)
}

/// `show info`: HAProxy's `Name: value` lines, for the fields lb has.
fn show_info(doc: &StatsDoc) -> String {
    let up = doc.uptime_seconds;
    let sum = |f: fn(&stats::CounterStats) -> u64| -> u64 {
        doc.frontends.iter().map(|fe| f(&fe.counters)).sum()
    };
    let start = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs().saturating_sub(up));
    let node = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_default();
    let fields: Vec<(&str, String)> = vec![
        ("Name", "lb".to_owned()),
        ("Version", doc.version.clone()),
        ("Nbproc", "1".to_owned()),
        ("Process_num", "1".to_owned()),
        ("Pid", doc.pid.to_string()),
        (
            "Uptime",
            format!(
                "{}d {}h{:02}m{:02}s",
                up / 86400,
                up / 3600 % 24,
                up / 60 % 60,
                up % 60
            ),
        ),
        ("Uptime_sec", up.to_string()),
        ("CurrConns", sum(|c| c.active_conns).to_string()),
        ("CumConns", sum(|c| c.total_conns).to_string()),
        ("CumReq", sum(|c| c.requests).to_string()),
        ("node", node),
        ("Stopping", "0".to_owned()),
        ("Start_time_sec", start.to_string()),
    ];
    fields
        .into_iter()
        .map(|(k, v)| format!("{k}: {v}\n"))
        .collect()
}

/// HAProxy 2.6's `HCHK_STATUS_*` number of a check status word.
fn check_status_code(status: &str) -> u32 {
    match status {
        "INI" => 1,
        "START" => 2,
        "HANA" => 3,
        "SOCKERR" => 4,
        "L4OK" => 5,
        "L4TOUT" => 6,
        "L4CON" => 7,
        "L6OK" => 8,
        "L6TOUT" => 9,
        "L6RSP" => 10,
        "L7TOUT" => 11,
        "L7RSP" => 12,
        "L7OK" => 14,
        "L7OKC" => 15,
        "L7STS" => 16,
        "PROCERR" => 17,
        "PROCTOUT" => 18,
        "PROCOK" => 19,
        _ => 0,
    }
}

fn server_state_row(be_id: usize, srv_id: usize, b: &str, s: &ServerStats, initial: u32) -> String {
    let (host, port) = match s.addr.rsplit_once(':') {
        Some((h, p)) => (h.trim_start_matches('[').trim_end_matches(']'), p),
        None => (s.addr.as_str(), "0"),
    };
    // SRV_ST_STOPPED 0 / RUNNING 2; SRV_ADMF_FMAINT 0x1, SRV_ADMF_FDRAIN 0x8.
    let (op, admin) = match s.status.as_str() {
        "MAINT" => (0, 1),
        "DRAIN" => (2, 8),
        "DOWN" => (0, 0),
        _ => (2, 0),
    };
    let checked = s.checked && s.check.is_some();
    let (status, result, health, state) = match &s.check {
        Some(c) if checked => (
            check_status_code(&c.status),
            // CHK_RES_FAILED 2 / PASSED 3.
            if s.status == "DOWN" { 2 } else { 3 },
            c.health,
            // CHK_ST_CONFIGURED | CHK_ST_ENABLED.
            6,
        ),
        Some(c) => (1, 0, c.rise, 0),
        None => (1, 0, 2, 0),
    };
    format!(
        "{be_id} {b} {srv_id} {} {host} {op} {admin} {} {initial} 0 {status} {result} {health} \
         {state} 0 0 0 - {port} - 0 0 - - 0\n",
        s.name, s.weight
    )
}

/// `show servers state [B]`: HAProxy's format version 1.
fn servers_state(ctx: &AdminContext, only: Option<&str>) -> String {
    let doc = stats::collect(ctx);
    if let Some(b) = only
        && !doc.backends.iter().any(|x| x.name == b)
    {
        return "Can't find backend.\n".to_owned();
    }
    let ids = csv::proxy_ids(&doc);
    let mut out = "1\n# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state \
                   srv_uweight srv_iweight srv_time_since_last_change srv_check_status \
                   srv_check_result srv_check_health srv_check_state srv_agent_state \
                   bk_f_forced_id srv_f_forced_id srv_fqdn srv_port srvrecord srv_use_ssl \
                   srv_check_port srv_check_addr srv_agent_addr srv_agent_port\n"
        .to_owned();
    for b in doc
        .backends
        .iter()
        .filter(|b| only.is_none_or(|o| o == b.name))
    {
        let be_id = ids.iter().position(|n| *n == b.name).map_or(0, |i| i + 1);
        for (i, s) in b.servers.iter().enumerate() {
            let initial = initial_weight(ctx, &b.name, &s.name, s.weight);
            out.push_str(&server_state_row(be_id, i + 1, &b.name, s, initial));
        }
    }
    out
}

/// `show sess`: lb keeps no per-stream table, so a summary of the current sessions by
/// frontend and by server.
fn show_sess(doc: &StatsDoc) -> String {
    let mut out = String::new();
    let mut total = 0;
    for f in &doc.frontends {
        total += f.counters.active_conns;
        out.push_str(&format!("fe={} cur={}\n", f.name, f.counters.active_conns));
    }
    for b in &doc.backends {
        for s in &b.servers {
            out.push_str(&format!(
                "be={} srv={} cur={}\n",
                b.name, s.name, s.counters.active_conns
            ));
        }
    }
    format!(
        "# {total} sessions (lb keeps no per-stream list; counts by frontend and server)\n{out}"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn help_is_aligned_like_haproxy() {
        let h = help_lines(|_| true);
        assert!(h.contains(
            "  get weight <bk>/<srv>                   : report a server's current weight\n"
        ));
        assert!(h.ends_with("  quit                                    : disconnect\n"));
    }

    #[test]
    fn unknown_commands() {
        assert!(unknown(&["show", "foo"]).starts_with("Unknown command, but maybe"));
        assert!(unknown(&["show", "foo"]).contains("show info"));
        assert!(!unknown(&["show", "foo"]).contains("get weight"));
        assert!(unknown(&[]).starts_with("Unknown command. Please enter one of"));
        assert!(unknown(&["frobnicate"]).starts_with("Unknown command. Please enter one of"));
    }

    #[test]
    fn check_codes() {
        assert_eq!(check_status_code("INI"), 1);
        assert_eq!(check_status_code("L4OK"), 5);
        assert_eq!(check_status_code("L7OK"), 14);
        assert_eq!(check_status_code("L7STS"), 16);
    }
}
