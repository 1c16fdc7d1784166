//! ACL engine tests: every fetch, flag and operator, plus the tricky HAProxy semantics.

use std::collections::HashMap;
use std::net::IpAddr;

use super::*;

/// A request as the ACL engine sees it.
#[derive(Debug, Clone)]
pub(crate) struct Req {
    url: String,
    method: String,
    headers: Vec<(String, String)>,
    src: IpAddr,
    ssl: bool,
    sni: Option<String>,
    req_sni: Option<String>,
    nbsrv: HashMap<String, u32>,
    http: bool,
    version: Option<String>,
    dst: Option<std::net::SocketAddr>,
    src_port: Option<u16>,
    /// A response (for `http-response` conditions): status and headers.
    status: Option<u16>,
    res_headers: Vec<(String, String)>,
}

impl Req {
    pub(crate) fn get(url: &str) -> Self {
        Req {
            url: url.into(),
            method: "GET".into(),
            headers: Vec::new(),
            src: "192.0.2.1".parse().expect("ip"),
            ssl: false,
            sni: None,
            req_sni: None,
            nbsrv: HashMap::new(),
            http: true,
            version: Some("1.1".into()),
            dst: None,
            src_port: None,
            status: None,
            res_headers: Vec::new(),
        }
    }
    fn response(mut self, status: u16, headers: &[(&str, &str)]) -> Self {
        self.status = Some(status);
        self.res_headers = headers
            .iter()
            .map(|(n, v)| ((*n).into(), (*v).into()))
            .collect();
        self
    }
    fn method(mut self, m: &str) -> Self {
        self.method = m.into();
        self
    }
    pub(crate) fn hdr(mut self, n: &str, v: &str) -> Self {
        self.headers.push((n.into(), v.into()));
        self
    }
    fn src(mut self, ip: &str) -> Self {
        self.src = ip.parse().expect("ip");
        self
    }
    fn tls(mut self, sni: Option<&str>) -> Self {
        self.ssl = true;
        self.sni = sni.map(Into::into);
        self
    }
    fn req_sni(mut self, sni: &str) -> Self {
        self.req_sni = Some(sni.into());
        self
    }
    fn servers(mut self, backend: &str, n: u32) -> Self {
        self.nbsrv.insert(backend.into(), n);
        self
    }
}

impl AclInput for Req {
    fn path(&self) -> &str {
        let end = self.url.find('?').unwrap_or(self.url.len());
        &self.url[..end]
    }
    fn url(&self) -> &str {
        &self.url
    }
    fn method(&self) -> &str {
        &self.method
    }
    fn any_header(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        header_values(&self.headers, name, f)
    }
    fn status(&self) -> Option<u16> {
        self.status
    }
    fn any_response_header(&self, name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
        header_values(&self.res_headers, name, f)
    }
    fn src(&self) -> IpAddr {
        self.src
    }
    fn ssl_fc(&self) -> bool {
        self.ssl
    }
    fn ssl_fc_sni(&self) -> Option<&str> {
        self.sni.as_deref()
    }
    fn req_ssl_sni(&self) -> Option<&str> {
        self.req_sni.as_deref()
    }
    fn nbsrv(&self, backend: &str) -> u32 {
        self.nbsrv.get(backend).copied().unwrap_or(0)
    }
    fn is_http(&self) -> bool {
        self.http
    }
    fn http_version(&self) -> Option<&str> {
        self.version.as_deref()
    }
    fn dst(&self) -> Option<std::net::SocketAddr> {
        self.dst
    }
    fn src_port(&self) -> Option<u16> {
        self.src_port
    }
}

fn header_values(h: &[(String, String)], name: &str, f: &mut dyn FnMut(&str) -> bool) -> bool {
    for (n, v) in h {
        if n.eq_ignore_ascii_case(name) {
            for part in v.split(',') {
                if f(part.trim()) {
                    return true;
                }
            }
        }
    }
    false
}

/// Response fetches (`http-response` conditions): `status`, `res.hdr` and the `shdr`
/// family read the response, request fetches still read the request; on a request (no
/// response) they match nothing.
#[test]
fn response_fetches() {
    let req = Req::get("/api/items").hdr("server", "client-side");
    let res = req.clone().response(
        503,
        &[
            ("server", "nginx/1.22"),
            ("cache-control", "no-cache, private"),
            ("content-length", "12"),
        ],
    );
    assert!(anon("status 503", &res));
    assert!(anon("status ge 500", &res));
    assert!(!anon("status 200:299", &res));
    assert!(anon("res.hdr(server) -m beg nginx", &res));
    assert!(anon("shdr_beg(server) nginx", &res));
    assert!(!anon("shdr_beg(server) client", &res));
    // Request header fetches are unchanged.
    assert!(anon("hdr(server) client-side", &res));
    assert!(anon("res.hdr(cache-control) private", &res));
    assert!(anon("shdr_cnt(cache-control) eq 2", &res));
    assert!(anon("res.hdr_cnt(x-missing) eq 0", &res));
    assert!(anon("res.hdr_val(content-length) gt 10", &res));
    assert!(anon("shdr_val(content-length) 12", &res));
    assert!(anon("shdr_sub(server) /1.2", &res));
    assert!(anon("shdr_reg(server) ^nginx/[0-9.]+$", &res));
    assert!(anon("shdr_end(server) -i .22", &res));
    assert!(anon("path_beg /api", &res));
    // No response yet: nothing matches, not even a negated-by-range status.
    assert!(!anon("status ge 0", &req));
    assert!(!anon("res.hdr(server) -m found", &req));
    assert!(anon("res.hdr_cnt(server) eq 0", &req));
    // Conditions tell the loader they need a response.
    assert_eq!(
        cond(&["err status ge 500"], "if err").response_fetch(),
        Some("status")
    );
    assert_eq!(
        cond(&["p path_beg /x"], "if p || { shdr(server) x }").response_fetch(),
        Some("res.hdr")
    );
    assert_eq!(cond(&["p path_beg /x"], "if p").response_fetch(), None);
    assert!(AclSet::default().define("x res.hdr() a").is_err());
}

/// Defines `acls` and compiles `cond`.
fn cond(acls: &[&str], cond: &str) -> Condition {
    let mut set = AclSet::default();
    for a in acls {
        set.define(a)
            .unwrap_or_else(|e| panic!("define {a:?}: {e} at {}", e.offset));
    }
    Condition::compile(cond, &set)
        .unwrap_or_else(|e| panic!("compile {cond:?}: {e} at {}", e.offset))
}

/// Evaluates a single anonymous ACL `{ expr }`.
fn anon(expr: &str, req: &Req) -> bool {
    cond(&[], &format!("if {{ {expr} }}")).eval(req)
}

fn define_err(line: &str) -> AclError {
    AclSet::default().define(line).expect_err("must fail")
}

fn compile_err(acls: &[&str], text: &str) -> AclError {
    let mut set = AclSet::default();
    for a in acls {
        set.define(a).expect("define");
    }
    Condition::compile(text, &set).expect_err("must fail")
}

// --- contract -------------------------------------------------------------------------

#[test]
fn condition_is_clone_debug_send_sync() {
    fn assert_traits<T: Clone + std::fmt::Debug + Send + Sync + 'static>() {}
    assert_traits::<Condition>();
    assert_traits::<AclSet>();
    assert_traits::<AclError>();
}

// --- path / url --------------------------------------------------------------------------

#[test]
fn path_exact() {
    assert!(anon("path /a/b", &Req::get("/a/b?x=1")));
    assert!(!anon("path /a/b", &Req::get("/a/b/c")));
    assert!(!anon("path /A/B", &Req::get("/a/b")));
}

#[test]
fn path_excludes_query_but_url_includes_it() {
    let r = Req::get("/search?q=admin");
    assert!(!anon("path_sub admin", &r));
    assert!(anon("url_sub admin", &r));
    assert!(anon("url /search?q=admin", &r));
    assert!(!anon("path_end =admin", &r));
    assert!(anon("path_end /search", &r));
}

#[test]
fn path_beg_end_sub() {
    let r = Req::get("/static/img/logo.PNG");
    assert!(anon("path_beg /static /images", &r));
    assert!(!anon("path_beg /images", &r));
    assert!(anon("path_end .jpg .PNG", &r));
    assert!(!anon("path_end .png", &r));
    assert!(anon("path_end -i .png", &r));
    assert!(anon("path_sub img/", &r));
    assert!(anon("path_sub -i IMG/LOGO", &r));
    assert!(!anon("path_sub IMG/LOGO", &r));
}

#[test]
fn path_reg_compiled_once_and_unanchored() {
    let r = Req::get("/api/v2/users");
    assert!(anon(r"path_reg ^/api/v[0-9]+/", &r));
    assert!(anon(r"path_reg v2", &r));
    assert!(!anon(r"path_reg ^/API", &r));
    assert!(anon(r"path_reg -i ^/API", &r));
    // Backslash escapes survive the tokenizer.
    assert!(anon(r"path_reg \.css$", &Req::get("/x/site.css")));
    assert!(!anon(r"path_reg \.css$", &Req::get("/x/sitexcss")));
}

#[test]
fn path_dir_matches_slash_delimited_words() {
    let r = Req::get("/shop/cart/checkout");
    assert!(anon("path_dir cart", &r));
    assert!(anon("path_dir /cart/", &r));
    assert!(anon("path_dir shop/cart", &r));
    assert!(!anon("path_dir car", &r));
    assert!(!anon("path_dir art/check", &r));
}

#[test]
fn url_beg_sub_reg_end_len() {
    let r = Req::get("/dl/file.tar.gz?mirror=eu");
    assert!(anon("url_beg /dl/", &r));
    assert!(anon("url_sub mirror=", &r));
    assert!(anon("url_reg mirror=(eu|us)$", &r));
    assert!(anon("url_end =eu", &r));
    assert!(anon("url_len 25", &r));
    assert!(anon("path_len gt 10", &r));
    assert!(!anon("path_len gt 20", &r));
}

#[test]
fn query_fetch() {
    assert!(anon("query a=1&b=2", &Req::get("/p?a=1&b=2")));
    assert!(!anon("query -m found", &Req::get("/p")));
    assert!(anon("query -m found", &Req::get("/p?")));
}

// --- headers -----------------------------------------------------------------------------

#[test]
fn hdr_exact_each_comma_value() {
    let r = Req::get("/").hdr("X-Tags", "alpha, beta,gamma");
    assert!(anon("hdr(x-tags) beta", &r));
    assert!(anon("hdr(x-tags) gamma", &r));
    assert!(!anon("hdr(x-tags) alpha,", &r));
}

#[test]
fn hdr_name_is_case_insensitive() {
    let r = Req::get("/").hdr("host", "example.com");
    assert!(anon("hdr(Host) example.com", &r));
    assert!(anon("hdr(HOST) example.com", &r));
    assert!(!anon("hdr(host) EXAMPLE.com", &r));
    assert!(anon("hdr(host) -i EXAMPLE.com", &r));
}

#[test]
fn hdr_beg_end_sub_reg_dom() {
    let r = Req::get("/").hdr("Host", "uat-myapp.example.com");
    assert!(anon("hdr_beg(host) myapp uat-myapp", &r));
    assert!(!anon("hdr_beg(host) myapp", &r));
    assert!(anon("hdr_end(host) .example.com", &r));
    assert!(anon("hdr_sub(host) myapp", &r));
    assert!(anon(r"hdr_reg(host) ^[a-z-]+\.example\.com$", &r));
    assert!(anon("hdr_dom(host) example.com", &r));
    assert!(anon("hdr_dom(host) uat-myapp", &r));
    assert!(!anon("hdr_dom(host) myapp", &r));
    assert!(!anon("hdr_dom(host) ample.com", &r));
}

#[test]
fn hdr_dom_with_port_delimiter() {
    let r = Req::get("/").hdr("Host", "www.example.org:8080");
    assert!(anon("hdr_dom(host) example.org", &r));
    assert!(anon("hdr_dom(host) 8080", &r));
    assert!(!anon("hdr(host) www.example.org", &r));
}

#[test]
fn hdr_missing_never_matches() {
    let r = Req::get("/");
    assert!(!anon("hdr(x-missing) a", &r));
    assert!(!anon("hdr(x-missing) -m found", &r));
    assert!(anon("hdr_cnt(x-missing) 0", &r));
}

#[test]
fn hdr_cnt_counts_values() {
    let r = Req::get("/")
        .hdr("X-Forwarded-For", "10.0.0.1, 10.0.0.2")
        .hdr("x-forwarded-for", "10.0.0.3");
    assert!(anon("hdr_cnt(x-forwarded-for) 3", &r));
    assert!(anon("hdr_cnt(x-forwarded-for) gt 2", &r));
    assert!(!anon("hdr_cnt(x-forwarded-for) gt 3", &r));
    assert!(anon("req.hdr_cnt(X-Forwarded-For) ge 3", &r));
}

#[test]
fn hdr_occurrence_argument() {
    let r = Req::get("/").hdr("X-Forwarded-For", "10.0.0.1, 10.0.0.2, 10.0.0.3");
    assert!(anon("hdr(x-forwarded-for,1) 10.0.0.1", &r));
    assert!(!anon("hdr(x-forwarded-for,1) 10.0.0.2", &r));
    assert!(anon("hdr(x-forwarded-for,-1) 10.0.0.3", &r));
    assert!(anon("hdr(x-forwarded-for,-3) 10.0.0.1", &r));
    assert!(!anon("hdr(x-forwarded-for,-4) -m found", &r));
    assert!(!anon("hdr(x-forwarded-for,4) -m found", &r));
    // A header holding an address matched as an IP.
    assert!(anon("req.hdr(x-forwarded-for,-1) -m ip 10.0.0.0/24", &r));
}

#[test]
fn hdr_val_integer() {
    let r = Req::get("/").hdr("Content-Length", "1024");
    assert!(anon("hdr_val(content-length) gt 1000", &r));
    assert!(!anon("hdr_val(content-length) lt 1000", &r));
    assert!(anon("hdr_val(content-length) 1000:2000", &r));
}

#[test]
fn hdr_len() {
    let r = Req::get("/").hdr("X-Token", "abcdef");
    assert!(anon("hdr_len(x-token) 6", &r));
    assert!(anon("hdr_len(x-token) le 6", &r));
    assert!(!anon("hdr_len(x-token) lt 6", &r));
}

// --- method ------------------------------------------------------------------------------

#[test]
fn method_exact_and_case() {
    let r = Req::get("/").method("POST");
    assert!(anon("method POST PUT", &r));
    assert!(!anon("method post", &r));
    assert!(anon("method -i post", &r));
    assert!(!anon("method GET", &r));
}

// --- src ---------------------------------------------------------------------------------

#[test]
fn src_ipv4_cidr_and_exact() {
    let r = Req::get("/").src("10.1.2.3");
    assert!(anon("src 10.0.0.0/8", &r));
    assert!(anon("src 10.1.2.3", &r));
    assert!(anon("src 192.168.0.0/16 10.1.0.0/255.255.0.0", &r));
    assert!(!anon("src 10.1.2.4", &r));
    assert!(!anon("src 11.0.0.0/8", &r));
    assert!(anon("src 0.0.0.0/0", &r));
}

#[test]
fn src_ipv6_cidr() {
    let r = Req::get("/").src("2001:db8:abcd::42");
    assert!(anon("src 2001:db8::/32", &r));
    assert!(anon("src 2001:db8:abcd::/48", &r));
    assert!(!anon("src 2001:db9::/32", &r));
    assert!(anon("src 2001:db8:abcd::42", &r));
    assert!(!anon("src 10.0.0.0/8", &r));
}

#[test]
fn src_v4_mapped_and_6to4_cross_family() {
    // An IPv4 client seen on a dual-stack socket.
    let mapped = Req::get("/").src("::ffff:10.9.8.7");
    assert!(anon("src 10.0.0.0/8", &mapped));
    // An IPv4 client matches an IPv4-mapped IPv6 pattern.
    let v4 = Req::get("/").src("10.9.8.7");
    assert!(anon("src ::ffff:10.0.0.0/104", &v4));
    // 6to4 addresses embed an IPv4 address.
    let six_to_four = Req::get("/").src("2002:0a09:0807::1");
    assert!(anon("src 10.9.8.7", &six_to_four));
}

#[test]
fn src_localhost_predefined() {
    let c = cond(&[], "if LOCALHOST");
    assert!(c.eval(&Req::get("/").src("127.0.0.1")));
    assert!(c.eval(&Req::get("/").src("127.8.0.1")));
    assert!(c.eval(&Req::get("/").src("::1")));
    assert!(!c.eval(&Req::get("/").src("192.0.2.1")));
}

// --- TLS ---------------------------------------------------------------------------------

#[test]
fn ssl_fc_boolean() {
    assert!(anon("ssl_fc", &Req::get("/").tls(None)));
    assert!(!anon("ssl_fc", &Req::get("/")));
    let c = cond(&["tls ssl_fc"], "if !tls");
    assert!(c.eval(&Req::get("/")));
    assert!(!c.eval(&Req::get("/").tls(None)));
}

#[test]
fn ssl_fc_sni_and_variants() {
    let r = Req::get("/").tls(Some("api.example.com"));
    assert!(anon("ssl_fc_sni api.example.com", &r));
    assert!(anon("ssl_fc_sni -i API.example.com", &r));
    assert!(anon("ssl_fc_sni_end .example.com", &r));
    assert!(anon(r"ssl_fc_sni_reg ^api\.", &r));
    assert!(anon("ssl_fc_sni -m found", &r));
    assert!(!anon("ssl_fc_sni -m found", &Req::get("/").tls(None)));
    assert!(!anon("ssl_fc_sni -m found", &Req::get("/")));
}

#[test]
fn req_ssl_sni_both_spellings() {
    let r = Req::get("/").req_sni("mail.example.net");
    assert!(anon("req.ssl_sni mail.example.net", &r));
    assert!(anon("req_ssl_sni -m end .example.net", &r));
    assert!(!anon("req.ssl_sni other", &r));
    assert!(!anon("req.ssl_sni -m found", &Req::get("/")));
}

// --- nbsrv and integer operators ---------------------------------------------------------

#[test]
fn nbsrv_operators() {
    let r = Req::get("/").servers("app", 2);
    for (expr, want) in [
        ("nbsrv(app) eq 2", true),
        ("nbsrv(app) 2", true),
        ("nbsrv(app) ne 2", false),
        ("nbsrv(app) ne 3", true),
        ("nbsrv(app) lt 2", false),
        ("nbsrv(app) lt 3", true),
        ("nbsrv(app) le 2", true),
        ("nbsrv(app) gt 1", true),
        ("nbsrv(app) gt 2", false),
        ("nbsrv(app) ge 2", true),
        ("nbsrv(app) ge 3", false),
        ("nbsrv(other) eq 0", true),
        ("nbsrv(other) lt 1", true),
    ] {
        assert_eq!(anon(expr, &r), want, "{expr}");
    }
}

#[test]
fn integer_ranges_haproxy_syntax() {
    let r = Req::get("/").servers("app", 5);
    assert!(anon("nbsrv(app) 1:5", &r));
    assert!(anon("nbsrv(app) 5:", &r));
    assert!(anon("nbsrv(app) :5", &r));
    assert!(!anon("nbsrv(app) 6:", &r));
    assert!(!anon("nbsrv(app) :4", &r));
    assert!(anon("nbsrv(app) 3-7", &r));
    // A range ignores the sticky operator, as in HAProxy.
    assert!(anon("nbsrv(app) gt 4:6", &r));
}

#[test]
fn integer_operator_is_sticky_across_patterns() {
    // "lt 1 gt 4" = lt 1 OR gt 4; "lt 3 9" = lt 3 OR lt 9.
    assert!(anon(
        "nbsrv(app) lt 1 gt 4",
        &Req::get("/").servers("app", 5)
    ));
    assert!(!anon(
        "nbsrv(app) lt 1 gt 4",
        &Req::get("/").servers("app", 3)
    ));
    assert!(anon("nbsrv(app) lt 3 9", &Req::get("/").servers("app", 5)));
}

#[test]
fn backup_when_pool_down_condition() {
    let c = cond(
        &["app_down nbsrv(app) lt 1", "is_app path_beg /app"],
        "if is_app app_down",
    );
    assert!(c.eval(&Req::get("/app/x")));
    assert!(!c.eval(&Req::get("/app/x").servers("app", 1)));
    assert!(!c.eval(&Req::get("/other")));
    assert_eq!(c.nbsrv_backends(), vec!["app"]);
}

// --- flags -------------------------------------------------------------------------------

#[test]
fn i_flag_applies_to_all_inline_patterns() {
    let r = Req::get("/ADMIN");
    assert!(anon("path -i /admin /other", &r));
    assert!(anon("path -i /other /admin", &r));
}

#[test]
fn i_flag_after_a_pattern_is_a_pattern() {
    // Flags are only read before the first pattern: "-i" here is the literal "-i".
    let c = cond(&["a path /x -i /y"], "if a");
    assert!(c.eval(&Req::get("/x")));
    assert!(c.eval(&Req::get("/y")));
    assert!(!c.eval(&Req::get("/Y")));
    assert!(c.eval(&Req::get("-i")));
}

#[test]
fn i_flag_applies_only_to_later_pattern_files_and_patterns() {
    let dir = std::env::temp_dir().join(format!("lb-acl-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("mkdir");
    let exact = dir.join("exact.lst");
    let generic = dir.join("generic.lst");
    std::fs::write(&exact, "# exact agents\nCurl/8\n\n").expect("write");
    std::fs::write(&generic, "  Wget/1  \n").expect("write");
    let line = format!(
        "ua hdr(user-agent) -f {} -i -f {} Test",
        exact.display(),
        generic.display()
    );
    let c = cond(&[&line], "if ua");
    let ua = |v: &str| Req::get("/").hdr("User-Agent", v);
    assert!(c.eval(&ua("Curl/8")));
    assert!(
        !c.eval(&ua("curl/8")),
        "file before -i stays case-sensitive"
    );
    assert!(c.eval(&ua("wget/1")), "file after -i is case-insensitive");
    assert!(
        c.eval(&ua("TEST")),
        "inline pattern after -i is case-insensitive"
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn m_flag_overrides_matching_method() {
    let r = Req::get("/admin/users");
    assert!(anon("path -m beg /admin", &r));
    assert!(anon("path -i -m beg /ADMIN", &r));
    assert!(anon("path -m sub min/us", &r));
    assert!(anon("path -m end users", &r));
    assert!(anon("path -m reg ^/a.*s$", &r));
    assert!(anon("path -m dir users", &r));
    assert!(anon("path -m len 12", &r));
    assert!(anon("path -m str /admin/users", &r));
    assert!(anon("path_beg -m str /admin/users", &r));
    assert!(!anon("path_beg -m str /admin", &r));
    assert!(anon(
        "hdr(host) -m dom -i Example.COM",
        &Req::get("/").hdr("Host", "www.example.com")
    ));
}

#[test]
fn m_found() {
    let r = Req::get("/").hdr("X-Debug", "");
    assert!(anon("hdr(x-debug) -m found", &r));
    assert!(!anon("hdr(x-other) -m found", &r));
    assert!(anon("path -m found", &r));
    // Patterns after -m found are ignored.
    assert!(anon("hdr(x-debug) -m found whatever", &r));
}

#[test]
fn m_int_on_string_and_str_on_int() {
    let r = Req::get("/").hdr("X-Port", "8080").servers("b", 12);
    assert!(anon("hdr(x-port) -m int gt 8000", &r));
    assert!(anon("nbsrv(b) -m str 12", &r));
    assert!(anon("nbsrv(b) -m beg 1", &r));
    assert!(anon("src -m str 192.0.2.1", &r));
    assert!(anon("src -m beg 192.0.2.", &r));
    assert!(anon("ssl_fc -m int 0", &r));
}

#[test]
fn m_bool() {
    assert!(anon("nbsrv(b) -m bool", &Req::get("/").servers("b", 1)));
    assert!(!anon("nbsrv(b) -m bool", &Req::get("/")));
}

#[test]
fn double_dash_ends_flags() {
    let c = cond(&["dash path_beg -- -x"], "if dash");
    assert!(c.eval(&Req::get("-x/y")));
    let c = cond(&["dashi hdr(x) -i -- -I"], "if dashi");
    assert!(c.eval(&Req::get("/").hdr("x", "-i")));
}

#[test]
fn n_and_u_flags_accepted() {
    assert!(anon("src -n 192.0.2.0/24", &Req::get("/")));
    assert!(anon("src -u 7 192.0.2.0/24", &Req::get("/")));
}

#[test]
fn quoted_patterns() {
    let r = Req::get("/").hdr("User-Agent", "Mozilla/5.0 (X11; Linux)");
    assert!(anon(r#"hdr_sub(user-agent) "X11; Linux""#, &r));
    assert!(anon(r"hdr_sub(user-agent) 'X11; Linux'", &r));
    assert!(anon(r"hdr_sub(user-agent) X11;\ Linux", &r));
}

#[test]
fn no_pattern_never_matches() {
    // HAProxy warns and the ACL never matches; '-m found' is what was meant.
    assert!(!anon("path", &Req::get("/")));
    assert!(!anon("hdr(host)", &Req::get("/").hdr("Host", "a")));
}

// --- conditions --------------------------------------------------------------------------

#[test]
fn same_name_lines_are_ored() {
    let c = cond(
        &[
            "static path_beg /static",
            "static path_end .css",
            "api path_beg /api",
        ],
        "if static",
    );
    assert!(c.eval(&Req::get("/static/x")));
    assert!(c.eval(&Req::get("/x/y.css")));
    assert!(!c.eval(&Req::get("/api/y")));
}

#[test]
fn same_name_ored_across_different_fetches() {
    let c = cond(
        &[
            "read method GET",
            "read method HEAD",
            "write method PUT POST",
        ],
        "if read",
    );
    assert!(c.eval(&Req::get("/")));
    assert!(c.eval(&Req::get("/").method("HEAD")));
    assert!(!c.eval(&Req::get("/").method("POST")));
}

#[test]
fn juxtaposition_is_and() {
    let c = cond(&["a path_beg /a", "tls ssl_fc"], "if a tls");
    assert!(c.eval(&Req::get("/a").tls(None)));
    assert!(!c.eval(&Req::get("/a")));
    assert!(!c.eval(&Req::get("/b").tls(None)));
}

#[test]
fn or_and_pipes() {
    let acls = ["a path /a", "b path /b"];
    for text in ["if a or b", "if a || b", "if a OR b"] {
        let c = cond(&acls, text);
        assert!(c.eval(&Req::get("/a")), "{text}");
        assert!(c.eval(&Req::get("/b")), "{text}");
        assert!(!c.eval(&Req::get("/c")), "{text}");
    }
}

#[test]
fn and_binds_tighter_than_or() {
    // a b or c  ==  (a AND b) OR c
    let acls = ["a path_beg /a", "b hdr(x-b) 1", "c method DELETE"];
    let c = cond(&acls, "if a b or c");
    assert!(c.eval(&Req::get("/a").hdr("x-b", "1")));
    assert!(!c.eval(&Req::get("/a")));
    assert!(c.eval(&Req::get("/z").method("DELETE")));
    // a or b c  ==  a OR (b AND c)
    let c = cond(&acls, "if a or b c");
    assert!(c.eval(&Req::get("/a")));
    assert!(!c.eval(&Req::get("/z").hdr("x-b", "1")));
    assert!(c.eval(&Req::get("/z").hdr("x-b", "1").method("DELETE")));
}

#[test]
fn negation_forms() {
    let acls = ["a path /a"];
    for text in ["if !a", "if ! a", "if !!!a"] {
        let c = cond(&acls, text);
        assert!(!c.eval(&Req::get("/a")), "{text}");
        assert!(c.eval(&Req::get("/b")), "{text}");
    }
    let c = cond(&acls, "if !!a");
    assert!(c.eval(&Req::get("/a")));
}

#[test]
fn negation_binds_to_one_term_only() {
    let c = cond(&["a path_beg /a", "tls ssl_fc"], "if !a tls");
    assert!(c.eval(&Req::get("/b").tls(None)));
    assert!(!c.eval(&Req::get("/b")));
    assert!(!c.eval(&Req::get("/a").tls(None)));
}

#[test]
fn unless_inverts() {
    let c = cond(&["a path /a"], "unless a");
    assert!(!c.eval(&Req::get("/a")));
    assert!(c.eval(&Req::get("/b")));
    assert!(c.is_unless());
    let c = cond(&["a path /a", "b path /b"], "unless a or b");
    assert!(!c.eval(&Req::get("/b")));
    assert!(c.eval(&Req::get("/c")));
}

#[test]
fn anonymous_acl() {
    let c = cond(&[], "if { path -i -m beg /admin }");
    assert!(c.eval(&Req::get("/Admin/x")));
    assert!(!c.eval(&Req::get("/user")));
}

#[test]
fn negated_anonymous_acl() {
    for text in ["if !{ ssl_fc }", "if ! { ssl_fc }"] {
        let c = cond(&[], text);
        assert!(c.eval(&Req::get("/")), "{text}");
        assert!(!c.eval(&Req::get("/").tls(None)), "{text}");
    }
}

#[test]
fn anonymous_mixed_with_named_and_or() {
    let c = cond(
        &["api path_beg /api"],
        "if api { method POST } || { src 10.0.0.0/8 } !{ ssl_fc }",
    );
    assert!(c.eval(&Req::get("/api").method("POST")));
    assert!(!c.eval(&Req::get("/api")));
    assert!(c.eval(&Req::get("/x").src("10.0.0.1")));
    assert!(!c.eval(&Req::get("/x").src("10.0.0.1").tls(None)));
}

#[test]
fn predefined_acls() {
    assert!(cond(&[], "if TRUE").eval(&Req::get("/")));
    assert!(!cond(&[], "if FALSE").eval(&Req::get("/")));
    assert!(cond(&[], "if METH_GET").eval(&Req::get("/").method("HEAD")));
    assert!(!cond(&[], "if METH_POST").eval(&Req::get("/")));
    assert!(cond(&[], "if HTTP").eval(&Req::get("/")));
    assert!(cond(&[], "if HTTP_1.1").eval(&Req::get("/")));
    assert!(!cond(&[], "if HTTP_2.0").eval(&Req::get("/")));
    assert!(cond(&[], "if HTTP_URL_ABS").eval(&Req::get("http://h/x")));
    assert!(cond(&[], "if HTTP_URL_SLASH").eval(&Req::get("/x")));
    assert!(cond(&[], "if HTTP_URL_STAR").eval(&Req::get("*").method("OPTIONS")));
    let body = Req::get("/").hdr("Content-Length", "3");
    assert!(cond(&[], "if HTTP_CONTENT").eval(&body));
    assert!(!cond(&[], "if HTTP_CONTENT").eval(&Req::get("/")));
}

#[test]
fn user_acl_overrides_predefined_name() {
    let c = cond(&["TRUE path /never"], "if TRUE");
    assert!(!c.eval(&Req::get("/")));
}

#[test]
fn compiled_condition_keeps_its_snapshot() {
    let mut set = AclSet::default();
    set.define("a path /a").expect("define");
    let c = Condition::compile("if a", &set).expect("compile");
    set.define("a path /b").expect("define");
    assert!(!c.eval(&Req::get("/b")));
    let c2 = Condition::compile("if a", &set).expect("compile");
    assert!(c2.eval(&Req::get("/b")));
}

#[test]
fn acl_set_helpers() {
    let mut set = AclSet::default();
    set.define("b nbsrv(pool) gt 0").expect("define");
    set.define("a path /a").expect("define");
    set.define("a path /aa").expect("define");
    assert_eq!(set.names(), vec!["a", "b"]);
    assert_eq!(set.len(), 2);
    assert!(set.contains("a") && !set.contains("TRUE"));
    assert_eq!(set.nbsrv_backends(), vec!["pool"]);
    assert_eq!(set.eval_named("a", &Req::get("/aa")), Some(true));
    assert_eq!(set.eval_named("TRUE", &Req::get("/")), Some(true));
    assert_eq!(set.eval_named("nope", &Req::get("/")), None);
    let c = Condition::compile("if a b or { path /x } a", &set).expect("compile");
    assert_eq!(c.acl_names(), vec!["a", "b"]);
}

#[test]
fn seed_design_examples() {
    // From DESIGN.md's reference config.
    let acls = [
        "app1 path_end -i /app1",
        "is_myapp hdr_beg(host) myapp uat-myapp",
    ];
    let c = cond(&acls, "if app1");
    assert!(c.eval(&Req::get("/x/APP1")));
    let c = cond(&acls, "if is_myapp");
    assert!(c.eval(&Req::get("/").hdr("Host", "myapp.example.com")));
    assert!(c.eval(&Req::get("/").hdr("Host", "uat-myapp.example.com")));
    assert!(!c.eval(&Req::get("/").hdr("Host", "other.example.com")));
}

// --- errors and offsets ------------------------------------------------------------------

#[test]
fn error_unknown_acl_in_condition() {
    let e = compile_err(&["a path /a"], "if a or nope");
    assert_eq!(e.offset, 8);
    assert!(e.message.contains("nope"), "{}", e.message);
    let e = compile_err(&[], "if !missing");
    assert_eq!(e.offset, 4);
    let e = compile_err(&["a path /a", "b path /b"], "if a && b");
    assert_eq!(e.offset, 5);
    assert!(e.message.contains("AND is implicit"), "{}", e.message);
}

#[test]
fn error_unknown_fetch() {
    let e = define_err("x pth /a");
    assert_eq!(e.offset, 2);
    assert!(e.message.contains("pth"), "{}", e.message);
    let e = compile_err(&[], "if { pathx /a }");
    assert_eq!(e.offset, 5);
}

#[test]
fn error_bad_regex() {
    let e = define_err("x path_reg ok ^/(unclosed");
    assert_eq!(e.offset, 14);
    assert!(e.message.contains("regex"), "{}", e.message);
    let e = compile_err(&[], "unless { hdr_reg(host) -i [z-a] }");
    assert_eq!(e.offset, 26);
}

#[test]
fn error_bad_cidr() {
    assert_eq!(define_err("x src 10.0.0.0/33").offset, 6);
    assert_eq!(define_err("x src 10.0.0.0/8 2001:db8::/129").offset, 17);
    assert_eq!(define_err("x src 10.0.0.300").offset, 6);
    assert_eq!(define_err("x src  not-an-ip").offset, 7);
    assert_eq!(define_err("x src 10.0.0.0/255.0.256.0").offset, 6);
    // Non-contiguous dotted masks are valid, as in HAProxy.
    assert!(anon(
        "src 10.0.0.5/255.0.0.255",
        &Req::get("/").src("10.7.7.5")
    ));
}

#[test]
fn error_bad_integer() {
    let e = define_err("x nbsrv(app) gt two");
    assert_eq!(e.offset, 16);
    assert_eq!(define_err("x nbsrv(app) 5:1").offset, 13);
    assert_eq!(define_err("x hdr_cnt(host) 1x").offset, 16);
}

#[test]
fn error_unknown_flag_and_method() {
    let e = define_err("x path -z /a");
    assert_eq!(e.offset, 7);
    assert!(e.message.contains("--"), "{}", e.message);
    let e = define_err("x path -m nope /a");
    assert_eq!(e.offset, 10);
    let e = define_err("x path -m");
    assert_eq!(e.offset, 7);
    // A method the sample type cannot be cast to.
    assert_eq!(define_err("x src -m int 3").offset, 9);
    assert_eq!(define_err("x path -m bool").offset, 10);
}

#[test]
fn error_fetch_arguments() {
    assert_eq!(define_err("x hdr /a").offset, 2);
    assert_eq!(define_err("x hdr(host /a").offset, 2);
    assert_eq!(define_err("x path(foo) /a").offset, 2);
    assert_eq!(define_err("x nbsrv() 1").offset, 2);
    assert_eq!(define_err("x hdr(host,abc) a").offset, 2);
    let e = define_err("x hdr(host),sha1 a");
    assert!(e.message.contains("converter"), "{}", e.message);
    assert_eq!(e.offset, 2);
    assert_eq!(define_err("x nbsrv(b),lower 1").offset, 2);
    assert_eq!(define_err("x path,lower -m reg ^/a").offset, 2);
}

#[test]
fn error_acl_name_and_shape() {
    assert_eq!(define_err("bad/name path /").offset, 0);
    let e = define_err("lonely");
    assert_eq!(e.offset, 6);
    let e = define_err("");
    assert_eq!(e.offset, 0);
    assert_eq!(define_err(r#"  "" path /"#).offset, 2);
    assert!(
        define_err("x path -m bin 00")
            .message
            .contains("not supported")
    );
}

#[test]
fn error_condition_shape() {
    assert_eq!(compile_err(&[], "when TRUE").offset, 0);
    assert_eq!(compile_err(&[], "if").offset, 2);
    assert_eq!(compile_err(&[], "if { path /a").offset, 3);
    assert_eq!(compile_err(&[], "if TRUE }").offset, 8);
    assert_eq!(compile_err(&[], "if or TRUE").offset, 3);
    assert_eq!(compile_err(&[], "if TRUE or").offset, 10);
    assert_eq!(compile_err(&[], "if { }").offset, 3);
    assert_eq!(compile_err(&[], "if REQ_CONTENT").offset, 3);
    // Offsets inside anonymous ACLs are relative to the whole condition text.
    assert_eq!(compile_err(&[], "if TRUE { src 1.2.3.4/40 }").offset, 14);
    assert_eq!(compile_err(&[], r#"if { path "/a }"#).offset, 10);
}

#[test]
fn eval_does_not_reparse_many_times() {
    // A sanity check on the compiled form: a few thousand evaluations are cheap.
    let c = cond(
        &[
            "a path_reg ^/v[0-9]+/",
            "b hdr_dom(host) -i example.com",
            "c src 10.0.0.0/8 2001:db8::/32",
        ],
        "if a b or c !{ ssl_fc }",
    );
    let r = Req::get("/v1/x").hdr("Host", "www.EXAMPLE.com");
    for _ in 0..5000 {
        assert!(c.eval(&r));
    }
}

// --- additions beyond the required set -----------------------------------------------

#[test]
fn lower_upper_converters() {
    let r = Req::get("/").hdr("Host", "WWW.Example.COM");
    assert!(anon("req.hdr(host),lower www.example.com", &r));
    assert!(anon("hdr(host),lower -m end .example.com", &r));
    // A pattern the converter cannot produce never matches (unless -i).
    assert!(!anon("hdr(host),lower WWW.example.com", &r));
    assert!(anon("hdr(host),lower -i WWW.example.com", &r));
    assert!(anon("hdr(host),upper -m beg WWW.EX", &r));
    assert!(anon("path,lower /abc", &Req::get("/ABC")));
    assert!(anon("path,lower -m len 4", &Req::get("/ABC")));
}

#[test]
fn dst_dst_port_src_port() {
    let mut r = Req::get("/");
    assert!(
        !anon("dst_port 443", &r),
        "unknown destination matches nothing"
    );
    r.dst = Some("[2001:db8::1]:443".parse().expect("addr"));
    r.src_port = Some(50000);
    assert!(anon("dst_port 443", &r));
    assert!(anon("dst 2001:db8::/64", &r));
    assert!(anon("src_port ge 1024", &r));
    assert!(!anon("src_port lt 1024", &r));
}

#[test]
fn braces_glued_to_words_get_a_hint() {
    let e = compile_err(&[], "if {path /a }");
    assert_eq!(e.offset, 3);
    assert!(e.message.contains("separated by spaces"), "{}", e.message);
    let e = compile_err(&[], "if !{ path /a}");
    assert!(e.message.contains("missing closing"), "{}", e.message);
}

#[test]
fn escapes_in_patterns() {
    assert!(anon(r"path /a\ b", &Req::get("/a b")));
    // In double quotes `\"` and `\\` are decoded; in single quotes nothing is.
    assert!(anon(r#"path "/x\"y""#, &Req::get(r#"/x"y"#)));
    assert!(anon(r#"path "/x\\y""#, &Req::get(r"/x\y")));
    assert!(anon(r"path '/x\\y'", &Req::get(r"/x\\y")));
    assert!(anon(r"path /\x41", &Req::get("/A")));
    assert!(anon(r"path_sub \#", &Req::get("/a#b")));
}

#[test]
fn url_dir_and_dom() {
    let r = Req::get("http://cdn.example.com/assets/app.js?v=1");
    assert!(anon("url_dom cdn.example.com", &r));
    assert!(anon("url_dir assets", &r));
    assert!(!anon("url_dir asset", &r));
}

#[test]
fn hdr_dir() {
    let r = Req::get("/").hdr("Referer", "https://example.com/shop/cart?x=1");
    assert!(anon("hdr_dir(referer) shop", &r));
    assert!(anon("hdr_dir(referer) cart", &r));
}

#[test]
fn http_false_for_tcp_inputs() {
    let mut r = Req::get("/");
    r.http = false;
    assert!(!cond(&[], "if HTTP").eval(&r));
    assert!(cond(&[], "if !HTTP").eval(&r));
}

#[test]
fn cookies() {
    let r = Req::get("/")
        .hdr("Cookie", "theme=dark; SESSIONID=abc123; lang=fr")
        .hdr("cookie", "SESSIONID=zzz");
    assert!(anon("cook(SESSIONID) abc123", &r));
    assert!(anon("req.cook(SESSIONID) zzz", &r));
    assert!(anon("cook(lang) -m found", &r));
    assert!(
        !anon("cook(sessionid) -m found", &r),
        "cookie names are case-sensitive"
    );
    assert!(anon("cook_beg(theme) da", &r));
    assert!(anon("cook_cnt(SESSIONID) 2", &r));
    assert!(anon("cook_len(lang) 2", &r));
    assert!(!anon("cook(missing) -m found", &r));
}

#[test]
fn url_params() {
    let r = Req::get("/p?user=bob&debug&lang=fr&user=alice");
    assert!(anon("url_param(user) alice", &r));
    assert!(anon("url_param(user) bob", &r));
    assert!(anon("urlp(debug) -m found", &r));
    assert!(anon("urlp(debug) -m len 0", &r));
    assert!(!anon("urlp(missing) -m found", &r));
    assert!(anon("urlp_reg(lang) ^f", &r));
    assert!(anon("url_param(b,;) 2", &Req::get("/p?a=1;b=2")));
    assert!(!anon("url_param(user) bob", &Req::get("/p/user=bob")));
    assert_eq!(define_err("x url_param(a,ab) 1").offset, 2);
}

// ---------------------------------------------------------------------------------------
// Log-format strings (`set-header` values)
// ---------------------------------------------------------------------------------------

fn expand(format: &str, req: &Req) -> String {
    let f = FormatString::compile(format).unwrap_or_else(|e| panic!("{format:?}: {e}"));
    let mut out = String::new();
    f.expand(req, &mut out);
    out
}

fn format_err(format: &str) -> AclError {
    match FormatString::compile(format) {
        Ok(f) => panic!("{format:?} compiled: {f:?}"),
        Err(e) => e,
    }
}

#[test]
fn format_literal_text_and_percent() {
    let f = FormatString::compile("100%% sure ]").expect("compiles");
    assert_eq!(f.as_literal(), Some("100% sure ]"));
    assert_eq!(
        FormatString::compile("").expect("empty").as_literal(),
        Some("")
    );
    let f = FormatString::compile("a %[src] b").expect("compiles");
    assert_eq!(f.as_literal(), None);
    assert_eq!(f.literals().collect::<Vec<_>>(), ["a ", " b"]);
}

#[test]
fn format_expands_the_acl_fetches() {
    let mut r = Req::get("/p/x?q=1&q=2")
        .method("POST")
        .src("2001:db8::7")
        .hdr("Host", "Example.COM")
        .hdr("X-In", "one, two")
        .hdr("x-in", "three")
        .hdr("Cookie", "a=1; a=2");
    r.dst = Some("192.0.2.9:8443".parse().expect("addr"));
    r.src_port = Some(40000);
    assert_eq!(expand("%[src]", &r), "2001:db8::7");
    assert_eq!(
        expand("%[src_port] %[dst]:%[dst_port]", &r),
        "40000 192.0.2.9:8443"
    );
    assert_eq!(
        expand("%[method] %[path] %[url] %[query]", &r),
        "POST /p/x /p/x?q=1&q=2 q=1&q=2"
    );
    assert_eq!(expand("host=%[req.hdr(host)]!", &r), "host=Example.COM!");
    assert_eq!(expand("%[req.hdr(host),lower]", &r), "example.com");
    assert_eq!(expand("%[hdr(host),upper]", &r), "EXAMPLE.COM");
    // HAProxy's sample-fetch context (checked against HAProxy 2.6): the last value of a
    // header, the last cookie, the first query parameter; explicit occurrences as in ACLs.
    assert_eq!(expand("%[hdr(x-in)]", &r), "three");
    assert_eq!(expand("%[req.hdr(x-in,1)]|%[hdr(x-in,-2)]", &r), "one|two");
    assert_eq!(expand("%[hdr_cnt(x-in)]", &r), "3");
    assert_eq!(expand("%[cook(a)]", &r), "2");
    assert_eq!(expand("%[url_param(q)]", &r), "1");
    assert_eq!(expand("%[req.ver] %[ssl_fc]", &r), "1.1 0");
    // No value: nothing (HAProxy sets the header empty).
    assert_eq!(expand("[%[ssl_fc_sni]][%[req.hdr(nope)]]", &r), "[][]");
    let tls = Req::get("/").tls(Some("api.example.com"));
    assert_eq!(expand("%[ssl_fc]:%[ssl_fc_sni]", &tls), "1:api.example.com");
    // Several expressions, literal text, `%%`, and a `]` inside parentheses.
    assert_eq!(
        expand("%%%[method]%%x%[path]]", &Req::get("/a")),
        "%GET%x/a]"
    );
    let r = Req::get("/").hdr("a]b", "v");
    assert_eq!(expand("%[req.hdr(a]b)]", &r), "v");
}

#[test]
fn format_log_variables_known_at_request_time() {
    let mut r = Req::get("/p/x?q=1").method("PUT").src("192.0.2.1");
    r.dst = Some("198.51.100.2:8443".parse().expect("addr"));
    r.src_port = Some(40000);
    assert_eq!(
        expand("%ci:%cp -> %fi:%fp", &r),
        "192.0.2.1:40000 -> 198.51.100.2:8443"
    );
    assert_eq!(expand("%HM %HU %HP", &r), "PUT /p/x?q=1 /p/x");
    assert_eq!(expand("[%ci]%%ci", &r), "[192.0.2.1]%ci");
    // Case converters take the text of any fetch, as HAProxy casts it.
    assert_eq!(expand("%[src_port,lower]|%[method,lower]", &r), "40000|put");
    let v6 = Req::get("/").src("2001:DB8::A");
    assert_eq!(expand("%[src,upper]", &v6), "2001:DB8::A");
}

#[test]
fn format_errors_point_at_the_problem() {
    let e = format_err("x %[src");
    assert_eq!(e.offset, 2);
    assert!(e.message.contains("missing ']'"), "{}", e.message);
    assert_eq!(format_err("%[]").offset, 0);
    let e = format_err("ab%[nope(x)]");
    assert_eq!(
        (e.offset, e.message.as_str()),
        (4, "unknown fetch method 'nope'")
    );
    let e = format_err("%[path_beg]");
    assert!(e.message.contains("'path_beg'"), "{}", e.message);
    let e = format_err("100%");
    assert!(e.message.contains("'%%'"), "{}", e.message);
    assert_eq!(e.offset, 3);
    assert!(format_err("a % b").message.contains("'%%'"));
    let e = format_err("%ST");
    assert!(
        e.message.contains("'%ST' is not supported"),
        "{}",
        e.message
    );
    assert!(format_err("x %cix").message.contains("'%cix'"));
    assert!(format_err("%{+Q}[src]").message.contains("not supported"));
    assert!(format_err("%[src,sha1]").message.contains("sha1"));
    assert!(format_err("%[req.hdr()]").message.contains("header name"));
}

/// Converter chains after any fetch, in ACLs and log-format strings; variables read
/// through the input.
#[test]
fn converter_chains_and_variables() {
    let r = Req::get("/a//b/c").hdr("host", "WWW.Example.COM");
    assert_eq!(expand("%[path,word(2,/),upper]", &r), "B");
    assert_eq!(
        expand("%[req.hdr(host),lower,regsub(^www\\.,)]", &r),
        "example.com"
    );
    assert_eq!(expand("%[path,length]", &r), "7");
    assert_eq!(expand("%[src,ipmask(16)]", &r), "192.0.0.0");
    assert!(anon("req.hdr(host),lower,word(1,.) www", &r));
    assert!(anon("path,field(3,/),length 0", &r));
    assert!(!anon("path,word(9,/) -m found", &r));
    // No variables here: var() has no value.
    assert_eq!(expand("[%[var(txn.x)]]", &r), "[]");
    assert!(!anon("var(txn.x) -m found", &r));
    assert!(define_err("x var(nope.x) 1").message.contains("scope"));
    assert!(
        define_err("x path,sha1 a")
            .message
            .contains("not supported")
    );
}
