//! TLS session resumption, kept across reloads: stateless tickets (TLS 1.3 and 1.2) and
//! the server-side session cache (TLS 1.2 session IDs, and TLS 1.3 when tickets are off).
//!
//! - Without `tls-ticket-keys`, tickets are sealed with rustls's in-process rotating key
//!   (a new key every 6 hours, the previous one still accepted), one per L7 instance and
//!   kept across reloads.
//! - With `tls-ticket-keys FILE` (HAProxy's format, [`crate::tls_keys`]), tickets use
//!   RFC 5077's recommended construction with the file's keys: `key_name (16) | IV (16) |
//!   AES-CBC(state) | HMAC-SHA256(key_name | IV | ciphertext)`. Nodes given one file
//!   resume each other's sessions; the file is read again on every reload, where
//!   appending a key rotates them.
//! - The cache holds `global.ssl_cache_size` sessions (HAProxy's `tune.ssl.cachesize`),
//!   the oldest evicted first; it is kept across reloads unless its size changes.

use std::path::Path;
use std::sync::{Arc, Mutex};

use aws_lc_rs::cipher::{
    AES_128, AES_256, DecryptionContext, PaddedBlockDecryptingKey, PaddedBlockEncryptingKey,
    UnboundCipherKey,
};
use aws_lc_rs::hmac;
use aws_lc_rs::iv::FixedLength;
use rustls::server::StoresServerSessions;
use rustls::server::{NoServerSessionStorage, ProducesTickets, ServerSessionMemoryCache};

use crate::tls_keys::{self, NAME_LEN, TicketKey, TicketKeysError};

/// Lifetime announced for tickets sealed with file keys, in seconds: HAProxy's
/// `tune.ssl.lifetime` default.
pub const TICKET_LIFETIME: u32 = 300;

const IV_LEN: usize = 16;
const MAC_LEN: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum ResumeError {
    #[error("tls-ticket-keys {path}: {source}")]
    Keys {
        path: String,
        source: TicketKeysError,
    },
    #[error("tls-ticket-keys {path}: unusable key")]
    Key { path: String },
    #[error("cannot create the ticket key: {0}")]
    Ticketer(rustls::Error),
}

/// The resumption state of one L7 instance.
#[derive(Default)]
pub struct Sessions {
    rotating: Mutex<Option<Arc<dyn ProducesTickets>>>,
    cache: Mutex<Option<(usize, Arc<dyn StoresServerSessions>)>>,
}

impl std::fmt::Debug for Sessions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sessions").finish_non_exhaustive()
    }
}

impl Sessions {
    /// The ticketer of a bind: its key file's, else the shared rotating one.
    pub fn ticketer(&self, keys: Option<&Path>) -> Result<Arc<dyn ProducesTickets>, ResumeError> {
        if let Some(path) = keys {
            let shown = path.display().to_string();
            let k = tls_keys::load(path).map_err(|source| ResumeError::Keys {
                path: shown.clone(),
                source,
            })?;
            let keys = k
                .keys
                .iter()
                .map(SealKey::new)
                .collect::<Option<Vec<_>>>()
                .ok_or(ResumeError::Key { path: shown })?;
            return Ok(Arc::new(FileTicketer {
                encrypting: keys.len() - 2,
                keys,
            }));
        }
        let mut r = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = &*r {
            return Ok(t.clone());
        }
        let t = rustls::crypto::aws_lc_rs::Ticketer::new().map_err(ResumeError::Ticketer)?;
        *r = Some(t.clone());
        Ok(t)
    }

    /// The session cache for `size` entries (0: none). The same cache while the size
    /// stays.
    pub fn cache(&self, size: usize) -> Arc<dyn StoresServerSessions> {
        let mut c = self.cache.lock().unwrap_or_else(|p| p.into_inner());
        if let Some((n, cache)) = &*c
            && *n == size
        {
            return cache.clone();
        }
        let cache: Arc<dyn StoresServerSessions> = if size == 0 {
            Arc::new(NoServerSessionStorage {})
        } else {
            ServerSessionMemoryCache::new(size)
        };
        *c = Some((size, cache.clone()));
        cache
    }
}

/// One key of a key file, ready to seal and open.
struct SealKey {
    name: [u8; NAME_LEN],
    hmac: hmac::Key,
    aes: Vec<u8>,
}

impl SealKey {
    fn new(k: &TicketKey) -> Option<Self> {
        // Checked once here so sealing and opening cannot meet a bad key.
        UnboundCipherKey::new(Self::algorithm(&k.aes), &k.aes).ok()?;
        Some(Self {
            name: k.name,
            hmac: hmac::Key::new(hmac::HMAC_SHA256, &k.hmac),
            aes: k.aes.clone(),
        })
    }

    fn algorithm(aes: &[u8]) -> &'static aws_lc_rs::cipher::Algorithm {
        if aes.len() == 32 { &AES_256 } else { &AES_128 }
    }

    fn cipher(&self) -> Option<UnboundCipherKey> {
        UnboundCipherKey::new(Self::algorithm(&self.aes), &self.aes).ok()
    }

    fn seal(&self, plain: &[u8]) -> Option<Vec<u8>> {
        let key = PaddedBlockEncryptingKey::cbc_pkcs7(self.cipher()?).ok()?;
        let mut body = plain.to_vec();
        let ctx = key.encrypt(&mut body).ok()?;
        let iv: &[u8] = (&ctx).try_into().ok()?;
        let mut out = Vec::with_capacity(NAME_LEN + IV_LEN + body.len() + MAC_LEN);
        out.extend_from_slice(&self.name);
        out.extend_from_slice(iv);
        out.extend_from_slice(&body);
        let tag = hmac::sign(&self.hmac, &out);
        out.extend_from_slice(tag.as_ref());
        Some(out)
    }

    fn open(&self, ticket: &[u8]) -> Option<Vec<u8>> {
        let (signed, mac) = ticket.split_at_checked(ticket.len().checked_sub(MAC_LEN)?)?;
        hmac::verify(&self.hmac, signed, mac).ok()?;
        let iv: [u8; IV_LEN] = signed.get(NAME_LEN..NAME_LEN + IV_LEN)?.try_into().ok()?;
        let mut body = signed.get(NAME_LEN + IV_LEN..)?.to_vec();
        let key = PaddedBlockDecryptingKey::cbc_pkcs7(self.cipher()?).ok()?;
        let plain = key
            .decrypt(&mut body, DecryptionContext::Iv128(FixedLength::from(iv)))
            .ok()?;
        Some(plain.to_vec())
    }
}

/// Tickets sealed with a key file's keys.
struct FileTicketer {
    keys: Vec<SealKey>,
    encrypting: usize,
}

impl std::fmt::Debug for FileTicketer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FileTicketer")
            .field("keys", &self.keys.len())
            .finish_non_exhaustive()
    }
}

impl ProducesTickets for FileTicketer {
    fn enabled(&self) -> bool {
        true
    }

    fn lifetime(&self) -> u32 {
        TICKET_LIFETIME
    }

    fn encrypt(&self, plain: &[u8]) -> Option<Vec<u8>> {
        self.keys.get(self.encrypting)?.seal(plain)
    }

    fn decrypt(&self, cipher: &[u8]) -> Option<Vec<u8>> {
        let name = cipher.get(..NAME_LEN)?;
        self.keys
            .iter()
            .rev()
            .filter(|k| k.name[..] == *name)
            .find_map(|k| k.open(cipher))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(fill: u8, half: usize) -> TicketKey {
        TicketKey {
            name: [fill; NAME_LEN],
            hmac: vec![fill.wrapping_add(1); half],
            aes: vec![fill.wrapping_add(2); half],
        }
    }

    fn ticketer(fills: &[u8], half: usize) -> FileTicketer {
        let keys: Vec<SealKey> = fills
            .iter()
            .map(|f| SealKey::new(&key(*f, half)).expect("key"))
            .collect();
        FileTicketer {
            encrypting: keys.len() - 2,
            keys,
        }
    }

    #[test]
    fn seal_and_open_with_rotation() {
        for half in [16, 32] {
            let a = ticketer(&[1, 2, 3], half);
            let t = a.encrypt(b"session state").expect("sealed");
            assert_eq!(
                &t[..NAME_LEN],
                &[2u8; NAME_LEN],
                "the penultimate key seals"
            );
            assert_eq!(a.decrypt(&t).as_deref(), Some(&b"session state"[..]));
            // Two tickets of one state differ (fresh IV).
            assert_ne!(a.encrypt(b"session state"), Some(t.clone()));
            // After one rotation (a key appended) the ticket still opens; after two more,
            // its key is gone.
            assert!(ticketer(&[2, 3, 4], half).decrypt(&t).is_some());
            assert!(ticketer(&[4, 5, 6], half).decrypt(&t).is_none());
        }
    }

    #[test]
    fn tampered_or_short_tickets_are_refused() {
        let a = ticketer(&[1, 2, 3], 16);
        let t = a.encrypt(b"x").expect("sealed");
        for i in 0..t.len() {
            let mut bad = t.clone();
            bad[i] ^= 1;
            assert!(a.decrypt(&bad).is_none(), "byte {i} flipped");
        }
        for n in 0..t.len() {
            assert!(a.decrypt(&t[..n]).is_none());
        }
        // Same names, other secrets: refused by the MAC.
        let mut other = key(2, 16);
        other.hmac = vec![9; 16];
        let b = FileTicketer {
            keys: vec![SealKey::new(&other).expect("key")],
            encrypting: 0,
        };
        assert!(b.decrypt(&t).is_none());
    }

    #[test]
    fn cache_is_kept_while_its_size_stays() {
        let s = Sessions::default();
        let a = s.cache(10);
        assert!(Arc::ptr_eq(&a, &s.cache(10)));
        assert!(!Arc::ptr_eq(&a, &s.cache(20)));
        assert!(!s.cache(0).can_cache());
        let t = s.ticketer(None).expect("ticketer");
        assert!(Arc::ptr_eq(&t, &s.ticketer(None).expect("ticketer")));
    }
}
