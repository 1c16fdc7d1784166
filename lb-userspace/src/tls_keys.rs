//! HAProxy's `tls-ticket-keys` file: one base64 key per line, each 48 bytes (a 16-byte
//! key name, a 16-byte HMAC secret, a 16-byte AES-128 key) or 80 bytes (16-byte name,
//! 32-byte HMAC secret, 32-byte AES-256 key), all of one size, at least
//! [`MIN_KEYS`] of them. As in HAProxy, the last [`MIN_KEYS`] keys decrypt tickets and the
//! penultimate one encrypts new tickets: appending a key (and reloading) rotates them, and
//! tickets made with the previous encryption key stay valid for two more rotations.
//! Blank lines are skipped. The file is read by `config` (to report problems at load) and
//! by the L7 tier (to build the ticketer); this module only parses.

use std::path::Path;

use base64::Engine;

/// Keys HAProxy uses (`TLS_TICKETS_NO`): the file needs at least that many.
pub const MIN_KEYS: usize = 3;

/// Length of a key name.
pub const NAME_LEN: usize = 16;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TicketKeysError {
    #[error("cannot read: {0}")]
    Read(String),
    #[error("line {line}: not base64")]
    Base64 { line: usize },
    #[error("line {line}: a key is 48 or 80 bytes once decoded, this one is {len}")]
    Size { line: usize, len: usize },
    #[error("line {line}: a {len}-byte key among {first}-byte keys (all keys must have one size)")]
    Mixed {
        line: usize,
        len: usize,
        first: usize,
    },
    #[error("{found} key(s); at least {MIN_KEYS} are needed (the last {MIN_KEYS} are used)")]
    TooFew { found: usize },
}

/// One ticket key.
#[derive(Clone, PartialEq, Eq)]
pub struct TicketKey {
    pub name: [u8; NAME_LEN],
    pub hmac: Vec<u8>,
    /// 16 bytes (AES-128) or 32 (AES-256).
    pub aes: Vec<u8>,
}

impl std::fmt::Debug for TicketKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secrets.
        f.debug_struct("TicketKey")
            .field("aes_bits", &(self.aes.len() * 8))
            .finish_non_exhaustive()
    }
}

/// The keys in use: the last [`MIN_KEYS`] of the file, oldest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TicketKeys {
    pub keys: Vec<TicketKey>,
}

impl TicketKeys {
    /// The key new tickets are encrypted with (the penultimate of the file).
    pub fn encrypting(&self) -> &TicketKey {
        &self.keys[self.keys.len() - 2]
    }
}

/// Parses the file's text.
pub fn parse(text: &str) -> Result<TicketKeys, TicketKeysError> {
    let mut keys: Vec<TicketKey> = Vec::new();
    let mut first_len = None;
    for (i, line) in text.lines().enumerate() {
        let line_no = i + 1;
        let l = line.trim();
        if l.is_empty() {
            continue;
        }
        let raw = base64::engine::general_purpose::STANDARD
            .decode(l)
            .map_err(|_| TicketKeysError::Base64 { line: line_no })?;
        let half = match raw.len() {
            48 => 16,
            80 => 32,
            len => return Err(TicketKeysError::Size { line: line_no, len }),
        };
        match first_len {
            None => first_len = Some(raw.len()),
            Some(first) if first != raw.len() => {
                return Err(TicketKeysError::Mixed {
                    line: line_no,
                    len: raw.len(),
                    first,
                });
            }
            Some(_) => {}
        }
        let mut name = [0u8; NAME_LEN];
        name.copy_from_slice(&raw[..NAME_LEN]);
        keys.push(TicketKey {
            name,
            hmac: raw[NAME_LEN..NAME_LEN + half].to_vec(),
            aes: raw[NAME_LEN + half..].to_vec(),
        });
    }
    if keys.len() < MIN_KEYS {
        return Err(TicketKeysError::TooFew { found: keys.len() });
    }
    let keep = keys.split_off(keys.len() - MIN_KEYS);
    Ok(TicketKeys { keys: keep })
}

/// Reads and parses a key file.
pub fn load(path: &Path) -> Result<TicketKeys, TicketKeysError> {
    let text = std::fs::read_to_string(path).map_err(|e| TicketKeysError::Read(e.to_string()))?;
    parse(&text)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(fill: u8, len: usize) -> String {
        base64::engine::general_purpose::STANDARD.encode(vec![fill; len])
    }

    #[test]
    fn last_three_used_penultimate_encrypts() {
        let text = [1u8, 2, 3, 4]
            .iter()
            .map(|b| line(*b, 48))
            .collect::<Vec<_>>()
            .join("\n");
        let k = parse(&format!("{text}\n\n")).expect("keys");
        assert_eq!(k.keys.len(), 3);
        assert_eq!(k.keys[0].name, [2u8; 16]);
        assert_eq!(k.encrypting().name, [3u8; 16]);
        assert_eq!(k.encrypting().hmac.len(), 16);
        assert_eq!(k.encrypting().aes.len(), 16);
        let k = parse(&[line(7, 80), line(8, 80), line(9, 80)].join("\r\n")).expect("keys");
        assert_eq!(k.encrypting().aes, vec![8u8; 32]);
        assert_eq!(k.encrypting().hmac.len(), 32);
    }

    #[test]
    fn bad_files() {
        assert_eq!(
            parse(&[line(1, 48), line(2, 48)].join("\n")),
            Err(TicketKeysError::TooFew { found: 2 })
        );
        assert_eq!(
            parse(&[line(1, 48), "***".into()].join("\n")),
            Err(TicketKeysError::Base64 { line: 2 })
        );
        assert_eq!(
            parse(&line(1, 47)),
            Err(TicketKeysError::Size { line: 1, len: 47 })
        );
        assert_eq!(
            parse(&[line(1, 48), line(2, 80)].join("\n")),
            Err(TicketKeysError::Mixed {
                line: 2,
                len: 80,
                first: 48
            })
        );
        assert!(matches!(
            load(Path::new("/nonexistent/keys")),
            Err(TicketKeysError::Read(_))
        ));
    }
}
