//! The cluster secret (Erlang's cookie): every node of a cluster shares it,
//! and the handshake proves possession of it without sending it.
//!
//! Where it comes from, first match wins:
//! 1. the node's config ([`SecretSource::resolve`]'s `configured`);
//! 2. the environment variable [`SECRET_ENV`];
//! 3. a secret file (by default `$HOME/.foundation.secret`). If the file does
//!    not exist it is created, with 32 random bytes in hex and mode 0600. An
//!    existing file that group or others can read is refused.
//!
//! A secret is at least [`SECRET_BYTES_MIN`] (32) bytes: the handshake's
//! proofs can be guessed offline against a short one. [`generate`] makes a
//! good one (256 bits from the OS, in hex), as `foundation secret
//! generate` prints it.

use std::fmt;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The environment variable that can hold the secret.
pub const SECRET_ENV: &str = "FOUNDATION_SECRET";
/// Shortest secret accepted, in bytes (what [`generate`] makes is 64).
pub const SECRET_BYTES_MIN: usize = 32;
/// Random bytes in a generated secret (256 bits).
pub const SECRET_RANDOM_BYTES: usize = 32;
/// Longest secret accepted, in bytes.
pub const SECRET_BYTES_MAX: usize = 4096;

/// A cluster secret. Its `Debug` does not print it.
#[derive(Clone, PartialEq, Eq)]
pub struct ClusterSecret(Vec<u8>);

impl fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ClusterSecret({} bytes)", self.0.len())
    }
}

impl ClusterSecret {
    /// A secret from text (trimmed), checked for length.
    pub fn new(text: &str, from: &str) -> Result<Self, SecretError> {
        let text = text.trim();
        if text.len() < SECRET_BYTES_MIN || text.len() > SECRET_BYTES_MAX {
            return Err(SecretError::BadLength { from: from.to_owned(), len: text.len() });
        }
        Ok(Self(text.as_bytes().to_vec()))
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        &self.0
    }
}

/// Why no secret could be had.
#[derive(Debug, thiserror::Error)]
pub enum SecretError {
    /// The secret is too short or too long.
    #[error(
        "the secret from {from} is {len} bytes; a secret must be at least {SECRET_BYTES_MIN} and at most {SECRET_BYTES_MAX} bytes: {}",
        if *len < SECRET_BYTES_MIN { "run `foundation secret generate` to make one" } else { "use a shorter one, e.g. from `foundation secret generate`" }
    )]
    BadLength {
        /// Where it came from.
        from: String,
        /// Its length.
        len: usize,
    },
    /// The secret file is readable by group or others.
    #[error("secret file {path} has mode {mode:o}; group and others must not read it: run `chmod 600 {path}`")]
    Exposed {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The secret file could not be read or created.
    #[error("secret file {path}: {source}")]
    File {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// No randomness to make a secret with.
    #[error("no OS randomness to create a secret: {0}")]
    Random(String),
}

/// Where to look for the secret.
#[derive(Clone, Debug)]
pub struct SecretSource {
    /// The secret given in the node's config, if any.
    pub configured: Option<String>,
    /// The secret file to read, or create if missing.
    pub file: PathBuf,
}

impl SecretSource {
    /// The default file: `$HOME/.foundation.secret` (or `./.foundation.secret`).
    pub fn default_file() -> PathBuf {
        std::env::var_os("HOME").map_or_else(|| PathBuf::from("."), PathBuf::from).join(".foundation.secret")
    }

    /// Resolves the secret: config, then [`SECRET_ENV`], then the file.
    pub fn resolve(&self) -> Result<ClusterSecret, SecretError> {
        if let Some(text) = &self.configured {
            return ClusterSecret::new(text, "the node config");
        }
        if let Ok(text) = std::env::var(SECRET_ENV) {
            return ClusterSecret::new(&text, SECRET_ENV);
        }
        read_or_create(&self.file)
    }
}

/// A new secret: [`SECRET_RANDOM_BYTES`] from the OS's CSPRNG, in lower-case
/// hex (64 characters). What `foundation secret generate` prints.
///
/// ```
/// let text = foundation_cluster::secret::generate()?;
/// assert_eq!(text.len(), 64);
/// foundation_cluster::secret::ClusterSecret::new(&text, "generated")?;
/// # Ok::<(), foundation_cluster::secret::SecretError>(())
/// ```
pub fn generate() -> Result<String, SecretError> {
    let mut raw = [0u8; SECRET_RANDOM_BYTES];
    getrandom::fill(&mut raw).map_err(|e| SecretError::Random(e.to_string()))?;
    Ok(raw.iter().map(|b| format!("{b:02x}")).collect())
}

fn read_or_create(path: &Path) -> Result<ClusterSecret, SecretError> {
    let file_err = |source| SecretError::File { path: path.to_owned(), source };
    match std::fs::metadata(path) {
        Ok(meta) => {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                return Err(SecretError::Exposed { path: path.to_owned(), mode });
            }
            let text = std::fs::read_to_string(path).map_err(file_err)?;
            ClusterSecret::new(&text, &path.display().to_string())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let text = generate()?;
            // create_new: if another node created it meanwhile, we fail
            // here rather than overwrite theirs; the next start reads it.
            let mut f = std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path).map_err(file_err)?;
            f.write_all(text.as_bytes()).map_err(file_err)?;
            tracing::info!(path = %path.display(), "created a new cluster secret (mode 600)");
            ClusterSecret::new(&text, &path.display().to_string())
        }
        Err(e) => Err(file_err(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bad_length_gives_the_bounds_and_the_fix() {
        let short = ClusterSecret::new("hello", "--secret").expect_err("too short").to_string();
        assert!(short.contains("--secret is 5 bytes") && short.contains("at least 32"), "{short}");
        assert!(short.contains("foundation secret generate") && !short.contains('\n'), "one line naming the fix: {short}");
        // 31 bytes: one short of the bound.
        assert!(ClusterSecret::new(&"s".repeat(SECRET_BYTES_MIN - 1), "f").is_err());
        assert!(ClusterSecret::new(&"s".repeat(SECRET_BYTES_MIN), "f").is_ok());
        let long = ClusterSecret::new(&"x".repeat(SECRET_BYTES_MAX + 1), "f").expect_err("too long").to_string();
        assert!(long.contains("use a shorter one"), "{long}");
    }

    /// A private directory for one test's secret file, removed with it.
    struct TempSecret(PathBuf);

    impl TempSecret {
        fn path(&self) -> PathBuf {
            self.0.join("secret")
        }
    }

    impl Drop for TempSecret {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn temp_secret(name: &str) -> TempSecret {
        let dir = std::env::temp_dir().join(format!("foundation-secret-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o700)).expect("chmod");
        TempSecret(dir)
    }

    #[test]
    fn a_test_secret_goes_with_its_directory() {
        let temp = temp_secret("gone");
        let (dir, path) = (temp.0.clone(), temp.path());
        std::fs::write(&path, "x").expect("write");
        drop(temp);
        assert!(!dir.exists(), "{} is left behind", dir.display());
    }

    #[test]
    fn config_wins_and_short_secrets_are_refused() {
        let (cfg, short_dir) = (temp_secret("cfg"), temp_secret("short"));
        let source = SecretSource { configured: Some("a-configured-secret-value-0123456789".into()), file: cfg.path() };
        assert_eq!(source.resolve().expect("configured").bytes(), b"a-configured-secret-value-0123456789");
        let short = SecretSource { configured: Some("short".into()), file: short_dir.path() };
        let err = short.resolve().expect_err("too short");
        assert!(err.to_string().contains("node config") && err.to_string().contains("32"), "{err}");
        assert_eq!(format!("{:?}", ClusterSecret::new(&"0123456789abcdef".repeat(2), "x").unwrap()), "ClusterSecret(32 bytes)");
    }

    #[test]
    fn a_missing_file_is_created_private_and_then_reused() {
        let temp = temp_secret("create");
        let path = temp.path();
        let source = SecretSource { configured: None, file: path.clone() };
        // The environment must not supply one for this test.
        if std::env::var(SECRET_ENV).is_ok() {
            return;
        }
        let first = source.resolve().expect("created");
        let mode = std::fs::metadata(&path).expect("exists").permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(first.bytes().len(), 64, "32 random bytes in hex");
        assert_eq!(source.resolve().expect("read back"), first);
    }

    #[test]
    fn generated_secrets_are_256_random_bits_in_hex() {
        let (a, b) = (generate().expect("OS randomness"), generate().expect("OS randomness"));
        assert_eq!(a.len(), 2 * SECRET_RANDOM_BYTES);
        assert!(a.bytes().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()), "{a}");
        assert_ne!(a, b, "two draws differ");
        assert!(ClusterSecret::new(&a, "generated").is_ok());
    }

    #[test]
    fn an_exposed_file_is_refused_with_the_fix() {
        let temp = temp_secret("exposed");
        let path = temp.path();
        std::fs::write(&path, "0123456789abcdef0123456789abcdef").expect("write");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = read_or_create(&path).expect_err("world-readable");
        assert!(matches!(err, SecretError::Exposed { mode: 0o644, .. }));
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
