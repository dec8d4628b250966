//! One typed configuration, built in layers: defaults, then the TOML file, then the environment
//! and flags (clap resolves those two). Everything is validated here, at start-up, so a bad
//! config stops the process with one line naming the field instead of failing a request later.

mod file;
mod keys;
mod provider;
mod size;

use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

pub use file::FileConfig;
pub use provider::{AuthHeader, Credential, ProviderConfig};
pub use size::ByteSize;

use crate::cli::{Cli, DemoPacing, DisconnectPolicy, LogFormat};
use crate::metrics::Buckets;

/// Reads an environment variable. Injected so tests never mutate the process environment.
pub type EnvSource<'a> = &'a dyn Fn(&str) -> Option<String>;

/// Reads the real process environment.
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// The name `--upstream` and `--demo` give the provider they configure.
pub const DEFAULT_PROVIDER: &str = "default";

/// A start-up configuration problem; its `Display` is the one line printed before exiting.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("config file {path}, line {line}: {message}")]
    Parse {
        path: String,
        line: usize,
        message: String,
    },
    #[error("{field}: {message}")]
    Invalid { field: String, message: String },
}

impl ConfigError {
    pub(crate) fn invalid(field: impl Into<String>, message: impl Into<String>) -> Self {
        ConfigError::Invalid {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Timeouts applied to every upstream call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub connect: Duration,
    pub first_byte: Duration,
    pub idle: Duration,
    pub request: Duration,
}

/// The validated settings the process runs with.
#[derive(Debug, Clone)]
pub struct Settings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    pub providers: Vec<ProviderConfig>,
    pub timeouts: Timeouts,
    pub drain_timeout: Duration,
    pub client_header_timeout: Duration,
    pub client_body_timeout: Duration,
    pub max_body: u64,
    pub max_header_bytes: usize,
    pub admin_token: Option<String>,
    /// Protects `/metrics` on its own; the admin token is accepted there too.
    pub metrics_token: Option<String>,
    pub insecure_admin: bool,
    pub on_client_disconnect: DisconnectPolicy,
    pub drain_max: Duration,
    pub max_drains: usize,
    pub demo: bool,
    pub demo_pacing: DemoPacing,
    pub max_records: usize,
    pub prices: Option<std::path::PathBuf>,
    pub max_subscribers: usize,
    /// Known API keys by SHA-256, and the name `key_id` shows for each.
    pub keys: Vec<([u8; 32], String)>,
    pub max_models: usize,
    pub buckets: Buckets,
    /// Record fields opted in as metric labels, and the cap on each one's values.
    pub metrics_labels: Vec<crate::metrics::labels::ExtraLabel>,
    pub max_label_values: usize,
    pub sse_heartbeat: Duration,
    pub log_level: String,
    pub log_format: LogFormat,
}

impl Settings {
    /// Builds the settings from flags/env (`cli`), the file `cli.config` names, and defaults.
    pub fn load(cli: &Cli, env: EnvSource<'_>) -> Result<Settings, ConfigError> {
        let file = match &cli.config {
            Some(path) => FileConfig::read(path)?,
            None => FileConfig::default(),
        };
        Settings::from_layers(cli, file, env)
    }

    /// Merges already-parsed layers: flag/env (`cli`) over `file` over defaults.
    pub fn from_layers(
        cli: &Cli,
        file: FileConfig,
        env: EnvSource<'_>,
    ) -> Result<Settings, ConfigError> {
        let dur =
            |flag: Option<humantime::Duration>, file: Option<humantime::Duration>, default| {
                flag.or(file).map(Duration::from).unwrap_or(default)
            };
        let settings = Settings {
            listen: cli
                .listen
                .or(file.listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8787))),
            admin_listen: cli
                .admin_listen
                .or(file.admin_listen)
                .unwrap_or(SocketAddr::from(([127, 0, 0, 1], 8788))),
            providers: provider::build_all(
                cli.upstream.as_deref().or(file.upstream.as_deref()),
                &file.providers,
                env,
            )?,
            timeouts: Timeouts {
                connect: dur(cli.connect_timeout, file.connect_timeout, secs(10)),
                first_byte: dur(cli.first_byte_timeout, file.first_byte_timeout, secs(300)),
                idle: dur(cli.idle_timeout, file.idle_timeout, secs(300)),
                request: dur(cli.request_timeout, file.request_timeout, secs(1800)),
            },
            drain_timeout: dur(cli.drain_timeout, file.drain_timeout, secs(30)),
            client_header_timeout: dur(
                cli.client_header_timeout,
                file.client_header_timeout,
                secs(30),
            ),
            client_body_timeout: dur(cli.client_body_timeout, file.client_body_timeout, secs(60)),
            max_body: cli
                .max_body
                .or(file.max_body)
                .unwrap_or(ByteSize(32 << 20))
                .0,
            max_header_bytes: usize::try_from(
                cli.max_header_bytes
                    .or(file.max_header_bytes)
                    .unwrap_or(ByteSize(64 << 10))
                    .0,
            )
            .unwrap_or(usize::MAX),
            admin_token: cli.admin_token.clone().or(file.admin_token),
            metrics_token: cli.metrics_token.clone().or(file.metrics_token),
            insecure_admin: cli.insecure_admin || file.insecure_admin.unwrap_or(false),
            on_client_disconnect: cli
                .on_client_disconnect
                .or(file.on_client_disconnect)
                .unwrap_or_default(),
            drain_max: dur(cli.drain_max, file.drain_max, secs(60)),
            max_drains: cli.max_drains.or(file.max_drains).unwrap_or(64),
            demo: cli.demo || file.demo.unwrap_or(false),
            demo_pacing: cli.demo_pacing.or(file.demo_pacing).unwrap_or_default(),
            max_records: cli.max_records.or(file.max_records).unwrap_or(10_000),
            prices: cli.prices.clone().or(file.prices),
            max_subscribers: cli.max_subscribers.or(file.max_subscribers).unwrap_or(64),
            keys: keys::build_all(&file.keys, env)?,
            max_models: cli.max_models.or(file.max_models).unwrap_or(200),
            buckets: file
                .metrics
                .as_ref()
                .map(|m| m.buckets())
                .unwrap_or_default(),
            metrics_labels: if cli.metrics_label.is_empty() {
                file.metrics
                    .as_ref()
                    .map(|m| m.labels.clone())
                    .unwrap_or_default()
            } else {
                cli.metrics_label.clone()
            },
            max_label_values: cli
                .max_label_values
                .or(file.metrics.as_ref().and_then(|m| m.max_label_values))
                .unwrap_or(100),
            sse_heartbeat: dur(cli.sse_heartbeat, file.sse_heartbeat, secs(15)),
            log_level: cli
                .log_level
                .clone()
                .or(file.log_level)
                .unwrap_or_else(|| "info".to_owned()),
            log_format: cli.log_format.or(file.log_format).unwrap_or_default(),
        };
        settings.validate()?;
        Ok(settings)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.providers.is_empty() && !self.demo {
            return Err(ConfigError::invalid(
                "providers",
                "no provider configured: pass --upstream URL, --demo, or add [[providers]] to --config",
            ));
        }
        let timeouts = [
            ("connect_timeout", self.timeouts.connect),
            ("first_byte_timeout", self.timeouts.first_byte),
            ("idle_timeout", self.timeouts.idle),
            ("request_timeout", self.timeouts.request),
            ("drain_max", self.drain_max),
            ("client_header_timeout", self.client_header_timeout),
            ("client_body_timeout", self.client_body_timeout),
            ("sse_heartbeat", self.sse_heartbeat),
        ];
        for (field, value) in timeouts {
            if value.is_zero() {
                return Err(ConfigError::invalid(field, "must be longer than zero"));
            }
        }
        if self.max_body == 0 {
            return Err(ConfigError::invalid("max_body", "must be at least 1 byte"));
        }
        if self.max_header_bytes < 1024 {
            return Err(ConfigError::invalid(
                "max_header_bytes",
                "must be at least 1KiB",
            ));
        }
        if self.max_records == 0 || self.max_models == 0 || self.max_drains == 0 {
            return Err(ConfigError::invalid(
                "max_records/max_models/max_drains",
                "must be at least 1",
            ));
        }
        for (field, token) in [
            ("admin_token", &self.admin_token),
            ("metrics_token", &self.metrics_token),
        ] {
            if token.as_ref().is_some_and(|t| t.trim().is_empty()) {
                return Err(ConfigError::invalid(field, "must not be empty"));
            }
        }
        let b = &self.buckets;
        for (field, list) in [
            ("metrics.duration_buckets", &b.duration),
            ("metrics.ttft_buckets", &b.ttft),
            ("metrics.token_buckets", &b.tokens),
            ("metrics.per_chunk_buckets", &b.per_chunk),
        ] {
            if list.is_empty()
                || list.windows(2).any(|w| w[0] >= w[1])
                || list.iter().any(|v| !v.is_finite())
            {
                return Err(ConfigError::invalid(
                    field,
                    "must be a non-empty list of increasing numbers",
                ));
            }
        }
        if !self.admin_listen.ip().is_loopback()
            && self.admin_token.is_none()
            && !self.insecure_admin
        {
            return Err(ConfigError::invalid(
                "admin_listen",
                format!(
                    "{} is not a loopback address and no --admin-token is set; set a token or pass --insecure-admin",
                    self.admin_listen
                ),
            ));
        }
        if self.listen == self.admin_listen && self.listen.port() != 0 {
            return Err(ConfigError::invalid(
                "admin_listen",
                format!("{} is also the proxy listener", self.listen),
            ));
        }
        Ok(())
    }

    /// Points the provider named `default` at `base_url` (the demo upstream), adding it first
    /// when the configuration has none.
    pub fn point_default_provider_at(&mut self, base_url: &str) -> Result<(), ConfigError> {
        provider::point_default_at(&mut self.providers, base_url)
    }
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// Turns a byte offset into a 1-based line number, for error messages.
fn line_of(text: &str, offset: usize) -> usize {
    text.get(..offset)
        .map_or(1, |head| head.bytes().filter(|b| *b == b'\n').count() + 1)
}

fn display_path(path: &Path) -> String {
    path.display().to_string()
}

#[cfg(test)]
mod tests;
