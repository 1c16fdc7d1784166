//! `[cache.NAME]` sections (HAProxy's `cache`), the `cache-use` / `cache-store` references
//! to them, and `compression` placement.

use super::*;

impl Builder<'_> {
    /// Every `[cache.NAME]`, validated, in file order.
    pub(super) fn caches(&mut self, raw: &super::super::raw::Sections<RawCache>) -> Vec<CacheSpec> {
        let mut out: Vec<CacheSpec> = Vec::new();
        for (name, sect) in &raw.0 {
            let n = name.get_ref();
            let path = format!("cache.{n}");
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':'))
            {
                self.err(
                    name.span().start,
                    &path,
                    format!("invalid name `{n}`: use letters, digits, `-`, `_`, `.` and `:`"),
                );
            }
            let rc = sect.get_ref();
            // HAProxy: total-max-size in megabytes, at most 4095.
            let total = match &rc.total_max_size {
                Some(_) => self.int_in(
                    &rc.total_max_size,
                    &format!("{path}.total_max_size"),
                    1..=4095u64,
                ),
                None => {
                    self.err(
                        sect.span().start,
                        &format!("{path}.total_max_size"),
                        "a cache needs `total_max_size` (in MiB, 1 to 4095)",
                    );
                    None
                }
            };
            let total_bytes = total.unwrap_or(1) << 20;
            let max_object = self
                .int_in(
                    &rc.max_object_size,
                    &format!("{path}.max_object_size"),
                    1..=u64::MAX,
                )
                .unwrap_or(total_bytes / 256);
            if let Some(v) = &rc.max_object_size
                && max_object > total_bytes / 2
            {
                self.err(
                    v.span().start,
                    &format!("{path}.max_object_size"),
                    format!(
                        "max_object_size ({max_object} bytes) must not be more than half of total_max_size ({} bytes)",
                        total_bytes / 2
                    ),
                );
            }
            let max_age = self
                .int_in(&rc.max_age, &format!("{path}.max_age"), 0..=u32::MAX)
                .unwrap_or(60);
            let process_vary = match &rc.process_vary {
                None => false,
                Some(v) => match v.get_ref() {
                    toml::Value::Boolean(b) => *b,
                    toml::Value::String(s) if s == "on" => true,
                    toml::Value::String(s) if s == "off" => false,
                    _ => {
                        self.err(
                            v.span().start,
                            &format!("{path}.process_vary"),
                            "process_vary is true, false, \"on\" or \"off\"",
                        );
                        false
                    }
                },
            };
            let max_secondary_entries = self
                .int_in(
                    &rc.max_secondary_entries,
                    &format!("{path}.max_secondary_entries"),
                    1..=4096usize,
                )
                .unwrap_or(10);
            if out.iter().any(|c| &c.name == n) {
                self.err(
                    name.span().start,
                    &path,
                    format!("duplicate cache name `{n}`"),
                );
                continue;
            }
            out.push(CacheSpec {
                name: n.clone(),
                total_max_size: total_bytes,
                max_object_size: max_object,
                max_age,
                process_vary,
                max_secondary_entries,
            });
        }
        out
    }

    /// Every `cache-use` / `cache-store` names a `[cache.NAME]`.
    pub(super) fn cache_refs(&mut self, fes: &[FeDraft], bes: &[BeDraft], caches: &[CacheSpec]) {
        let mut missing: Vec<(String, String)> = Vec::new();
        let mut check = |rules: &[&[HttpRule]], path: &str| {
            for r in rules.iter().flat_map(|l| l.iter()) {
                if let HttpAction::CacheUse(n) | HttpAction::CacheStore(n) = &r.action
                    && !caches.iter().any(|c| &c.name == n)
                {
                    missing.push((path.to_string(), n.clone()));
                }
            }
        };
        for f in fes {
            check(&[&f.fe.http_request, &f.fe.http_response], &f.path);
        }
        for b in bes {
            check(&[&b.be.http_request, &b.be.http_response], &b.path);
        }
        for (path, n) in missing {
            let names: Vec<&str> = caches.iter().map(|c| c.name.as_str()).collect();
            let h = hint(&n, names.iter().copied());
            self.err(
                0,
                &path,
                format!("no [cache.{n}] section for cache-use / cache-store `{n}`{h}"),
            );
        }
    }

    /// A section's `compression`, which needs `mode http`.
    pub(super) fn http_only_compression(
        &mut self,
        rp: &RawProxy,
        path: &str,
        st: &Inherit,
    ) -> Option<Compression> {
        if st.mode == Mode::Tcp {
            if let Some(c) = &rp.compression {
                self.err(
                    c.span().start,
                    &format!("{path}.compression"),
                    "compression needs mode http",
                );
            }
            return None;
        }
        st.compression.clone()
    }
}
