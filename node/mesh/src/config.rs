//! What the node's and the bridge's configuration loaders share: the error type (so a bad key
//! reads the same from both binaries), reading a TOML file, and parsing an environment override.
//! Each binary keeps its own sections, env names and validation rules.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

/// Error loading a configuration.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// The file is not valid TOML for this configuration.
    #[error("invalid config file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// The parser's message, with the key and line.
        message: String,
    },
    /// A value is out of range or malformed.
    #[error("invalid config key `{key}`: {reason}")]
    Invalid {
        /// The key (file key, or env var name when it came from the environment).
        key: String,
        /// What is wrong and what is expected.
        reason: String,
    },
}

/// [`ConfigError::Invalid`] for `key`.
pub fn invalid(key: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        key: key.to_owned(),
        reason: reason.into(),
    }
}

/// Reads and parses a TOML configuration file.
pub fn from_toml_file<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Io {
        path: path.to_owned(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_owned(),
        message: e.to_string(),
    })
}

/// Parses the value of environment variable `key` (surrounding blanks ignored).
pub fn parse_env<T: std::str::FromStr>(key: &str, value: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    value
        .trim()
        .parse()
        .map_err(|e| invalid(key, format!("{value:?}: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_key_and_the_file() {
        let e = parse_env::<u16>("SYNC_BATCH_SIZE", " lots ").unwrap_err();
        assert!(e.to_string().contains("`SYNC_BATCH_SIZE`"), "{e}");
        assert_eq!(parse_env::<u16>("K", " 7 ").unwrap(), 7);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let e = from_toml_file::<toml::Table>(&path).unwrap_err();
        assert!(matches!(e, ConfigError::Io { .. }), "{e}");
        std::fs::write(&path, "a = [").unwrap();
        let e = from_toml_file::<toml::Table>(&path).unwrap_err();
        assert!(e.to_string().contains("c.toml"), "{e}");
    }
}
