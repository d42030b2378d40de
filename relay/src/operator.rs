//! The operator's secrets on disk: the operator signing key (it certifies
//! businesses and signs template approvals; clients pin its public half)
//! and the bearer token of the admin API. Both are created at first start
//! as user-only (0600) files in the data directory, unless the
//! configuration names other paths, and a file others can read is refused.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use comptoir_protocol::OperatorKeyPair;
use rand::Rng;
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// File name of the operator key in the data directory.
pub const OPERATOR_KEY_FILE: &str = "operator.key";
/// File name of the admin API's bearer token in the data directory.
pub const ADMIN_TOKEN_FILE: &str = "admin.token";

/// Why an operator secret could not be loaded or created.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OperatorFileError {
    /// The file could not be read or written.
    #[error("{what} {}: {source}", path.display())]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file (shown to the operator only, never to a peer).
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// Others may read the file: a secret must be user-only.
    #[error(
        "{} can be read by other users (mode {mode:o}): run `chmod 600 {}` and start again",
        path.display(),
        path.display()
    )]
    TooOpen {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// The file does not hold what it should.
    #[error(
        "{} is not a {what} (64 hex digits expected): restore it from your backup, or move it away to create a new one (clients pinned the old operator key and will warn)",
        path.display()
    )]
    Malformed {
        /// The file.
        path: PathBuf,
        /// What it should hold.
        what: &'static str,
    },
}

/// A bearer token of the admin API (32 random bytes, hex on disk).
pub struct AdminToken(Zeroizing<String>);

impl AdminToken {
    /// Whether `presented` is this token (constant time).
    pub fn matches(&self, presented: &str) -> bool {
        self.0.as_bytes().ct_eq(presented.as_bytes()).into()
    }

    /// The token text, to send in an `Authorization: Bearer` header.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for AdminToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AdminToken(…)")
    }
}

/// Load the operator key from `path`, or create it there (0600) if the
/// file does not exist.
pub fn load_or_create_operator_key(path: &Path) -> Result<OperatorKeyPair, OperatorFileError> {
    let seed = load_or_create_secret(path, "operator key")?;
    Ok(OperatorKeyPair::from_seed(&seed))
}

/// Load the admin token from `path`, or create it there (0600).
pub fn load_or_create_admin_token(path: &Path) -> Result<AdminToken, OperatorFileError> {
    let secret = load_or_create_secret(path, "admin token")?;
    Ok(AdminToken(Zeroizing::new(hex::encode(*secret))))
}

/// Read an admin token written by [`load_or_create_admin_token`] (the
/// `relay admin` side: it never creates one).
pub fn read_admin_token(path: &Path) -> Result<AdminToken, OperatorFileError> {
    let secret = read_secret(path, "admin token")?;
    Ok(AdminToken(Zeroizing::new(hex::encode(*secret))))
}

fn load_or_create_secret(
    path: &Path,
    what: &'static str,
) -> Result<Zeroizing<[u8; 32]>, OperatorFileError> {
    match read_secret(path, what) {
        Err(OperatorFileError::Io { source, .. })
            if source.kind() == std::io::ErrorKind::NotFound =>
        {
            create_secret(path, what)
        }
        other => other,
    }
}

fn read_secret(path: &Path, what: &'static str) -> Result<Zeroizing<[u8; 32]>, OperatorFileError> {
    let io = |what_doing, source| OperatorFileError::Io {
        what: what_doing,
        path: path.to_owned(),
        source,
    };
    let mut file = File::open(path).map_err(|e| io("cannot open", e))?;
    check_user_only(&file, path)?;
    let mut text = Zeroizing::new(String::new());
    Read::by_ref(&mut file)
        .take(256)
        .read_to_string(&mut text)
        .map_err(|e| io("cannot read", e))?;
    let mut secret = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), secret.as_mut()).map_err(|_| {
        OperatorFileError::Malformed {
            path: path.to_owned(),
            what,
        }
    })?;
    Ok(secret)
}

fn create_secret(
    path: &Path,
    what: &'static str,
) -> Result<Zeroizing<[u8; 32]>, OperatorFileError> {
    let io = |what_doing, source| OperatorFileError::Io {
        what: what_doing,
        path: path.to_owned(),
        source,
    };
    let mut secret = Zeroizing::new([0u8; 32]);
    rand::rng().fill_bytes(secret.as_mut());
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| io("cannot create", e))?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(*secret)));
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|e| io("cannot write", e))?;
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        File::open(dir)
            .and_then(|d| d.sync_all())
            .map_err(|e| io("cannot sync the directory of", e))?;
    }
    tracing::info!(file = %path.display(), "created a new {what}");
    Ok(secret)
}

/// Refuse a secret file others may read.
#[cfg(unix)]
pub(crate) fn check_user_only(file: &File, path: &Path) -> Result<(), OperatorFileError> {
    use std::os::unix::fs::PermissionsExt;
    let mode = file
        .metadata()
        .map_err(|source| OperatorFileError::Io {
            what: "cannot inspect",
            path: path.to_owned(),
            source,
        })?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        return Err(OperatorFileError::TooOpen {
            path: path.to_owned(),
            mode: mode & 0o777,
        });
    }
    Ok(())
}

/// Refuse a secret file others may read.
#[cfg(not(unix))]
pub(crate) fn check_user_only(_file: &File, _path: &Path) -> Result<(), OperatorFileError> {
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)] // Reason: test code fails by panicking.
    use super::*;

    #[test]
    fn created_once_then_loaded_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OPERATOR_KEY_FILE);
        let first = load_or_create_operator_key(&path).unwrap();
        let again = load_or_create_operator_key(&path).unwrap();
        assert_eq!(first.public(), again.public());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[cfg(unix)]
    #[test]
    fn a_file_others_can_read_is_refused_and_left_alone() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(ADMIN_TOKEN_FILE);
        let token = load_or_create_admin_token(&path).unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let before = std::fs::read(&path).unwrap();
        let error = load_or_create_admin_token(&path).unwrap_err();
        assert!(
            matches!(error, OperatorFileError::TooOpen { .. }),
            "{error}"
        );
        assert!(error.to_string().contains("chmod 600"));
        assert_eq!(std::fs::read(&path).unwrap(), before);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert!(read_admin_token(&path).unwrap().matches(token.as_str()));
    }

    #[test]
    fn a_damaged_file_is_refused_not_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(OPERATOR_KEY_FILE);
        load_or_create_operator_key(&path).unwrap();
        std::fs::write(&path, "not hex\n").unwrap();
        let error = load_or_create_operator_key(&path).unwrap_err();
        assert!(
            matches!(error, OperatorFileError::Malformed { .. }),
            "{error}"
        );
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not hex\n");
    }

    #[test]
    fn tokens_compare_exactly() {
        let dir = tempfile::tempdir().unwrap();
        let token = load_or_create_admin_token(&dir.path().join(ADMIN_TOKEN_FILE)).unwrap();
        assert!(token.matches(token.as_str()));
        assert!(!token.matches(""));
        assert!(!token.matches(&token.as_str()[1..]));
        assert!(!format!("{token:?}").contains(token.as_str()));
    }
}
