//! The TOML config file, as written by the operator. Every key mirrors a flag; unknown keys are
//! refused so a typo never silently falls back to a default.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use serde::{Deserialize, Deserializer};

use super::{ByteSize, ConfigError, display_path, line_of};
use crate::cli::{DemoPacing, DisconnectPolicy, LogFormat};

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    pub listen: Option<SocketAddr>,
    pub admin_listen: Option<SocketAddr>,
    pub upstream: Option<String>,
    #[serde(default, deserialize_with = "duration")]
    pub connect_timeout: Option<humantime::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub first_byte_timeout: Option<humantime::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub idle_timeout: Option<humantime::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub request_timeout: Option<humantime::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub drain_timeout: Option<humantime::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub client_header_timeout: Option<humantime::Duration>,
    #[serde(default, deserialize_with = "duration")]
    pub client_body_timeout: Option<humantime::Duration>,
    pub max_body: Option<ByteSize>,
    pub max_header_bytes: Option<ByteSize>,
    pub admin_token: Option<String>,
    pub metrics_token: Option<String>,
    pub insecure_admin: Option<bool>,
    pub on_client_disconnect: Option<DisconnectPolicy>,
    #[serde(default, deserialize_with = "duration")]
    pub drain_max: Option<humantime::Duration>,
    pub max_drains: Option<usize>,
    pub demo: Option<bool>,
    pub demo_pacing: Option<DemoPacing>,
    pub max_records: Option<usize>,
    pub prices: Option<std::path::PathBuf>,
    pub max_subscribers: Option<usize>,
    pub max_models: Option<usize>,
    #[serde(default, deserialize_with = "duration")]
    pub sse_heartbeat: Option<humantime::Duration>,
    pub log_level: Option<String>,
    pub log_format: Option<LogFormat>,
    #[serde(default)]
    pub providers: Vec<ProviderFile>,
    pub metrics: Option<MetricsFile>,
    #[serde(default)]
    pub keys: Vec<KeyFile>,
}

/// One `[[keys]]` entry: a name that `key_id` shows for a known API key, given as the key's
/// SHA-256 (hex) or as the environment variable holding the key.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    pub name: Option<String>,
    pub sha256: Option<String>,
    pub env: Option<String>,
}

/// `[metrics]`: histogram bucket boundaries; each list replaces the default.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub duration_buckets: Option<Vec<f64>>,
    pub ttft_buckets: Option<Vec<f64>>,
    pub token_buckets: Option<Vec<f64>>,
    pub per_chunk_buckets: Option<Vec<f64>>,
    /// Record fields to add as labels (`key_id`, `user`, `conversation_id`).
    #[serde(default)]
    pub labels: Vec<crate::metrics::labels::ExtraLabel>,
    pub max_label_values: Option<usize>,
}

impl MetricsFile {
    pub fn buckets(&self) -> crate::metrics::Buckets {
        let d = crate::metrics::Buckets::default();
        crate::metrics::Buckets {
            duration: self.duration_buckets.clone().unwrap_or(d.duration),
            ttft: self.ttft_buckets.clone().unwrap_or(d.ttft),
            tokens: self.token_buckets.clone().unwrap_or(d.tokens),
            per_chunk: self.per_chunk_buckets.clone().unwrap_or(d.per_chunk),
        }
    }
}

/// One `[[providers]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProviderFile {
    pub name: Option<String>,
    pub base_url: Option<String>,
    #[serde(default)]
    pub models: Vec<String>,
    pub api_key_env: Option<String>,
    pub api_key_file: Option<String>,
    pub auth_header: Option<String>,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    pub include_usage: Option<bool>,
}

impl FileConfig {
    pub fn read(path: &Path) -> Result<FileConfig, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: display_path(path),
            source,
        })?;
        FileConfig::parse(&text).map_err(|(line, message)| ConfigError::Parse {
            path: display_path(path),
            line,
            message,
        })
    }

    /// Parses TOML text; a failure is `(line, one-line message)`.
    pub fn parse(text: &str) -> Result<FileConfig, (usize, String)> {
        toml::from_str(text).map_err(|err| {
            let line = err.span().map_or(1, |span| line_of(text, span.start));
            let message = err
                .message()
                .lines()
                .next()
                .unwrap_or("invalid TOML")
                .to_owned();
            (line, message)
        })
    }
}

fn duration<'de, D: Deserializer<'de>>(de: D) -> Result<Option<humantime::Duration>, D::Error> {
    let text = String::deserialize(de)?;
    text.parse::<humantime::Duration>()
        .map(Some)
        .map_err(|err| {
            serde::de::Error::custom(format!(
                "`{text}` is not a duration ({err}); use e.g. 500ms, 30s, 5m"
            ))
        })
}
