//! Splits an ACL line or a condition into words the way HAProxy's configuration parser
//! does, remembering where each word starts so errors can point at it.
//!
//! Rules: blanks separate words; `"…"` quotes with backslash escapes; `'…'` quotes
//! literally; quotes may sit in the middle of a word (`a"b c"` is one word); outside
//! single quotes `\` escapes ` `, `\`, `#`, `"`, `'`, `$`, and `\r`, `\n`, `\t`, `\xHH`
//! (ASCII) are decoded; any other backslash is kept as is (so regexes like `\.` survive);
//! an unquoted, unescaped `#` ends the text (comment).

use super::AclError;

/// One word of the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Token {
    /// The word after quote removal and escape decoding.
    pub text: String,
    /// Byte offset of the word's first character in the original text.
    pub start: usize,
}

/// One word of a HAProxy line, as [`split`] returns it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Word {
    /// The word after quote removal and escape decoding.
    pub text: String,
    /// Byte offset of the word's first character in the split text.
    pub start: usize,
    /// Some part of it was quoted (`"…"` or `'…'`): `"if"` is a word, not a keyword.
    pub quoted: bool,
}

/// The words of a line and, when comments are recognised, the byte offset of the `#` that
/// starts the comment.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Words {
    pub words: Vec<Word>,
    pub comment: Option<usize>,
}

/// HAProxy's word separators (`isspace` in its config parser: ASCII only).
fn is_blank(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\r' | b'\n' | 0x0b | 0x0c)
}

/// THE HAProxy word splitter: the config loader, the ACL lexer and `lb convert` all split
/// lines with it. `comments`: an unquoted, unescaped `#` ends the words (HAProxy's
/// config files, ACL text); lb's TOML directive values keep `#` as a character.
/// Linear in the length of the text. Errors carry the byte offset of the unterminated quote
/// or the bad escape.
pub fn split(text: &str, comments: bool) -> Result<Words, AclError> {
    let bytes = text.as_bytes();
    let mut out = Words::default();
    let mut i = 0;
    let mut cur: Option<Word> = None;
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            c if is_blank(c) => {
                if let Some(t) = cur.take() {
                    out.words.push(t);
                }
                i += 1;
            }
            b'#' if comments => {
                out.comment = Some(i);
                break;
            }
            b'\'' => {
                let tok = open(&mut cur, i);
                tok.quoted = true;
                let Some(rel) = text[i + 1..].find('\'') else {
                    return Err(AclError {
                        message: "unterminated single quote".into(),
                        offset: i,
                    });
                };
                tok.text.push_str(&text[i + 1..i + 1 + rel]);
                i += rel + 2;
            }
            b'"' => {
                let quote_at = i;
                let tok = open(&mut cur, i);
                tok.quoted = true;
                i += 1;
                loop {
                    let Some(&b) = bytes.get(i) else {
                        return Err(AclError {
                            message: "unterminated double quote".into(),
                            offset: quote_at,
                        });
                    };
                    match b {
                        b'"' => {
                            i += 1;
                            break;
                        }
                        b'\\' => i = escape(text, i, &mut tok.text)?,
                        _ => {
                            let ch_len = utf8_len(b);
                            tok.text.push_str(&text[i..i + ch_len]);
                            i += ch_len;
                        }
                    }
                }
            }
            b'\\' => {
                let tok = open(&mut cur, i);
                i = escape(text, i, &mut tok.text)?;
            }
            _ => {
                let tok = open(&mut cur, i);
                let ch_len = utf8_len(c);
                tok.text.push_str(&text[i..i + ch_len]);
                i += ch_len;
            }
        }
    }
    if let Some(t) = cur.take() {
        out.words.push(t);
    }
    Ok(out)
}

/// The word being built, started at `i` if there is none.
fn open(cur: &mut Option<Word>, i: usize) -> &mut Word {
    cur.get_or_insert_with(|| Word {
        text: String::new(),
        start: i,
        quoted: false,
    })
}

/// Splits ACL text (`#` starts a comment) into words.
pub(crate) fn tokenize(text: &str) -> Result<Vec<Token>, AclError> {
    Ok(split(text, true)?
        .words
        .into_iter()
        .map(|w| Token {
            text: w.text,
            start: w.start,
        })
        .collect())
}

/// Length of the UTF-8 sequence starting with `b` (the input is a `&str`, so it is valid).
fn utf8_len(b: u8) -> usize {
    match b {
        0x00..=0x7f => 1,
        0xc0..=0xdf => 2,
        0xe0..=0xef => 3,
        _ => 4,
    }
}

/// Decodes the escape starting at the backslash at `i` as HAProxy's config parser does
/// (`\ `, `\\`, `\#`, quotes, `\$`, `\r`, `\n`, `\t`, `\xHH`; any other, such as a regex
/// back-reference `\1`, is kept as written); returns the index after it.
pub(crate) fn escape(text: &str, i: usize, out: &mut String) -> Result<usize, AclError> {
    let bytes = text.as_bytes();
    let Some(&next) = bytes.get(i + 1) else {
        out.push('\\');
        return Ok(i + 1);
    };
    match next {
        b' ' | b'\\' | b'#' | b'"' | b'\'' | b'$' => {
            out.push(next as char);
            Ok(i + 2)
        }
        b'r' => {
            out.push('\r');
            Ok(i + 2)
        }
        b'n' => {
            out.push('\n');
            Ok(i + 2)
        }
        b't' => {
            out.push('\t');
            Ok(i + 2)
        }
        b'x' => {
            let hex = text
                .get(i + 2..i + 4)
                .and_then(|h| u8::from_str_radix(h, 16).ok());
            match hex {
                Some(v) if v < 0x80 && text.is_char_boundary(i + 4) => {
                    out.push(v as char);
                    Ok(i + 4)
                }
                _ => Err(AclError {
                    message: "invalid '\\x' escape (two hex digits of an ASCII byte expected)"
                        .into(),
                    offset: i,
                }),
            }
        }
        _ => {
            // Unknown escape: keep the backslash, the next character is read normally.
            out.push('\\');
            Ok(i + 1)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<(String, usize)> {
        tokenize(s)
            .expect("tokenizes")
            .into_iter()
            .map(|t| (t.text, t.start))
            .collect()
    }

    #[test]
    fn splits_and_tracks_offsets() {
        assert_eq!(
            words("if  a !b"),
            vec![("if".into(), 0), ("a".into(), 4), ("!b".into(), 6)]
        );
    }

    #[test]
    fn quotes_and_escapes() {
        assert_eq!(words(r#"x "a b" 'c\d'"#)[1], ("a b".into(), 2));
        assert_eq!(words(r#"x "a b" 'c\d'"#)[2], (r"c\d".into(), 8));
        assert_eq!(
            words(r"a\ b \.css"),
            vec![("a b".into(), 0), (r"\.css".into(), 5)]
        );
        assert_eq!(words(r"ab\x41"), vec![("abA".into(), 0)]);
        assert_eq!(
            words(r#"pre"mid dle"post"#),
            vec![("premid dlepost".into(), 0)]
        );
        assert_eq!(words("a # comment"), vec![("a".into(), 0)]);
        assert_eq!(words("é ü"), vec![("é".into(), 0), ("ü".into(), 3)]);
    }

    #[test]
    fn unterminated_quote_points_at_quote() {
        let e = tokenize(r#"path "abc"#).expect_err("unterminated");
        assert_eq!(e.offset, 5);
        let e = tokenize("path 'abc").expect_err("unterminated");
        assert_eq!(e.offset, 5);
        let e = tokenize(r"a \xZZ").expect_err("bad escape");
        assert_eq!(e.offset, 2);
    }
}
