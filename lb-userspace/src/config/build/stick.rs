//! `stick_table` (HAProxy's `stick-table`) and the checks of the tables rules name.

use super::*;

impl Builder<'_> {
    /// The section's own stick table, if it declares one.
    pub(super) fn stick_table(&mut self, rp: &RawProxy, path: &str) -> Option<StickTableSpec> {
        let s = rp.stick_table.as_ref()?;
        let ipath = format!("{path}.stick_table");
        let text = self.src.str(s);
        let toks = match tokenize(&text) {
            Ok(t) => t,
            Err(p) => {
                self.problem(p, &ipath);
                return None;
            }
        };
        let end = text.pos(text.value.trim_end().len());
        match d::stick_table(&mut Args::new(&toks, end)) {
            Ok(t) => Some(t),
            Err(p) => {
                self.problem(p, &ipath);
                None
            }
        }
    }

    /// Records the stick tables a rule of section `path` reads or tracks (`None`: the
    /// section's own), to check once every section is known.
    pub(super) fn stick_refs(
        &mut self,
        action: &HttpAction,
        cond: Option<&Condition>,
        at: usize,
        path: &str,
    ) {
        let own = path.split_once('.').map_or(path, |(_, n)| n);
        let mut named: Vec<String> = Vec::new();
        if let HttpAction::TrackSc { table, key, .. } = action {
            named.push(table.clone().unwrap_or_else(|| own.to_owned()));
            if let Ok(k) = key.compiled()
                && let Some(t) = k.stick_table()
            {
                named.push(t.to_owned());
            }
        }
        if let Some(c) = cond {
            named.extend(c.stick_tables().into_iter().map(str::to_owned));
            if c.uses_own_stick_table() {
                named.push(own.to_owned());
            }
        }
        for n in named {
            self.stick_refs.push((n, at, path.to_owned()));
        }
    }

    /// Every table named exists, and no two sections declare one of the same name.
    pub(super) fn check_stick_tables(&mut self, fes: &[FeDraft], bes: &[BeDraft]) {
        let mut tables: Vec<(&str, &str)> = Vec::new();
        for (name, path, pos, t) in fes
            .iter()
            .map(|f| (&f.fe.name, &f.path, f.name_pos, &f.fe.stick_table))
            .chain(
                bes.iter()
                    .map(|b| (&b.be.name, &b.path, b.name_pos, &b.be.stick_table)),
            )
        {
            if t.is_none() {
                continue;
            }
            if let Some((_, other)) = tables.iter().find(|(n, _)| *n == name.as_str()) {
                let msg = format!(
                    "stick table `{name}` is declared twice (here and in {other}): a table's name is its section's, and must be unique"
                );
                self.err(pos, &format!("{path}.stick_table"), msg);
                continue;
            }
            tables.push((name, path));
        }
        for (name, pos, path) in std::mem::take(&mut self.stick_refs) {
            if !tables.iter().any(|(n, _)| *n == name) {
                let h = hint(&name, tables.iter().map(|(n, _)| *n));
                self.err(
                    pos,
                    &path,
                    format!(
                        "no stick table `{name}`: no section of that name has a stick_table{h}"
                    ),
                );
            }
        }
    }
}
