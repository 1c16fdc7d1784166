//! Stick-table fetches (`sc_*`, `sc0_*`…`sc2_*`, `src_*`, `table_*`), HAProxy 2.6's
//! section 7.3.3. The tables live outside this leaf: an input reaches them through
//! [`StickCounters`], which the L7 tier implements over its tables and the entries a
//! request tracks.

use std::net::IpAddr;

/// How many `track-sc` slots a stream has (HAProxy's default `MAX_SESS_STKCTR`).
pub const TRACK_SLOTS: usize = 3;

/// A data type a stick table can store (`store …`), as the fetches read it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum StkData {
    ServerId,
    Gpt0,
    Gpc0,
    Gpc0Rate,
    ConnCnt,
    ConnRate,
    ConnCur,
    SessCnt,
    SessRate,
    HttpReqCnt,
    HttpReqRate,
    HttpErrCnt,
    HttpErrRate,
    BytesInCnt,
    BytesInRate,
    BytesOutCnt,
    BytesOutRate,
}

impl StkData {
    /// Every data type, in HAProxy's order.
    pub const ALL: [StkData; 17] = [
        StkData::ServerId,
        StkData::Gpt0,
        StkData::Gpc0,
        StkData::Gpc0Rate,
        StkData::ConnCnt,
        StkData::ConnRate,
        StkData::ConnCur,
        StkData::SessCnt,
        StkData::SessRate,
        StkData::HttpReqCnt,
        StkData::HttpReqRate,
        StkData::HttpErrCnt,
        StkData::HttpErrRate,
        StkData::BytesInCnt,
        StkData::BytesInRate,
        StkData::BytesOutCnt,
        StkData::BytesOutRate,
    ];

    /// The `store` keyword (`http_req_rate` …).
    pub fn name(self) -> &'static str {
        match self {
            StkData::ServerId => "server_id",
            StkData::Gpt0 => "gpt0",
            StkData::Gpc0 => "gpc0",
            StkData::Gpc0Rate => "gpc0_rate",
            StkData::ConnCnt => "conn_cnt",
            StkData::ConnRate => "conn_rate",
            StkData::ConnCur => "conn_cur",
            StkData::SessCnt => "sess_cnt",
            StkData::SessRate => "sess_rate",
            StkData::HttpReqCnt => "http_req_cnt",
            StkData::HttpReqRate => "http_req_rate",
            StkData::HttpErrCnt => "http_err_cnt",
            StkData::HttpErrRate => "http_err_rate",
            StkData::BytesInCnt => "bytes_in_cnt",
            StkData::BytesInRate => "bytes_in_rate",
            StkData::BytesOutCnt => "bytes_out_cnt",
            StkData::BytesOutRate => "bytes_out_rate",
        }
    }

    pub fn from_name(name: &str) -> Option<StkData> {
        StkData::ALL.into_iter().find(|d| d.name() == name)
    }

    /// A rate over a period (`store http_req_rate(10s)`).
    pub fn is_rate(self) -> bool {
        matches!(
            self,
            StkData::Gpc0Rate
                | StkData::ConnRate
                | StkData::SessRate
                | StkData::HttpReqRate
                | StkData::HttpErrRate
                | StkData::BytesInRate
                | StkData::BytesOutRate
        )
    }
}

/// Stick tables as the expression language reads them. `table`: a table named in the
/// fetch, `None` for the current proxy's own one. `None` results are "no sample" (the
/// fetch fails, so a condition on it is false), as in HAProxy: the slot tracks nothing,
/// the table does not exist or does not store that data type.
pub trait StickCounters {
    /// `sc_*(slot[,table])` / `scN_*([table])`: the entry the request tracks in `slot`
    /// (looked up by its key in `table` when one is named; 0 when it is not there).
    fn sc(&self, slot: usize, table: Option<&str>, data: StkData) -> Option<i64>;
    /// `sc_tracked(slot[,table])`.
    fn sc_tracked(&self, slot: usize, table: Option<&str>) -> bool;
    /// `src_*([table])`: the entry whose key is the client's address (0 when absent).
    fn src(&self, src: IpAddr, table: Option<&str>, data: StkData) -> Option<i64>;
    /// `table_cnt` / `table_avl`: `(entries in use, size)`.
    fn table_usage(&self, table: Option<&str>) -> Option<(u64, u64)>;
}

/// What a stick-table fetch reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum StickFetch {
    /// `sc_*`, `scN_*`; `kbytes`: `kbytes_in` / `kbytes_out` (the byte count / 1024).
    Sc {
        slot: usize,
        table: Option<Box<str>>,
        data: StkData,
        kbytes: bool,
    },
    Tracked {
        slot: usize,
        table: Option<Box<str>>,
    },
    Src {
        table: Option<Box<str>>,
        data: StkData,
        kbytes: bool,
    },
    TableCnt(Option<Box<str>>),
    TableAvl(Option<Box<str>>),
}

/// The data a fetch name's suffix reads (`http_req_rate`, `get_gpc0`, `kbytes_in`, …):
/// `(data, kbytes)`.
fn suffix_data(suffix: &str) -> Option<(StkData, bool)> {
    Some(match suffix {
        "get_gpc0" => (StkData::Gpc0, false),
        "get_gpt0" => (StkData::Gpt0, false),
        "kbytes_in" => (StkData::BytesInCnt, true),
        "kbytes_out" => (StkData::BytesOutCnt, true),
        "bytes_in_cnt" | "bytes_out_cnt" | "server_id" | "gpc0" | "gpt0" => return None,
        s => (StkData::from_name(s)?, false),
    })
}

/// Parses a stick-table fetch: `None` when `name` is not one, else the fetch or a message.
pub(crate) fn parse(name: &str, args: &[&str]) -> Option<Result<StickFetch, String>> {
    let table_arg = |a: Option<&&str>| a.map(|t| t.trim()).filter(|t| !t.is_empty()).map(Box::from);
    if let Some(kind) = name.strip_prefix("table_") {
        if !matches!(kind, "cnt" | "avl") {
            return None;
        }
        if args.len() > 1 {
            return Some(Err(format!("too many arguments to '{name}'")));
        }
        let t = table_arg(args.first());
        return Some(Ok(if kind == "cnt" {
            StickFetch::TableCnt(t)
        } else {
            StickFetch::TableAvl(t)
        }));
    }
    if let Some(suffix) = name.strip_prefix("src_") {
        let (data, kbytes) = suffix_data(suffix)?;
        if args.len() > 1 {
            return Some(Err(format!("too many arguments to '{name}'")));
        }
        return Some(Ok(StickFetch::Src {
            table: table_arg(args.first()),
            data,
            kbytes,
        }));
    }
    // `sc_X(slot[,table])` or `scN_X([table])`.
    let (slot, suffix, args) = if let Some(suffix) = name.strip_prefix("sc_") {
        let Some(first) = args.first() else {
            return Some(Err(format!("fetch '{name}' needs a counter number")));
        };
        let slot = match first.trim().parse::<usize>() {
            Ok(s) if s < TRACK_SLOTS => s,
            _ => {
                return Some(Err(format!(
                    "invalid stick counter '{first}' in '{name}' (0 to {})",
                    TRACK_SLOTS - 1
                )));
            }
        };
        (slot, suffix, &args[1..])
    } else {
        let rest = name.strip_prefix("sc")?;
        let (digit, suffix) = rest.split_at_checked(1)?;
        let suffix = suffix.strip_prefix('_')?;
        let slot = digit.parse::<usize>().ok()?;
        if slot >= TRACK_SLOTS {
            return Some(Err(format!(
                "'{name}': stick counters go from sc0 to sc{}",
                TRACK_SLOTS - 1
            )));
        }
        (slot, suffix, args)
    };
    if args.len() > 1 {
        return Some(Err(format!("too many arguments to '{name}'")));
    }
    let table = table_arg(args.first());
    if suffix == "tracked" {
        return Some(Ok(StickFetch::Tracked { slot, table }));
    }
    let (data, kbytes) = suffix_data(suffix)?;
    Some(Ok(StickFetch::Sc {
        slot,
        table,
        data,
        kbytes,
    }))
}

/// The sample of a stick-table fetch for one input: an integer (a boolean for
/// `sc_tracked`), `None` for no sample.
pub(crate) enum StickSample {
    Int(i64),
    Bool(bool),
}

impl StickFetch {
    pub(crate) fn eval(
        &self,
        sticks: Option<&dyn StickCounters>,
        src: IpAddr,
    ) -> Option<StickSample> {
        let kb = |v: i64, kbytes: bool| if kbytes { v >> 10 } else { v };
        let Some(s) = sticks else {
            // No stick tables at all: nothing is tracked, no table exists.
            return match self {
                StickFetch::Tracked { .. } => Some(StickSample::Bool(false)),
                _ => None,
            };
        };
        Some(match self {
            StickFetch::Sc {
                slot,
                table,
                data,
                kbytes,
            } => StickSample::Int(kb(s.sc(*slot, table.as_deref(), *data)?, *kbytes)),
            StickFetch::Tracked { slot, table } => {
                StickSample::Bool(s.sc_tracked(*slot, table.as_deref()))
            }
            StickFetch::Src {
                table,
                data,
                kbytes,
            } => StickSample::Int(kb(s.src(src, table.as_deref(), *data)?, *kbytes)),
            StickFetch::TableCnt(t) => {
                let (used, _) = s.table_usage(t.as_deref())?;
                StickSample::Int(i64::try_from(used).unwrap_or(i64::MAX))
            }
            StickFetch::TableAvl(t) => {
                let (used, size) = s.table_usage(t.as_deref())?;
                StickSample::Int(i64::try_from(size.saturating_sub(used)).unwrap_or(i64::MAX))
            }
        })
    }

    /// `src_*` / `table_*` without a table: the current section's own table.
    pub(crate) fn reads_own_table(&self) -> bool {
        matches!(
            self,
            StickFetch::Src { table: None, .. }
                | StickFetch::TableCnt(None)
                | StickFetch::TableAvl(None)
        )
    }

    /// The tables the fetch names (for config validation).
    pub(crate) fn table(&self) -> Option<&str> {
        match self {
            StickFetch::Sc { table, .. }
            | StickFetch::Tracked { table, .. }
            | StickFetch::Src { table, .. }
            | StickFetch::TableCnt(table)
            | StickFetch::TableAvl(table) => table.as_deref(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fetch_names_parse_like_haproxy() {
        assert_eq!(
            parse("sc_http_req_rate", &["0"]),
            Some(Ok(StickFetch::Sc {
                slot: 0,
                table: None,
                data: StkData::HttpReqRate,
                kbytes: false
            }))
        );
        assert_eq!(
            parse("sc1_get_gpc0", &["other"]),
            Some(Ok(StickFetch::Sc {
                slot: 1,
                table: Some("other".into()),
                data: StkData::Gpc0,
                kbytes: false
            }))
        );
        assert_eq!(
            parse("src_kbytes_in", &[]),
            Some(Ok(StickFetch::Src {
                table: None,
                data: StkData::BytesInCnt,
                kbytes: true
            }))
        );
        assert_eq!(
            parse("sc0_tracked", &[]),
            Some(Ok(StickFetch::Tracked {
                slot: 0,
                table: None
            }))
        );
        assert_eq!(
            parse("table_avl", &["t"]),
            Some(Ok(StickFetch::TableAvl(Some("t".into()))))
        );
        assert!(matches!(parse("sc_http_req_rate", &["3"]), Some(Err(_))));
        assert!(matches!(parse("sc_http_req_rate", &[]), Some(Err(_))));
        assert!(matches!(parse("sc3_http_req_rate", &[]), Some(Err(_))));
        assert_eq!(parse("src", &[]), None);
        assert_eq!(parse("src_port", &[]), None);
        assert_eq!(parse("ssl_c_used", &[]), None);
        assert_eq!(parse("sc0_nonsense", &[]), None);
    }
}
