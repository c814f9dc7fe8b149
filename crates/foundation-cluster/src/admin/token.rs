//! The admin API's bearer token: where it comes from, how it is kept, how a
//! presented one is compared.
//!
//! A token is at least [`TOKEN_BYTES_MIN`] bytes of text. It is read from a
//! file that group and others cannot read (`--admin-token-file`), or, without
//! one, created in the data directory as [`TOKEN_FILE`] on first start (256
//! bits from the OS CSPRNG, hex, mode 0600, written atomically) and reused
//! after. Its `Debug` never prints it; a presented token is compared in
//! constant time (an HMAC of each under a per-process random key, checked
//! with `verify_slice`).

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// The token file a node creates in its data directory.
pub const TOKEN_FILE: &str = "admin.token";
/// Shortest token accepted, in bytes.
pub const TOKEN_BYTES_MIN: usize = 32;
/// Longest token accepted, in bytes (a header line stays small).
pub const TOKEN_BYTES_MAX: usize = 1024;
/// What the observer's session value is an HMAC of, under the token.
const SESSION_CONTEXT: &[u8] = b"foundation observer session v1";
/// Random bytes in a created token (256 bits; 64 hex characters).
const TOKEN_RANDOM_BYTES: usize = 32;

/// Why there is no token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    /// Too short or too long.
    #[error(
        "the admin token from {from} is {len} bytes; it must be {TOKEN_BYTES_MIN} to {TOKEN_BYTES_MAX} bytes (a created one is 64 hex characters)"
    )]
    BadLength {
        /// Where it came from.
        from: String,
        /// Its length.
        len: usize,
    },
    /// The file is readable by group or others.
    #[error("admin token file {path} has mode {mode:o}; group and others must not read it: run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file could not be read or written.
    #[error("admin token file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No randomness to make a token with.
    #[error("no OS randomness to create an admin token: {0}")]
    Random(String),
}

/// The admin API's bearer token. Cheap to clone; its `Debug` does not print it.
#[derive(Clone)]
pub struct AdminToken(Arc<Inner>);

struct Inner {
    text: String,
    /// A per-token random key, and the token's HMAC under it: a presented
    /// token is compared by its HMAC, in constant time and whatever its length.
    key: [u8; 32],
    tag: Vec<u8>,
    /// The observer's session ([`AdminToken::session`]) and its HMAC.
    session: String,
    session_tag: Vec<u8>,
}

impl fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "AdminToken({} bytes)", self.0.text.len())
    }
}

fn mac(key: &[u8; 32]) -> Hmac<Sha256> {
    Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length")
}

impl AdminToken {
    /// A token from text (surrounding whitespace trimmed), checked for length.
    pub fn new(text: &str, from: &str) -> Result<Self, TokenError> {
        let text = text.trim();
        if text.len() < TOKEN_BYTES_MIN || text.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::BadLength { from: from.to_owned(), len: text.len() });
        }
        let mut key = [0u8; 32];
        getrandom::fill(&mut key).map_err(|e| TokenError::Random(e.to_string()))?;
        let tag = mac(&key).chain_update(text.as_bytes()).finalize().into_bytes().to_vec();
        let session = Hmac::<Sha256>::new_from_slice(text.as_bytes())
            .expect("HMAC takes any key length")
            .chain_update(SESSION_CONTEXT)
            .finalize()
            .into_bytes()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<String>();
        let session_tag = mac(&key).chain_update(session.as_bytes()).finalize().into_bytes().to_vec();
        Ok(Self(Arc::new(Inner { text: text.to_owned(), key, tag, session, session_tag })))
    }

    /// A new random token (256 bits from the OS CSPRNG, as hex).
    pub fn generate() -> Result<Self, TokenError> {
        let mut bytes = [0u8; TOKEN_RANDOM_BYTES];
        getrandom::fill(&mut bytes).map_err(|e| TokenError::Random(e.to_string()))?;
        let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
        Self::new(&hex, "the OS CSPRNG")
    }

    /// Whether `presented` is this token (constant time).
    pub fn matches(&self, presented: &[u8]) -> bool {
        mac(&self.0.key).chain_update(presented).verify_slice(&self.0.tag).is_ok()
    }

    /// The observer's session value (its cookie, set once the browser has
    /// presented the token): an HMAC of the token, so the cookie never
    /// carries the token itself, and a new token ends every session.
    pub fn session(&self) -> &str {
        &self.0.session
    }

    /// Whether `presented` is this token's session (constant time).
    pub fn session_matches(&self, presented: &[u8]) -> bool {
        mac(&self.0.key).chain_update(presented).verify_slice(&self.0.session_tag).is_ok()
    }

    /// The `Authorization` header value that carries it. For clients: never
    /// log or print it.
    pub fn bearer(&self) -> String {
        format!("Bearer {}", self.0.text)
    }

    /// Reads a token file: refused if group or others can read it.
    pub fn from_file(path: &Path) -> Result<Self, TokenError> {
        let file_err = |source| TokenError::File { path: path.to_owned(), source };
        let mode = std::fs::metadata(path).map_err(file_err)?.permissions().mode() & 0o777;
        if mode & 0o077 != 0 {
            return Err(TokenError::Exposed { path: path.to_owned(), mode });
        }
        let text = std::fs::read_to_string(path).map_err(file_err)?;
        Self::new(&text, &format!("{}", path.display()))
    }

    /// The token in `dir`'s [`TOKEN_FILE`], created on first use (0600,
    /// written whole or not at all). Returns it and the file's path.
    pub fn in_data_dir(dir: &Path) -> Result<(Self, PathBuf), TokenError> {
        let path = dir.join(TOKEN_FILE);
        match std::fs::symlink_metadata(&path) {
            Ok(_) => Ok((Self::from_file(&path)?, path)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let token = Self::generate()?;
                crate::server::write_atomically(&path, token.0.text.as_bytes())
                    .map_err(|source| TokenError::File { path: path.clone(), source })?;
                Ok((token, path))
            }
            Err(source) => Err(TokenError::File { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_matches_itself_only_and_never_prints() {
        let t = AdminToken::new(&"a".repeat(40), "test").expect("long enough");
        assert!(t.matches("a".repeat(40).as_bytes()));
        assert!(!t.matches("a".repeat(39).as_bytes()) && !t.matches(b"") && !t.matches("b".repeat(40).as_bytes()));
        assert!(!format!("{t:?}").contains("aaaa"));
        assert!(matches!(AdminToken::new("short", "test"), Err(TokenError::BadLength { len: 5, .. })));
        let session = t.session().to_owned();
        assert_eq!(session.len(), 64);
        assert!(!session.contains("aaaa") && t.session_matches(session.as_bytes()) && !t.session_matches(b"aaaa"));
        assert!(!t.matches(session.as_bytes()), "a session is not the token");
        assert_eq!(AdminToken::new(&"a".repeat(40), "again").expect("ok").session(), session, "sessions outlive a restart");
        assert_ne!(AdminToken::new(&"b".repeat(40), "other").expect("ok").session(), session, "a new token ends them");
        let g = AdminToken::generate().expect("random");
        assert_eq!(g.bearer().len(), "Bearer ".len() + 64);
    }
}
