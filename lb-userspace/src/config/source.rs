//! The text of a config file: byte offsets to line/column, string values to the source
//! positions of their characters, and HAProxy-style tokenizing with positions.

use std::ops::Range;
use std::path::{Path, PathBuf};

use serde_spanned::Spanned;

use super::diag::{Diagnostic, Severity};

pub(crate) struct Source {
    pub path: PathBuf,
    pub text: String,
    line_starts: Vec<usize>,
}

impl Source {
    pub fn new(path: &Path, text: &str) -> Self {
        let mut line_starts = vec![0];
        for (i, b) in text.bytes().enumerate() {
            if b == b'\n' {
                line_starts.push(i + 1);
            }
        }
        Self {
            path: path.to_path_buf(),
            text: text.to_string(),
            line_starts,
        }
    }

    /// 1-based line and character column of a byte offset.
    pub fn line_col(&self, pos: usize) -> (usize, usize) {
        let pos = pos.min(self.text.len());
        let line = match self.line_starts.binary_search(&pos) {
            Ok(i) => i,
            Err(i) => i - 1,
        };
        let start = self.line_starts[line];
        let col = self
            .text
            .get(start..pos)
            .map_or(pos - start, |s| s.chars().count());
        (line + 1, col + 1)
    }

    pub fn diag(&self, severity: Severity, pos: usize, path: &str, message: String) -> Diagnostic {
        let (line, col) = self.line_col(pos);
        Diagnostic {
            severity,
            file: self.path.clone(),
            line,
            col,
            path: path.to_string(),
            message,
        }
    }

    /// A string value with the mapping from its characters to source positions.
    pub fn str(&self, s: &Spanned<String>) -> Str {
        self.str_at(s.get_ref(), s.span())
    }

    /// A string value located at `span` (quotes included).
    pub fn str_at(&self, value: &str, span: Range<usize>) -> Str {
        let raw = self.text.get(span.clone()).unwrap_or("");
        let quote = if raw.starts_with("\"\"\"") || raw.starts_with("'''") {
            3
        } else if raw.starts_with('"') || raw.starts_with('\'') {
            1
        } else {
            0
        };
        let start = span.start + quote;
        let linear = self.text.get(start..start + value.len()) == Some(value);
        Str {
            value: value.to_string(),
            span,
            start: if linear { Some(start) } else { None },
        }
    }
}

/// A string value from the file.
#[derive(Debug, Clone)]
pub(crate) struct Str {
    pub value: String,
    /// Whole value, quotes included.
    pub span: Range<usize>,
    /// Source position of `value[0]` when characters map one to one (no escapes).
    start: Option<usize>,
}

impl Str {
    /// Whether characters map one to one onto the source (no escapes).
    pub fn linear(&self) -> bool {
        self.start.is_some()
    }

    /// Source position of byte `off` of the value.
    pub fn pos(&self, off: usize) -> usize {
        match self.start {
            Some(s) => s + off.min(self.value.len()),
            None => self.span.start,
        }
    }
}

/// One word of a directive.
#[derive(Debug, Clone)]
pub(crate) struct Tok {
    /// Unquoted text.
    pub text: String,
    /// Source position of its first character.
    pub pos: usize,
    /// Byte offset in the directive string (for slicing conditions off lines).
    pub off: usize,
}

/// A problem at a source position.
#[derive(Debug, Clone)]
pub(crate) struct Problem {
    pub pos: usize,
    pub msg: String,
}

impl Problem {
    pub fn new(pos: usize, msg: impl Into<String>) -> Self {
        Self {
            pos,
            msg: msg.into(),
        }
    }
}

/// Splits a directive value into words with HAProxy's splitter ([`crate::acl::split_words`]):
/// blanks separate, `"…"` and `'…'` quote, backslash escapes as in HAProxy (outside single
/// quotes; an unknown escape such as `\1` is kept). A `#` is a character here (TOML has its
/// own comments).
pub(crate) fn tokenize(s: &Str) -> Result<Vec<Tok>, Problem> {
    let words = crate::acl::split_words(&s.value, false)
        .map_err(|e| Problem::new(s.pos(e.offset), e.message))?;
    Ok(words
        .words
        .into_iter()
        .map(|w| Tok {
            text: w.text,
            pos: s.pos(w.start),
            off: w.start,
        })
        .collect())
}

/// The dotted key path of the deepest key or value containing `pos` (for parser errors).
pub(crate) fn key_path_at(text: &str, pos: usize) -> String {
    let Ok(doc) = toml_edit::ImDocument::parse(text) else {
        return String::new();
    };
    let mut path = Vec::new();
    find_in_table(doc.as_table(), pos, &mut path);
    path.join(".")
}

fn contains(span: Option<Range<usize>>, pos: usize) -> bool {
    span.is_some_and(|s| s.start <= pos && pos < s.end.max(s.start + 1))
}

/// A table or inline table: the key at `pos`, or the entry holding it.
fn find_in_table(t: &dyn toml_edit::TableLike, pos: usize, path: &mut Vec<String>) -> bool {
    for (k, _) in t.iter() {
        let Some((key, item)) = t.get_key_value(k) else {
            continue;
        };
        if contains(key.span(), pos) {
            path.push(k.to_string());
            return true;
        }
        path.push(k.to_string());
        if find_in_item(item, pos, path) {
            return true;
        }
        path.pop();
    }
    false
}

fn find_in_item(item: &toml_edit::Item, pos: usize, path: &mut Vec<String>) -> bool {
    match item {
        toml_edit::Item::Table(t) => find_in_table(t, pos, path),
        toml_edit::Item::ArrayOfTables(a) => {
            for (i, t) in a.iter().enumerate() {
                let n = path.len();
                if find_in_table(t, pos, path) {
                    if let Some(p) = path.get_mut(n.saturating_sub(1)) {
                        p.push_str(&format!("[{i}]"));
                    }
                    return true;
                }
            }
            false
        }
        toml_edit::Item::Value(v) => find_in_value(v, pos, path),
        toml_edit::Item::None => false,
    }
}

fn find_in_value(v: &toml_edit::Value, pos: usize, path: &mut Vec<String>) -> bool {
    match v {
        toml_edit::Value::Array(a) => {
            for (i, e) in a.iter().enumerate() {
                if find_in_value(e, pos, path) {
                    if let Some(last) = path.last_mut()
                        && (!last.contains('[') || e.is_inline_table())
                    {
                        last.push_str(&format!("[{i}]"));
                    }
                    return true;
                }
            }
            contains(a.span(), pos)
        }
        toml_edit::Value::InlineTable(t) => find_in_table(t, pos, path) || contains(t.span(), pos),
        other => contains(other.span(), pos),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &str) -> Str {
        Str {
            value: v.to_string(),
            span: 0..v.len() + 2,
            start: Some(1),
        }
    }

    #[test]
    fn tokenizes_with_positions_and_quotes() {
        let t = tokenize(&s(r#"set-header X-A "a b"  c\ d"#)).expect("tokens");
        let words: Vec<_> = t.iter().map(|t| t.text.as_str()).collect();
        assert_eq!(words, ["set-header", "X-A", "a b", "c d"]);
        assert_eq!(t[1].pos, 12);
        assert!(tokenize(&s("x \"open")).is_err());
    }

    #[test]
    fn line_col_counts_characters() {
        let src = Source::new(Path::new("f"), "a = 1\nbé = \"x\"\n");
        assert_eq!(src.line_col(0), (1, 1));
        assert_eq!(src.line_col(13), (2, 7));
    }

    #[test]
    fn key_paths() {
        let text = "[frontend.web]\nbind = [\"*:80\", \"*:81\"]\n";
        let pos = text.find("*:81").expect("present");
        assert_eq!(key_path_at(text, pos), "frontend.web.bind[1]");
    }
}
