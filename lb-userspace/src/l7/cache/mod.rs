//! HTTP caching with HAProxy 2.6's `cache` semantics (RFC 9111 for a shared cache):
//!
//! - `http-request cache-use NAME` marks the request; after the request rules, [`lookup`]
//!   answers a GET or HEAD (HTTP/1.1 or later, no `Authorization`, no request
//!   `Cache-Control: no-cache|no-store|max-age=0` nor `Pragma: no-cache`) from a fresh
//!   entry: the stored headers plus `Age`, a 304 when `If-None-Match` (weak comparison,
//!   `*`) or else `If-Modified-Since` says the client has it, no body for HEAD.
//! - `http-response cache-store NAME` stores a 200 to a GET when it may be
//!   ([`storable`]): not `no-store`, `private`, `no-cache`, `max-age=0`, `s-maxage=0`,
//!   `Pragma: no-cache`; no `Set-Cookie` unless `public`; freshness from `s-maxage`,
//!   `max-age` or `Expires` − `Date` (or, with a validator, the cache's `max-age`), capped
//!   by the cache's `max-age`, minus the server's `Age`; `Vary` only with `process-vary`
//!   and only on accept-encoding, referer, origin; headers and body within
//!   `max-object-size`. A successful unsafe request (POST, PUT, DELETE, …) removes the
//!   URL's entries.
//! - One request fills a missing URL; concurrent requests for it wait for that fill (up to
//!   the backend's `timeout server`), then look again ([`store::Lookup::Busy`]).
//!
//! The entries live in [`store::Store`]: sharded, LRU, bounded by `total-max-size`.

pub mod store;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};

use crate::config::model::CacheSpec;
use crate::l7::http::filter::{BodyFilter, FilterError};
use crate::state::CacheCounters;
use store::{Entry, FillToken, Key, Lookup, Store};

/// `Vary` fields a cache stores variants for (HAProxy's: these three).
pub const VARY_ACCEPT_ENCODING: u8 = 1;
pub const VARY_REFERER: u8 = 2;
pub const VARY_ORIGIN: u8 = 4;

/// One `[cache.NAME]`.
#[derive(Debug)]
pub struct Cache {
    pub name: Arc<str>,
    pub spec: CacheSpec,
    pub store: Arc<Store>,
}

impl Cache {
    pub fn new(spec: &CacheSpec) -> Arc<Self> {
        let counters = Arc::new(CacheCounters::default());
        Arc::new(Self {
            name: Arc::from(spec.name.as_str()),
            spec: spec.clone(),
            store: Store::new(
                spec.total_max_size,
                if spec.process_vary {
                    spec.max_secondary_entries
                } else {
                    1
                },
                counters,
            ),
        })
    }

    pub fn counters(&self) -> &Arc<CacheCounters> {
        &self.store.counters
    }
}

/// `cache-use NAME` matched: the request is to be looked up after the request rules.
#[derive(Debug, Clone)]
pub struct UseMark(pub Arc<Cache>);

/// A response built from a cache entry (`res.cache_hit`, `res.cache_name`).
#[derive(Debug, Clone)]
pub struct HitMark(pub Arc<str>);

/// A request that missed: its key, and the fill token when it is the one to fill it
/// (taken by `cache-store`, dropped with the request otherwise).
#[derive(Debug)]
pub struct MissMark {
    pub cache: Arc<Cache>,
    pub key: Key,
    pub token: Mutex<Option<FillToken>>,
}

/// The request's host: its Host header, else its target's authority, else empty.
pub fn host_of(head: &http::request::Parts) -> &[u8] {
    head.headers
        .get(header::HOST)
        .map(|h| h.as_bytes())
        .or_else(|| head.uri.authority().map(|a| a.as_str().as_bytes()))
        .unwrap_or(b"")
}

/// The request's primary key: its host and target (HAProxy's host + URI).
pub fn key(head: &http::request::Parts) -> Key {
    let host = host_of(head);
    let target = head.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut b = Vec::with_capacity(host.len() + target.len() + 1);
    b.extend_from_slice(host);
    b.push(b' ');
    b.extend_from_slice(target.as_bytes());
    Key::new(b)
}

/// Cache-Control directives of one header set, lower-cased, with their values.
fn directives(h: &HeaderMap) -> Vec<(String, Option<String>)> {
    let mut out = Vec::new();
    for v in h.get_all(header::CACHE_CONTROL) {
        let Ok(s) = v.to_str() else { continue };
        for d in s.split(',') {
            let d = d.trim();
            if d.is_empty() {
                continue;
            }
            let (k, v) = match d.split_once('=') {
                Some((k, v)) => (k.trim(), Some(v.trim().trim_matches('"').to_string())),
                None => (d, None),
            };
            out.push((k.to_ascii_lowercase(), v));
        }
    }
    out
}

fn pragma_no_cache(h: &HeaderMap) -> bool {
    h.get_all(header::PRAGMA)
        .iter()
        .any(|v| v.as_bytes().trim_ascii().eq_ignore_ascii_case(b"no-cache"))
}

/// Whether a request may be answered from the cache.
pub fn lookupable(head: &http::request::Parts) -> bool {
    if head.version < Version::HTTP_11
        || !(head.method == Method::GET || head.method == Method::HEAD)
        || head.headers.contains_key(header::AUTHORIZATION)
    {
        return false;
    }
    let cc = directives(&head.headers);
    if cc.is_empty() {
        return !pragma_no_cache(&head.headers);
    }
    !cc.iter().any(|(k, v)| {
        k == "no-cache" || k == "no-store" || (k == "max-age" && v.as_deref() == Some("0"))
    })
}

/// Content codings as HAProxy 2.6's cache tells them apart in `Vary: accept-encoding`
/// (its `vary_encoding` bits).
const ENCODINGS: [(&str, u32); 10] = [
    ("gzip", 1),
    ("deflate", 1 << 1),
    ("br", 1 << 2),
    ("compress", 1 << 3),
    ("aes128gcm", 1 << 4),
    ("exi", 1 << 5),
    ("pack200-gzip", 1 << 6),
    ("zstd", 1 << 7),
    ("identity", ENC_IDENTITY),
    ("*", ENC_STAR),
];
const ENC_IDENTITY: u32 = 1 << 8;
const ENC_STAR: u32 = 1 << 9;
const ENC_OTHER: u32 = 1 << 10;

fn encoding_bit(token: &str) -> u32 {
    ENCODINGS
        .iter()
        .find(|(t, _)| t.eq_ignore_ascii_case(token))
        .map_or(ENC_OTHER, |(_, b)| *b)
}

/// The codings a request accepts, as HAProxy's `accept_encoding_normalizer`: every listed
/// one without a zero weight (`*`: all but the refused ones), and identity unless refused;
/// without `Accept-Encoding`, every coding (RFC 9110 §12.5.3).
fn accepted_encodings(h: &HeaderMap) -> u32 {
    if !h.contains_key(header::ACCEPT_ENCODING) {
        return !(ENC_STAR | ENC_OTHER);
    }
    let (mut accepted, mut refused) = (0u32, 0u32);
    for (tok, q) in crate::l7::compress::accept_encoding(h) {
        if q == 0 {
            refused |= encoding_bit(tok);
        } else {
            accepted |= encoding_bit(tok);
        }
    }
    if accepted & ENC_STAR != 0 {
        accepted = !refused;
    }
    if refused & ENC_IDENTITY == 0 {
        accepted |= ENC_IDENTITY;
    }
    accepted & !ENC_STAR
}

/// The codings of a stored response (its `Content-Encoding`; identity without one).
fn response_encodings(h: &HeaderMap) -> u32 {
    let mut bits = 0;
    for v in h.get_all(header::CONTENT_ENCODING) {
        let Ok(s) = v.to_str() else {
            return ENC_OTHER;
        };
        for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
            bits |= encoding_bit(tok);
        }
    }
    if bits == 0 { ENC_IDENTITY } else { bits }
}

/// The hash of a request's `Referer` and `Origin` for an entry that varies on them.
fn vary_fields_hash(vary: u8, h: &HeaderMap) -> u32 {
    let field = |bit: u8, name: header::HeaderName| -> &[u8] {
        if vary & bit != 0 {
            h.get(name).map_or(b"", |v| v.as_bytes())
        } else {
            b""
        }
    };
    store::hash_parts(&[
        &[vary],
        field(VARY_REFERER, header::REFERER),
        field(VARY_ORIGIN, header::ORIGIN),
    ]) as u32
}

/// The variant key a response to `req` is stored under when it varies on `vary`: the hash
/// of the request's `Referer`/`Origin` (high half) and, for `accept-encoding`, the codings
/// of the response itself (low half), as HAProxy 2.6 keys its secondary entries.
pub fn secondary(vary: u8, req: &HeaderMap, res: &HeaderMap) -> u64 {
    if vary == 0 {
        return 0;
    }
    let enc = if vary & VARY_ACCEPT_ENCODING != 0 {
        response_encodings(res)
    } else {
        0
    };
    (u64::from(vary_fields_hash(vary, req)) << 32) | u64::from(enc)
}

/// Whether a variant stored under `stored` (see [`secondary`]) may answer a request with
/// headers `req`: the same `Referer`/`Origin`, and for `accept-encoding` a response whose
/// codings are all accepted by the request (HAProxy's `accept_encoding_bitmap_cmp`), so an
/// unencoded variant serves every client that does not refuse identity.
pub fn variant_matches(vary: u8, stored: u64, req: &HeaderMap) -> bool {
    if vary == 0 {
        return stored == 0;
    }
    if (stored >> 32) as u32 != vary_fields_hash(vary, req) {
        return false;
    }
    if vary & VARY_ACCEPT_ENCODING == 0 {
        return true;
    }
    let enc = stored as u32;
    enc & ENC_OTHER == 0 && enc & accepted_encodings(req) == enc
}

/// The response's `Vary` as fields a cache handles; `None`: it may not be stored
/// (`process-vary off`, `*`, or another field).
fn vary_mask(h: &HeaderMap, process_vary: bool) -> Option<u8> {
    let mut mask = 0;
    for v in h.get_all(header::VARY) {
        let s = v.to_str().ok()?;
        for f in s.split(',') {
            let f = f.trim();
            if f.is_empty() {
                continue;
            }
            if !process_vary {
                return None;
            }
            mask |= match f.to_ascii_lowercase().as_str() {
                "accept-encoding" => VARY_ACCEPT_ENCODING,
                "referer" => VARY_REFERER,
                "origin" => VARY_ORIGIN,
                _ => return None,
            };
        }
    }
    Some(mask)
}

fn http_date(v: Option<&HeaderValue>) -> Option<SystemTime> {
    httpdate::parse_http_date(v?.to_str().ok()?.trim()).ok()
}

/// What [`storable`] decided for a response it may store.
#[derive(Debug)]
pub struct StorePlan {
    pub fresh_for: Duration,
    pub age: u64,
    pub vary: u8,
}

/// Whether a response to `req` may be stored, and for how long (RFC 9111 §3 and §4.2 for
/// a shared cache, with HAProxy's limits).
pub fn storable(
    spec: &CacheSpec,
    req: &http::request::Parts,
    status: StatusCode,
    h: &HeaderMap,
) -> Option<StorePlan> {
    if status != StatusCode::OK
        || req.method != Method::GET
        || req.version < Version::HTTP_11
        || req.headers.contains_key(header::AUTHORIZATION)
    {
        return None;
    }
    let req_cc = directives(&req.headers);
    if req_cc.iter().any(|(k, _)| k == "no-store") {
        return None;
    }
    let cc = directives(h);
    let mut public = false;
    let mut s_maxage = None;
    let mut max_age = None;
    for (k, v) in &cc {
        match k.as_str() {
            "no-store" | "private" | "no-cache" => return None,
            "public" => public = true,
            "s-maxage" => s_maxage = v.as_deref().and_then(|v| v.parse::<u64>().ok()),
            "max-age" => max_age = v.as_deref().and_then(|v| v.parse::<u64>().ok()),
            _ => {}
        }
    }
    if pragma_no_cache(h) && cc.is_empty() {
        return None;
    }
    if h.contains_key(header::SET_COOKIE) && !public {
        return None;
    }
    let vary = vary_mask(h, spec.process_vary)?;
    let lifetime = match s_maxage.or(max_age) {
        Some(s) => Some(s),
        None => match (http_date(h.get(header::EXPIRES)), h.get(header::EXPIRES)) {
            (Some(exp), _) => {
                let date = http_date(h.get(header::DATE)).unwrap_or_else(SystemTime::now);
                Some(exp.duration_since(date).map_or(0, |d| d.as_secs()))
            }
            // An invalid Expires means already expired (RFC 9111 §5.3).
            (None, Some(_)) => Some(0),
            (None, None) => None,
        },
    };
    let validator = h.contains_key(header::ETAG) || h.contains_key(header::LAST_MODIFIED);
    let cap = u64::from(spec.max_age);
    let lifetime = match lifetime {
        Some(l) => l.min(cap),
        None if validator => cap,
        None => return None,
    };
    let age = h
        .get(header::AGE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or(0);
    if lifetime == 0 || age >= lifetime {
        return None;
    }
    Some(StorePlan {
        fresh_for: Duration::from_secs(lifetime - age),
        age,
        vary,
    })
}

/// Looks the request up: `Ok(Some(entry))` a hit; `Ok(None)` a miss, the request goes on
/// to a server with a [`MissMark`] in its extensions; `Err(fill)` another request is
/// filling the URL (with `may_wait`): wait on it, then look again without.
pub fn lookup(
    cache: &Arc<Cache>,
    head: &mut http::request::Parts,
    may_wait: bool,
) -> Result<Option<Arc<Entry>>, Arc<store::Fill>> {
    use std::sync::atomic::Ordering::Relaxed;
    let key = key(head);
    let counters = cache.counters();
    let found = {
        let headers = &head.headers;
        cache.store.lookup(
            &key,
            &|vary, stored| variant_matches(vary, stored, headers),
            Instant::now(),
            may_wait,
        )
    };
    match found {
        Lookup::Hit(e) => {
            counters.lookups.fetch_add(1, Relaxed);
            counters.hits.fetch_add(1, Relaxed);
            counters
                .bytes_served
                .fetch_add(e.body.len() as u64, Relaxed);
            Ok(Some(e))
        }
        Lookup::Miss(token) => {
            counters.lookups.fetch_add(1, Relaxed);
            counters.misses.fetch_add(1, Relaxed);
            head.extensions.insert(Arc::new(MissMark {
                cache: cache.clone(),
                key,
                token: Mutex::new(token),
            }));
            Ok(None)
        }
        Lookup::Busy(fill) => Err(fill),
    }
}

/// A request the cache may not answer (`Cache-Control: no-cache`, …): its response may
/// still be stored, as HAProxy's (the key is computed for every request).
pub fn bypass(cache: &Arc<Cache>, head: &mut http::request::Parts) {
    let key = key(head);
    head.extensions.insert(Arc::new(MissMark {
        cache: cache.clone(),
        key,
        token: Mutex::new(None),
    }));
}

/// The response a hit gives for `req`: the stored head with `Age`, a 304 when the
/// client's validators match, and no body for HEAD or a 304 (the stored
/// `Content-Length` stays, as HAProxy sends it).
pub fn hit_response(e: &Entry, req: &http::request::Parts) -> (StatusCode, HeaderMap, Bytes) {
    let mut headers = e.headers.clone();
    let age = e.age + e.stored.elapsed().as_secs();
    headers.insert(header::AGE, HeaderValue::from(age));
    let not_modified = not_modified(e, &req.headers);
    let status = if not_modified {
        StatusCode::NOT_MODIFIED
    } else {
        e.status
    };
    let body = if not_modified || req.method == Method::HEAD {
        Bytes::new()
    } else {
        e.body.clone()
    };
    (status, headers, body)
}

/// Weak comparison of two entity tags (RFC 9110 §8.8.3.2).
fn weak_eq(a: &[u8], b: &[u8]) -> bool {
    let strip = |t: &[u8]| -> Vec<u8> {
        let t = t.trim_ascii();
        t.strip_prefix(b"W/").unwrap_or(t).to_vec()
    };
    strip(a) == strip(b)
}

/// RFC 9110 §13.1.1 and §13.1.3 against an entry: If-None-Match first (`*`, or a tag
/// that weakly matches the entry's), else If-Modified-Since (the entry not modified
/// after the date).
fn not_modified(e: &Entry, h: &HeaderMap) -> bool {
    if h.contains_key(header::IF_NONE_MATCH) {
        let Some(tag) = &e.etag else {
            return h
                .get_all(header::IF_NONE_MATCH)
                .iter()
                .any(|v| v.as_bytes().trim_ascii() == b"*");
        };
        return h.get_all(header::IF_NONE_MATCH).iter().any(|v| {
            v.as_bytes()
                .split(|&c| c == b',')
                .any(|t| t.trim_ascii() == b"*" || weak_eq(t, tag.as_bytes()))
        });
    }
    match http_date(h.get(header::IF_MODIFIED_SINCE)) {
        Some(since) => e.last_modified <= since,
        None => false,
    }
}

/// The tee that stores a response while it goes to the client: the body is kept (up to
/// `max-object-size`, else the store is given up) and the entry inserted at its end.
pub struct StoreFilter {
    cache: Arc<Cache>,
    key: Key,
    secondary: u64,
    /// The entry without its body.
    entry: Option<Entry>,
    body: BytesMut,
    /// Room left for the body.
    room: u64,
    /// The body's `Content-Length`: once that much came, the entry goes in (the client's
    /// side may stop asking for the body's end once it has it all).
    expected: Option<u64>,
    /// Ends the fill (waiters look again) once the entry is in, or when given up.
    token: Option<FillToken>,
}

impl StoreFilter {
    /// A store of the response `status`/`headers` to `req` (`plan` from [`storable`]);
    /// `None` when its head alone is over `max-object-size`.
    pub fn new(
        miss: &MissMark,
        req: &http::request::Parts,
        status: StatusCode,
        headers: &HeaderMap,
        plan: StorePlan,
    ) -> Option<Self> {
        let cache = miss.cache.clone();
        let mut stored = headers.clone();
        stored.remove(header::AGE);
        let head_size: u64 = stored
            .iter()
            .map(|(k, v)| (k.as_str().len() + v.len() + 4) as u64)
            .sum();
        let max = cache.spec.max_object_size;
        if head_size >= max {
            return None;
        }
        let expected = headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok());
        if expected.is_some_and(|len| head_size + len > max) {
            return None;
        }
        let now = Instant::now();
        let last_modified = http_date(headers.get(header::LAST_MODIFIED))
            .or_else(|| http_date(headers.get(header::DATE)))
            .unwrap_or_else(SystemTime::now);
        let secondary = secondary(plan.vary, &req.headers, headers);
        let token = miss.token.lock().ok().and_then(|mut t| t.take());
        Some(Self {
            key: miss.key.clone(),
            secondary,
            entry: Some(Entry {
                status,
                etag: stored.get(header::ETAG).cloned(),
                headers: stored,
                body: Bytes::new(),
                vary: plan.vary,
                stored: now,
                expires: now + plan.fresh_for,
                age: plan.age,
                last_modified,
            }),
            body: BytesMut::new(),
            room: max - head_size,
            expected,
            token,
            cache,
        })
    }

    /// Stores the entry (once) and ends the fill.
    fn commit(&mut self) {
        if let Some(mut e) = self.entry.take() {
            e.body = std::mem::take(&mut self.body).freeze();
            self.cache.store.insert(&self.key, self.secondary, e);
        }
        self.token = None;
    }

    /// Gives the store up (too large): the fill ends now.
    fn give_up(&mut self) {
        self.entry = None;
        self.body = BytesMut::new();
        self.token = None;
    }
}

impl BodyFilter for StoreFilter {
    fn data(&mut self, chunk: Bytes) -> Result<Bytes, FilterError> {
        if self.entry.is_some() {
            if chunk.len() as u64 > self.room {
                self.give_up();
            } else {
                self.room -= chunk.len() as u64;
                self.body.extend_from_slice(&chunk);
                if self.expected == Some(self.body.len() as u64) {
                    self.commit();
                }
            }
        }
        Ok(chunk)
    }

    fn end(&mut self) -> Result<Bytes, FilterError> {
        match self.expected {
            // Shorter than announced: cut, not stored.
            Some(n) if n != self.body.len() as u64 => self.give_up(),
            _ => self.commit(),
        }
        Ok(Bytes::new())
    }

    fn keeps_length(&self) -> bool {
        true
    }
}

/// `cache-store` on a response: the store filter when it may be stored; a successful
/// unsafe request removes the URL's entries instead.
pub fn store(
    cache: &Arc<Cache>,
    req: &http::request::Parts,
    status: StatusCode,
    headers: &HeaderMap,
) -> Option<StoreFilter> {
    if !req.method.is_safe() && (200..400).contains(&status.as_u16()) {
        cache.store.invalidate(&key(req));
        return None;
    }
    let miss = req.extensions.get::<Arc<MissMark>>()?;
    if !Arc::ptr_eq(&miss.cache, cache) {
        return None;
    }
    let plan = storable(&cache.spec, req, status, headers)?;
    StoreFilter::new(miss, req, status, headers, plan)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::l7::http::test_headers as h;

    fn spec(process_vary: bool) -> CacheSpec {
        CacheSpec {
            name: "c".into(),
            total_max_size: 1 << 20,
            max_object_size: 1 << 16,
            max_age: 240,
            process_vary,
            max_secondary_entries: 10,
        }
    }

    fn req(method: &str, pairs: &[(&'static str, &'static str)]) -> http::request::Parts {
        let mut b = http::Request::builder().method(method).uri("/x");
        for (k, v) in pairs {
            b = b.header(*k, *v);
        }
        b.body(()).expect("req").into_parts().0
    }

    #[test]
    fn request_cacheability_like_haproxy() {
        assert!(lookupable(&req("GET", &[])));
        assert!(lookupable(&req("HEAD", &[])));
        assert!(!lookupable(&req("POST", &[])));
        assert!(!lookupable(&req("GET", &[("authorization", "x")])));
        assert!(!lookupable(&req("GET", &[("cache-control", "no-cache")])));
        assert!(!lookupable(&req("GET", &[("cache-control", "max-age=0")])));
        assert!(!lookupable(&req("GET", &[("pragma", "no-cache")])));
        // Pragma is ignored when Cache-Control is there (RFC 9111 §5.4)
        assert!(lookupable(&req(
            "GET",
            &[("pragma", "no-cache"), ("cache-control", "max-age=5")]
        )));
        let mut old = req("GET", &[]);
        old.version = Version::HTTP_10;
        assert!(!lookupable(&old));
    }

    #[test]
    fn response_freshness() {
        let s = spec(false);
        let get = req("GET", &[]);
        let st = |pairs: &[(&'static str, &'static str)]| {
            storable(&s, &get, StatusCode::OK, &h(pairs)).map(|p| (p.fresh_for.as_secs(), p.age))
        };
        assert_eq!(st(&[("cache-control", "max-age=100")]), Some((100, 0)));
        // s-maxage first, capped by the cache's max-age
        assert_eq!(
            st(&[("cache-control", "max-age=10, s-maxage=1000")]),
            Some((240, 0))
        );
        // Age counts; older than the lifetime: stale, not stored
        assert_eq!(
            st(&[("cache-control", "max-age=100"), ("age", "30")]),
            Some((70, 30))
        );
        assert_eq!(
            st(&[("cache-control", "max-age=100"), ("age", "300")]),
            None
        );
        // Expires − Date; an invalid Expires is in the past
        assert_eq!(
            st(&[
                ("date", "Wed, 21 Oct 2015 07:28:00 GMT"),
                ("expires", "Wed, 21 Oct 2015 07:29:00 GMT"),
            ]),
            Some((60, 0))
        );
        assert_eq!(st(&[("expires", "0")]), None);
        // a validator alone: the cache's max-age; nothing to go by: not stored
        assert_eq!(st(&[("etag", "\"v\"")]), Some((240, 0)));
        assert_eq!(st(&[]), None);
        for cc in ["no-store", "private", "no-cache", "max-age=0", "s-maxage=0"] {
            assert_eq!(
                st(&[("etag", "\"v\""), ("cache-control", cc)]),
                None,
                "{cc}"
            );
        }
        assert_eq!(st(&[("pragma", "no-cache"), ("etag", "\"v\"")]), None);
        // Set-Cookie only with public
        assert_eq!(
            st(&[("cache-control", "max-age=9"), ("set-cookie", "a=b")]),
            None
        );
        assert!(
            st(&[
                ("cache-control", "public, max-age=9"),
                ("set-cookie", "a=b")
            ])
            .is_some()
        );
        // only 200 to GET, without Authorization; a request's no-store, not its no-cache
        let m = h(&[("cache-control", "max-age=9")]);
        assert!(storable(&s, &get, StatusCode::NOT_FOUND, &m).is_none());
        for (r, stored) in [
            (req("HEAD", &[]), false),
            (req("GET", &[("authorization", "x")]), false),
            (req("GET", &[("cache-control", "no-store")]), false),
            (req("GET", &[("cache-control", "no-cache")]), true),
        ] {
            assert_eq!(storable(&s, &r, StatusCode::OK, &m).is_some(), stored);
        }
    }

    #[test]
    fn vary_needs_process_vary() {
        let get = req("GET", &[]);
        let m = h(&[("cache-control", "max-age=9"), ("vary", "Accept-Encoding")]);
        assert!(storable(&spec(false), &get, StatusCode::OK, &m).is_none());
        let p = storable(&spec(true), &get, StatusCode::OK, &m).expect("p");
        assert_eq!(p.vary, VARY_ACCEPT_ENCODING);
        let m = h(&[("cache-control", "max-age=9"), ("vary", "user-agent")]);
        assert!(storable(&spec(true), &get, StatusCode::OK, &m).is_none());
        let m = h(&[("cache-control", "max-age=9"), ("vary", "*")]);
        assert!(storable(&spec(true), &get, StatusCode::OK, &m).is_none());
        // variants, as HAProxy 2.6: keyed by the response's coding; a request may have a
        // variant whose codings it all accepts (identity unless refused)
        let ae = VARY_ACCEPT_ENCODING;
        let req = |v: &'static str| h(&[("accept-encoding", v)]);
        let plain = secondary(ae, &req("gzip"), &h(&[]));
        let gz = secondary(ae, &req("gzip"), &h(&[("content-encoding", "gzip")]));
        assert_ne!(plain, gz);
        assert!(variant_matches(ae, plain, &req("br")));
        assert!(variant_matches(ae, plain, &h(&[])));
        assert!(!variant_matches(ae, plain, &req("gzip, identity;q=0")));
        assert!(variant_matches(ae, gz, &req("br,gzip, zstd;q=0")));
        assert!(variant_matches(ae, gz, &req("*")));
        assert!(!variant_matches(ae, gz, &req("*, gzip;q=0")));
        assert!(!variant_matches(ae, gz, &req("br")));
        assert!(variant_matches(ae, gz, &h(&[])));
        let other = secondary(ae, &req("x"), &h(&[("content-encoding", "x-custom")]));
        assert!(!variant_matches(ae, other, &req("x-custom")));
        // referer and origin are compared as they are
        let rv = VARY_REFERER;
        let a = secondary(rv, &h(&[("referer", "http://a/")]), &h(&[]));
        assert!(variant_matches(rv, a, &h(&[("referer", "http://a/")])));
        assert!(!variant_matches(rv, a, &h(&[("referer", "http://b/")])));
        assert_eq!(secondary(0, &req("gzip"), &h(&[])), 0);
    }

    #[test]
    fn conditional_hits() {
        let now = Instant::now();
        let e = Entry {
            status: StatusCode::OK,
            headers: h(&[("etag", "\"v1\""), ("content-length", "5")]),
            body: Bytes::from_static(b"hello"),
            vary: 0,
            stored: now,
            expires: now + Duration::from_secs(9),
            age: 30,
            etag: Some(HeaderValue::from_static("\"v1\"")),
            last_modified: httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT")
                .expect("date"),
        };
        let r = |pairs: &[(&'static str, &'static str)]| hit_response(&e, &req("GET", pairs));
        let (s, hd, b) = r(&[]);
        assert_eq!((s, &b[..]), (StatusCode::OK, &b"hello"[..]));
        assert_eq!(hd.get("age").expect("age"), "30");
        for inm in ["\"v1\"", "W/\"v1\"", "*", "\"x\", \"v1\""] {
            let hv = HeaderValue::from_static(inm);
            let mut q = req("GET", &[]);
            q.headers.insert(header::IF_NONE_MATCH, hv);
            let (s, hd, b) = hit_response(&e, &q);
            assert_eq!(s, StatusCode::NOT_MODIFIED, "{inm}");
            assert!(b.is_empty());
            assert_eq!(hd.get("content-length").expect("cl"), "5");
        }
        assert_eq!(r(&[("if-none-match", "\"v2\"")]).0, StatusCode::OK);
        // If-None-Match wins over If-Modified-Since
        assert_eq!(
            r(&[
                ("if-none-match", "\"v2\""),
                ("if-modified-since", "Wed, 21 Oct 2015 07:29:00 GMT")
            ])
            .0,
            StatusCode::OK
        );
        assert_eq!(
            r(&[("if-modified-since", "Wed, 21 Oct 2015 07:28:00 GMT")]).0,
            StatusCode::NOT_MODIFIED
        );
        assert_eq!(
            r(&[("if-modified-since", "Wed, 21 Oct 2015 07:27:00 GMT")]).0,
            StatusCode::OK
        );
        let (s, _, b) = hit_response(&e, &req("HEAD", &[]));
        assert_eq!(s, StatusCode::OK);
        assert!(b.is_empty());
    }
}
