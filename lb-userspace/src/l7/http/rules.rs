//! `http-request`, `http-response` and `http-after-response` rule evaluation: each list
//! runs in order until a rule stops it ([`Flow`]).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Response, StatusCode};

use std::sync::Arc;

use std::collections::HashMap;

use super::{ConnCtx, ReqInput, RespBody, Track, TxnVars, page};
use crate::acl::AclInput;
use crate::acl::{SampleValue, Scope};
use crate::config::model::RedirectKind;
use crate::l7::runtime::{
    BackendRt, FrontendRt, HeaderAction, Reply, RequestAction, RequestRule, ResponseAction,
    ResponseRule,
};
use crate::stick::{Event, Tracked};

/// What a rule list decided.
pub(super) enum Flow {
    /// On to the next stage.
    Continue,
    /// The answer the client gets instead (a deny's error page, a redirect, a `return`, a
    /// failed rewrite's 500).
    Stop(Box<Response<RespBody>>),
}

/// Where rules run: the error pages of a `deny` are the backend's when it has them.
pub(super) struct RuleCtx<'a> {
    pub ctx: &'a ConnCtx,
    pub fe: &'a FrontendRt,
    pub be: Option<&'a BackendRt>,
}

impl<'a> RuleCtx<'a> {
    fn stop(&self, code: u16) -> Flow {
        Flow::Stop(Box::new(page(self.fe, self.be, code)))
    }

    /// The request as these rules see it: `src_*` without a table read the table of the
    /// section whose rules run.
    fn input<'h>(&self, head: &'h http::request::Parts) -> ReqInput<'h>
    where
        'a: 'h,
    {
        ReqInput {
            own_table: match self.be {
                Some(b) => b.table.as_ref(),
                None => self.fe.table.as_ref(),
            },
            ..ReqInput::request(head, self.ctx, self.fe)
        }
    }
}

/// Sets (`Some`) or unsets (`None`) a variable.
fn set_var(
    rc: &RuleCtx<'_>,
    head: &mut http::request::Parts,
    scope: Scope,
    name: &str,
    v: Option<SampleValue>,
) {
    let put = |m: &mut HashMap<Box<str>, SampleValue>| match &v {
        Some(v) => {
            m.insert(name.into(), v.clone());
        }
        None => {
            m.remove(name);
        }
    };
    match scope {
        Scope::Proc => {
            if let Ok(mut m) = rc.fe.proc_vars.lock() {
                put(&mut m);
            }
        }
        Scope::Sess => {
            if let Ok(mut m) = rc.ctx.sess_vars.lock() {
                put(&mut m);
            }
        }
        Scope::Txn | Scope::Req | Scope::Res => {
            let key = (scope, Box::from(name));
            match (head.extensions.get_mut::<TxnVars>(), v) {
                (Some(t), Some(v)) => {
                    t.0.insert(key, v);
                }
                (Some(t), None) => {
                    t.0.remove(&key);
                }
                (None, Some(v)) => {
                    let mut t = TxnVars::default();
                    t.0.insert(key, v);
                    head.extensions.insert(t);
                }
                (None, None) => {}
            }
        }
    }
}

/// The entry tracked in `slot`, if any.
fn tracked(head: &http::request::Parts, slot: usize) -> Option<&Arc<Tracked>> {
    head.extensions.get::<Track>()?.0.get(slot)?.as_ref()
}

/// Evaluates `http-request` rules in order; `allow` stops the list.
pub(super) fn request_rules(
    rules: &[RequestRule],
    head: &mut http::request::Parts,
    rc: &RuleCtx<'_>,
) -> Flow {
    let ctx = rc.ctx;
    for rule in rules {
        if let Some(cond) = &rule.cond {
            let input = rc.input(head);
            if !cond.eval(&input) {
                continue;
            }
        }
        let rewritten = match &rule.action {
            RequestAction::Allow => return Flow::Continue,
            RequestAction::Deny(status) => return rc.stop(*status),
            RequestAction::Redirect {
                kind,
                target,
                code,
                drop_query,
            } => {
                // An expansion that is no header value: no Location (HAProxy writes the
                // bytes as they come).
                let target = target.value(&rc.input(head));
                let loc = target.map(|t| redirect_location(*kind, &t, *drop_query, head, ctx));
                let mut r = Response::new(RespBody::full(Bytes::new(), None));
                *r.status_mut() = *code;
                let h = r.headers_mut();
                if let Some(Ok(v)) = loc.map(HeaderValue::from_maybe_shared) {
                    h.insert(header::LOCATION, v);
                }
                h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("0"));
                // As HAProxy: temporary redirects must not be cached; permanent ones may.
                if matches!(code.as_u16(), 302 | 303 | 307) {
                    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
                }
                return Flow::Stop(Box::new(r));
            }
            RequestAction::Header(a) => {
                if let Some(edit) = HeaderEdit::of(a, &rc.input(head)) {
                    edit.apply(&mut head.headers);
                }
                Some(())
            }
            RequestAction::SetPath(f) => {
                let path = expand(f, &rc.input(head));
                let query = head.uri.query().map(str::to_owned);
                set_target(head, &path, query.as_deref())
            }
            RequestAction::SetQuery(f) => {
                let query = expand(f, &rc.input(head));
                let path = head.uri.path().to_owned();
                // An empty result leaves `?` with nothing after it, as in HAProxy.
                set_target(head, &path, Some(query.as_str()))
            }
            RequestAction::ReplacePath(re, f) => {
                let template = expand(f, &rc.input(head));
                match re.captures(head.uri.path()) {
                    Some(c) => {
                        let path = with_groups(&template, &c);
                        let query = head.uri.query().map(str::to_owned);
                        set_target(head, &path, query.as_deref())
                    }
                    None => Some(()),
                }
            }
            RequestAction::Return(reply) => {
                let r = reply_response(reply, &rc.input(head));
                return Flow::Stop(Box::new(r));
            }
            RequestAction::TrackSc { slot, key, table } => {
                // A slot tracks one entry for the request's life (HAProxy ignores the
                // later rules for a busy slot).
                if tracked(head, *slot).is_none()
                    && let Some(k) = key.eval(&rc.input(head)).and_then(|v| table.key_of(&v))
                    && let Some(t) = Tracked::start(table, k)
                {
                    // The request that starts tracking counts (HAProxy's http-request
                    // track-sc).
                    t.update(Event::HttpReq);
                    let track = head.extensions.get_mut::<Track>();
                    match track {
                        Some(tr) => tr.0[*slot] = Some(Arc::new(t)),
                        None => {
                            let mut tr = Track::default();
                            tr.0[*slot] = Some(Arc::new(t));
                            head.extensions.insert(tr);
                        }
                    }
                }
                Some(())
            }
            RequestAction::ScIncGpc0(slot) => {
                if let Some(t) = tracked(head, *slot) {
                    t.update(Event::IncGpc0);
                }
                Some(())
            }
            RequestAction::ScSetGpt0(slot, v) => {
                if let Some(t) = tracked(head, *slot) {
                    t.update(Event::SetGpt0(*v));
                }
                Some(())
            }
            RequestAction::SetVar(scope, name, expr) => {
                // No value: the variable stays as it was (HAProxy).
                if let Some(v) = expr.eval(&rc.input(head)) {
                    set_var(rc, head, *scope, name, Some(v));
                }
                Some(())
            }
            RequestAction::UnsetVar(scope, name) => {
                set_var(rc, head, *scope, name, None);
                Some(())
            }
            RequestAction::SetMethod(f) => {
                let m = expand(f, &rc.input(head));
                http::Method::from_bytes(m.as_bytes())
                    .ok()
                    .map(|m| head.method = m)
            }
            RequestAction::SetUri(f) => {
                let u = expand(f, &rc.input(head));
                http::Uri::try_from(u).ok().map(|u| head.uri = u)
            }
            // Looked up once the request rules are done (the last one matched wins).
            RequestAction::CacheUse(c) => {
                head.extensions.insert(crate::l7::cache::UseMark(c.clone()));
                Some(())
            }
        };
        if rewritten.is_none() {
            return rc.stop(500);
        }
    }
    Flow::Continue
}

/// A header action of a request or response rule, its value expanded for one message:
/// computed while the rule's input borrows the message, applied once it no longer does.
enum HeaderEdit<'a> {
    Set(&'a HeaderName, HeaderValue),
    Add(&'a HeaderName, HeaderValue),
    Del(&'a HeaderName),
    Replace {
        name: &'a HeaderName,
        re: &'a regex::Regex,
        template: String,
        each_value: bool,
    },
}

impl<'a> HeaderEdit<'a> {
    /// The edit `action` makes for `input`; `None` for a value that expands to no valid
    /// header value (HAProxy skips the action then).
    fn of(action: &'a HeaderAction, input: &dyn AclInput) -> Option<Self> {
        Some(match action {
            HeaderAction::Set(n, v) => HeaderEdit::Set(n, v.value(input)?),
            HeaderAction::Add(n, v) => HeaderEdit::Add(n, v.value(input)?),
            HeaderAction::Del(n) => HeaderEdit::Del(n),
            HeaderAction::Replace {
                name,
                re,
                replace,
                each_value,
            } => HeaderEdit::Replace {
                name,
                re,
                template: expand(replace, input),
                each_value: *each_value,
            },
        })
    }

    fn apply(self, headers: &mut HeaderMap) {
        match self {
            HeaderEdit::Set(n, v) => {
                headers.insert(n.clone(), v);
            }
            HeaderEdit::Add(n, v) => {
                headers.append(n.clone(), v);
            }
            HeaderEdit::Del(n) => {
                headers.remove(n);
            }
            HeaderEdit::Replace {
                name,
                re,
                template,
                each_value,
            } => replace_values(headers, name, re, &template, each_value),
        }
    }
}

/// A log-format string's text for one request.
pub(super) fn expand(f: &crate::acl::FormatString, input: &dyn AclInput) -> String {
    let mut out = String::new();
    f.expand(input, &mut out);
    out
}

/// `template` with `\1`…`\9` (and `\0`, the whole match) replaced by the groups of `caps`,
/// as HAProxy's replace actions do; a group that did not take part is empty.
fn with_groups(template: &str, caps: &regex::Captures<'_>) -> String {
    let mut out = String::with_capacity(template.len() + 16);
    let mut chars = template.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\'
            && let Some(d) = chars.peek().and_then(|d| d.to_digit(10))
        {
            chars.next();
            out.push_str(caps.get(d as usize).map_or("", |m| m.as_str()));
            continue;
        }
        out.push(c);
    }
    out
}

/// Puts a new path (and query) in the request target, keeping an absolute form's scheme and
/// authority. `None`: the result is no valid target, which fails the request with 500, as
/// HAProxy's strict mode fails a rewrite.
fn set_target(head: &mut http::request::Parts, path: &str, query: Option<&str>) -> Option<()> {
    let pq = match query {
        Some(q) => format!("{path}?{q}"),
        None => path.to_owned(),
    };
    let mut parts = std::mem::take(&mut head.uri).into_parts();
    parts.path_and_query = Some(http::uri::PathAndQuery::try_from(pq.as_str()).ok()?);
    head.uri = http::Uri::from_parts(parts).ok()?;
    Some(())
}

/// `replace-header` (each whole value) and `replace-value` (each comma-separated value):
/// a value `re` matches becomes `template` with the groups filled in (HAProxy replaces the
/// whole value, not only the matched part). A result that is no valid value keeps the old.
/// Checked against HAProxy 2.6 by the differential test.
fn replace_values(
    headers: &mut HeaderMap,
    name: &HeaderName,
    re: &regex::Regex,
    template: &str,
    each_value: bool,
) {
    let replace = |s: &str| match re.captures(s) {
        Some(c) => with_groups(template, &c),
        None => s.to_owned(),
    };
    let mut changed = false;
    let values: Vec<HeaderValue> = headers
        .get_all(name)
        .iter()
        .map(|v| {
            let Ok(s) = v.to_str() else {
                return v.clone();
            };
            let out = if each_value {
                // HAProxy's rewrite: a replaced element loses the blanks around it, the
                // others stay as written (`a, b, a` → `z, b,z`).
                s.split(',')
                    .map(|part| match re.captures(part.trim()) {
                        Some(c) => with_groups(template, &c),
                        None => part.to_owned(),
                    })
                    .collect::<Vec<_>>()
                    .join(",")
            } else {
                replace(s)
            };
            if out == s {
                return v.clone();
            }
            match HeaderValue::from_str(&out) {
                Ok(nv) => {
                    changed = true;
                    nv
                }
                Err(_) => v.clone(),
            }
        })
        .collect();
    if changed {
        headers.remove(name);
        for v in values {
            headers.append(name.clone(), v);
        }
    }
}

/// The response of `http-request return`.
fn reply_response(reply: &Reply, input: &dyn AclInput) -> Response<RespBody> {
    let body = reply
        .body
        .as_ref()
        .map(|f| Bytes::from(expand(f, input)))
        .unwrap_or_default();
    let mut r = Response::new(RespBody::full(body, None));
    *r.status_mut() = reply.status;
    let h = r.headers_mut();
    if let Some(t) = &reply.content_type {
        h.insert(header::CONTENT_TYPE, t.clone());
    }
    for (n, v) in &reply.headers {
        if let Some(v) = v.value(input) {
            h.append(n.clone(), v);
        }
    }
    r
}

/// A server's response head as `http-response` rules change it.
pub(super) struct ResponseEdit<'a> {
    pub status: &'a mut StatusCode,
    pub headers: &'a mut HeaderMap,
    pub reason: Option<hyper::ext::ReasonPhrase>,
    /// `cache-store`: the store of this response (its head as the rule saw it).
    pub store: Option<crate::l7::cache::StoreFilter>,
}

/// Evaluates response rules (`http-response` on a server's response, `http-after-response`
/// on any) over a response head: `lists` in order, the backend's then the frontend's
/// (HAProxy's order); `allow` ends its own list. A `deny` stops with its error page, which
/// the client gets in place of the response.
pub(super) fn response_rules(
    lists: [&[ResponseRule]; 2],
    head: &http::request::Parts,
    rc: &RuleCtx<'_>,
    res: &mut ResponseEdit<'_>,
) -> Flow {
    for rules in lists {
        for rule in rules.iter() {
            let input = ReqInput {
                res: Some((*res.status, &*res.headers)),
                ..ReqInput::request(head, rc.ctx, rc.fe)
            };
            if let Some(cond) = &rule.cond
                && !cond.eval(&input)
            {
                continue;
            }
            match &rule.action {
                ResponseAction::Allow => break,
                ResponseAction::Deny(status) => return rc.stop(*status),
                ResponseAction::Header(a) => {
                    if let Some(edit) = HeaderEdit::of(a, &input) {
                        edit.apply(res.headers);
                    }
                }
                ResponseAction::SetStatus(code, reason) => {
                    *res.status = *code;
                    res.reason = reason.clone();
                }
                ResponseAction::CacheStore(c) => {
                    if res.store.is_none() {
                        res.store = crate::l7::cache::store(c, head, *res.status, res.headers);
                    }
                }
            }
        }
    }
    Flow::Continue
}

/// The Location of a redirect whose (expanded) target is `target`.
fn redirect_location(
    kind: RedirectKind,
    target: &HeaderValue,
    drop_query: bool,
    head: &http::request::Parts,
    ctx: &ConnCtx,
) -> Bytes {
    let target = target.as_bytes();
    let path = head.uri.path();
    let query = if drop_query { None } else { head.uri.query() };
    let mut out = Vec::with_capacity(target.len() + path.len() + 32);
    match kind {
        RedirectKind::Location => return Bytes::copy_from_slice(target),
        RedirectKind::Prefix => {
            if target != b"/" {
                out.extend_from_slice(target);
            }
        }
        RedirectKind::Scheme => {
            out.extend_from_slice(target);
            out.extend_from_slice(b"://");
            let host = crate::l7::cache::host_of(head);
            // Changing scheme drops an explicit default port of the old one.
            let host = match (
                ctx.tls.is_some(),
                host.strip_suffix(b":443"),
                host.strip_suffix(b":80"),
            ) {
                (true, Some(h), _) => h,
                (false, _, Some(h)) => h,
                _ => host,
            };
            out.extend_from_slice(host);
        }
    }
    out.extend_from_slice(path.as_bytes());
    if let Some(q) = query {
        out.push(b'?');
        out.extend_from_slice(q.as_bytes());
    }
    Bytes::from(out)
}
