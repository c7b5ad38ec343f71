//! The users file on disk: reading it, replacing it atomically (temp file
//! mode 0600, fsync, rename, fsync of the directory), and hashing a new
//! password with a fresh random salt.
//!
//! The format and the verification are `core::auth`'s. This module must never
//! put a password or a hash into an error or a log line, and never write the
//! file in place (a crash mid-write must leave the old file or the new one,
//! never half of either, and never a moment where others could read it).

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::core::auth::Users;

#[derive(Debug, thiserror::Error)]
pub enum UsersFileError {
    #[error("users file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("users file {path}: {source}")]
    Format {
        path: PathBuf,
        source: crate::core::auth::UsersFormatError,
    },
    #[error("cannot hash the password: {0}")]
    Hash(String),
}

impl UsersFileError {
    /// The stable name (docs/errors.md).
    pub fn name(&self) -> &'static str {
        match self {
            UsersFileError::Io { .. } => "USERS_FILE_UNREADABLE",
            UsersFileError::Format { .. } => "USERS_FILE_INVALID",
            UsersFileError::Hash(_) => "PASSWORD_HASH_FAILED",
        }
    }
}

/// Read and parse the users file.
pub fn load(path: &Path) -> Result<Users, UsersFileError> {
    let text = fs::read_to_string(path).map_err(|source| UsersFileError::Io {
        path: path.into(),
        source,
    })?;
    Users::parse(&text).map_err(|source| UsersFileError::Format {
        path: path.into(),
        source,
    })
}

/// The file's permission bits when group or others may read or write it
/// (`None`: private, as it should be, or unreadable metadata).
pub fn loose_permissions(path: &Path) -> Option<u32> {
    let mode = fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o077 != 0).then_some(mode)
}

/// Replace the users file with `users`: a new file of mode 0600 next to it,
/// written and fsynced, renamed over the old one, and the directory fsynced,
/// so a crash leaves either version whole and no reader ever sees a partial
/// or world-readable one.
pub fn save(path: &Path, users: &Users) -> Result<(), UsersFileError> {
    let io = |source| UsersFileError::Io {
        path: path.into(),
        source,
    };
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().ok_or_else(|| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a file name",
        ))
    })?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(name);
    tmp_name.push(format!(".tmp{}", std::process::id()));
    let tmp = dir.join(tmp_name);
    let _ = fs::remove_file(&tmp);
    let written = (|| {
        let mut f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(users.to_toml().as_bytes())?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        File::open(&dir)?.sync_all()
    })();
    if written.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    written.map_err(io)
}

/// An argon2id PHC string of `password` with a fresh random salt (argon2's
/// default parameters: 19 MiB, 2 passes; tens of ms).
pub fn hash_password(password: &[u8]) -> Result<String, UsersFileError> {
    use argon2::password_hash::PasswordHasher;
    argon2::Argon2::default()
        .hash_password(password)
        .map(|h| h.to_string())
        .map_err(|e| UsersFileError::Hash(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::auth::{verify_password, Role, User, DUMMY_HASH};

    #[test]
    fn save_is_private_and_load_reads_it_back() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("users.toml");
        let mut users = Users::default();
        let hash = hash_password(b"s3cret").unwrap();
        assert!(hash.starts_with("$argon2id$"));
        assert!(verify_password(&hash, b"s3cret"));
        assert!(!verify_password(&hash, b"s3cret!"));
        users.users.insert(
            "bob".into(),
            User {
                hash,
                role: Role::Read,
            },
        );
        save(&path, &users).unwrap();
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert_eq!(loose_permissions(&path), None);
        assert_eq!(load(&path).unwrap(), users);
        // The timing decoy is a real hash of the default parameters.
        assert!(argon2::password_hash::phc::PasswordHash::new(DUMMY_HASH).is_ok());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1, "no temp left");
    }
}
