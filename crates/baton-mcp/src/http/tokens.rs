//! The tokens file: one line per token, `<owner> sha256:<hex of the token>`. Only hashes are
//! stored; a token is shown once, when `baton server add-token` creates it.

use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use rand::TryRngCore;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

/// Why the tokens file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokensError {
    #[error(
        "the tokens file {path} has mode {mode:04o}, readable by other users; it holds credentials: run `chmod 600 {path}`"
    )]
    Permissions { path: PathBuf, mode: u32 },
    #[error("cannot read the tokens file {path}: {source}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write the tokens file {path}: {source}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid tokens file {path} line {line}: expected `<owner> sha256:<64 hex digits>`")]
    Invalid { path: PathBuf, line: usize },
    #[error("invalid owner `{0}`: use letters, digits, `-`, `_`, `.` or `@`")]
    InvalidOwner(String),
    #[error("cannot get random bytes from the operating system: {0}")]
    Random(String),
}

/// The owners and token hashes the server accepts.
#[derive(Debug, Clone, Default)]
pub struct TokenTable {
    entries: Vec<(String, [u8; 32])>,
}

impl TokenTable {
    /// Reads the tokens file; a missing file is an empty table (no authentication, loopback
    /// only). A file others may read is refused.
    pub fn load(path: &Path) -> Result<Self, TokensError> {
        let metadata = match std::fs::metadata(path) {
            Ok(metadata) => metadata,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Self::default()),
            Err(source) => {
                return Err(TokensError::Read {
                    path: path.to_path_buf(),
                    source,
                });
            }
        };
        check_private(path, metadata.permissions().mode())?;
        let text = std::fs::read_to_string(path).map_err(|source| TokensError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let mut entries = Vec::new();
        for (index, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let invalid = || TokensError::Invalid {
                path: path.to_path_buf(),
                line: index + 1,
            };
            let (owner, hash) = line.split_once(char::is_whitespace).ok_or_else(invalid)?;
            let hash = hash.trim().strip_prefix("sha256:").ok_or_else(invalid)?;
            let digest = parse_hex(hash).ok_or_else(invalid)?;
            entries.push((owner.to_owned(), digest));
        }
        Ok(Self { entries })
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The owner of `token`, comparing its hash with every entry in constant time.
    pub fn owner_of(&self, token: &str) -> Option<&str> {
        let digest: [u8; 32] = Sha256::digest(token.as_bytes()).into();
        let mut found = None;
        // No early exit: the time taken does not depend on which entry matched.
        for (owner, hash) in &self.entries {
            if bool::from(hash.ct_eq(&digest)) {
                found = Some(owner.as_str());
            }
        }
        found
    }
}

/// Creates a token for `owner`, appends its hash to the tokens file (created with mode 0600)
/// and returns the token, which is stored nowhere.
pub fn add_token(path: &Path, owner: &str) -> Result<String, TokensError> {
    let valid = !owner.is_empty()
        && owner
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'));
    if !valid {
        return Err(TokensError::InvalidOwner(owner.to_owned()));
    }
    if let Ok(metadata) = std::fs::metadata(path) {
        check_private(path, metadata.permissions().mode())?;
    }
    // 256 bits from the OS.
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng
        .try_fill_bytes(&mut bytes)
        .map_err(|err| TokensError::Random(err.to_string()))?;
    let token = format!("baton_{}", hex(&bytes));
    let hash = hex(&Sha256::digest(token.as_bytes()));
    let write_error = |source| TokensError::Write {
        path: path.to_path_buf(),
        source,
    };
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).map_err(write_error)?;
    }
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)
        .map_err(write_error)?;
    writeln!(file, "{owner} sha256:{hash}")
        .and_then(|()| file.sync_all())
        .map_err(write_error)?;
    Ok(token)
}

fn check_private(path: &Path, mode: u32) -> Result<(), TokensError> {
    if mode & 0o077 != 0 {
        return Err(TokensError::Permissions {
            path: path.to_path_buf(),
            mode: mode & 0o7777,
        });
    }
    Ok(())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<[u8; 32]> {
    if text.len() != 64 || !text.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (index, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[index * 2..index * 2 + 2], 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_added_token_is_accepted_and_only_its_hash_is_stored() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        let alice = add_token(&path, "alice").expect("add");
        let bob = add_token(&path, "bob").expect("add");
        let mode = std::fs::metadata(&path).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let text = std::fs::read_to_string(&path).expect("read");
        assert!(!text.contains(&alice) && !text.contains(&bob), "{text}");
        let table = TokenTable::load(&path).expect("load");
        assert_eq!(table.owner_of(&alice), Some("alice"));
        assert_eq!(table.owner_of(&bob), Some("bob"));
        assert_eq!(table.owner_of("baton_wrong"), None);
        assert!(alice.len() >= 6 + 64);
    }

    #[test]
    fn a_file_others_can_read_is_refused() {
        let dir = tempfile::tempdir().expect("dir");
        let path = dir.path().join("tokens");
        add_token(&path, "alice").expect("add");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        let err = TokenTable::load(&path).expect_err("refused");
        assert!(err.to_string().contains("chmod 600"), "{err}");
    }
}
