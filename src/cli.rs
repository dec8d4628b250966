//! Command-line flags. Only clap structs live here: every flag has a `TOKENTAP_*` environment twin,
//! and none carries a clap default, so that "not given" can fall through to the config file
//! (precedence flag > env > file > default is resolved in `config`). Defaults are shown in help.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, ValueEnum};

use crate::config::ByteSize;

/// An OpenAI-compatible reverse proxy that meters tokens.
#[derive(Debug, Clone, Default, Parser)]
#[command(name = "tokentap", version, about, max_term_width = 100)]
pub struct Cli {
    /// TOML config file (see config/tokentap.toml).
    #[arg(long, env = "TOKENTAP_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Client-facing proxy listener [default: 127.0.0.1:8787].
    #[arg(long, env = "TOKENTAP_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Admin listener: health, metrics, API, dashboard [default: 127.0.0.1:8788].
    #[arg(long, env = "TOKENTAP_ADMIN_LISTEN", value_name = "ADDR")]
    pub admin_listen: Option<SocketAddr>,

    /// Base URL of the single default provider (a `[[providers]]` entry named `default`); the
    /// request path is appended unchanged.
    #[arg(long, env = "TOKENTAP_UPSTREAM", value_name = "URL")]
    pub upstream: Option<String>,

    /// Time allowed to open a connection to the upstream [default: 10s].
    #[arg(long, env = "TOKENTAP_CONNECT_TIMEOUT", value_name = "DURATION")]
    pub connect_timeout: Option<humantime::Duration>,

    /// Time from sending the request upstream to its response headers [default: 5m].
    #[arg(long, env = "TOKENTAP_FIRST_BYTE_TIMEOUT", value_name = "DURATION")]
    pub first_byte_timeout: Option<humantime::Duration>,

    /// Longest gap between two response body chunks [default: 5m].
    #[arg(long, env = "TOKENTAP_IDLE_TIMEOUT", value_name = "DURATION")]
    pub idle_timeout: Option<humantime::Duration>,

    /// Longest a whole request may take, body included [default: 30m].
    #[arg(long, env = "TOKENTAP_REQUEST_TIMEOUT", value_name = "DURATION")]
    pub request_timeout: Option<humantime::Duration>,

    /// On SIGINT/SIGTERM, how long in-flight requests may still run [default: 30s].
    #[arg(long, env = "TOKENTAP_DRAIN_TIMEOUT", value_name = "DURATION")]
    pub drain_timeout: Option<humantime::Duration>,

    /// Time a client has to send its request headers (slowloris guard) [default: 30s].
    #[arg(long, env = "TOKENTAP_CLIENT_HEADER_TIMEOUT", value_name = "DURATION")]
    pub client_header_timeout: Option<humantime::Duration>,

    /// Time a client has to send a metered request's whole body [default: 60s].
    #[arg(long, env = "TOKENTAP_CLIENT_BODY_TIMEOUT", value_name = "DURATION")]
    pub client_body_timeout: Option<humantime::Duration>,

    /// Largest request body accepted, in bytes (suffixes KiB, MiB, GiB, kB, MB, GB) [default: 32MiB].
    #[arg(long, env = "TOKENTAP_MAX_BODY", value_name = "BYTES")]
    pub max_body: Option<ByteSize>,

    /// Largest total size of request headers, in bytes [default: 64KiB].
    #[arg(long, env = "TOKENTAP_MAX_HEADER_BYTES", value_name = "BYTES")]
    pub max_header_bytes: Option<ByteSize>,

    /// Bearer token required by every admin route except /healthz and /readyz.
    #[arg(
        long,
        env = "TOKENTAP_ADMIN_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub admin_token: Option<String>,

    /// Bearer token for /metrics alone (the admin token is accepted there too).
    #[arg(
        long,
        env = "TOKENTAP_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,

    /// Allow a non-loopback admin listener without an admin token.
    #[arg(long, env = "TOKENTAP_INSECURE_ADMIN")]
    pub insecure_admin: bool,

    /// What to do with the upstream call when a client leaves mid-stream [default: cancel].
    #[arg(long, env = "TOKENTAP_ON_CLIENT_DISCONNECT", value_name = "POLICY")]
    pub on_client_disconnect: Option<DisconnectPolicy>,

    /// Under `drain`, how long an abandoned upstream call may still be read [default: 60s].
    #[arg(long, env = "TOKENTAP_DRAIN_MAX", value_name = "DURATION")]
    pub drain_max: Option<humantime::Duration>,

    /// Under `drain`, how many abandoned upstream calls may be read at once [default: 64].
    #[arg(long, env = "TOKENTAP_MAX_DRAINS", value_name = "N")]
    pub max_drains: Option<usize>,

    /// Also start the built-in simulated upstream and point the default provider at it.
    #[arg(long, env = "TOKENTAP_DEMO")]
    pub demo: bool,

    /// Demo upstream pacing: `realistic` or `off` (as fast as possible) [default: realistic].
    #[arg(long, env = "TOKENTAP_DEMO_PACING", value_name = "PACING")]
    pub demo_pacing: Option<DemoPacing>,

    /// A price table (TOML, same format as config/prices.toml) tried before the built-in one.
    #[arg(long, env = "TOKENTAP_PRICES", value_name = "FILE")]
    pub prices: Option<PathBuf>,

    /// Most live-feed (/api/active/stream) subscribers at once [default: 64].
    #[arg(long, env = "TOKENTAP_MAX_SUBSCRIBERS", value_name = "N")]
    pub max_subscribers: Option<usize>,

    /// Completed records kept in memory [default: 10000].
    #[arg(long, env = "TOKENTAP_MAX_RECORDS", value_name = "N")]
    pub max_records: Option<usize>,

    /// Distinct `model` label values before further ones are reported as `other` [default: 200].
    #[arg(long, env = "TOKENTAP_MAX_MODELS", value_name = "N")]
    pub max_models: Option<usize>,

    /// Also label request, token and cost counters by this record field (repeatable:
    /// key_id, user, conversation_id). Off by default: these can have many values.
    #[arg(
        long,
        env = "TOKENTAP_METRICS_LABEL",
        value_name = "FIELD",
        value_delimiter = ','
    )]
    pub metrics_label: Vec<crate::metrics::labels::ExtraLabel>,

    /// Distinct values per opted-in label before the rest are reported as `other` [default: 100].
    #[arg(long, env = "TOKENTAP_MAX_LABEL_VALUES", value_name = "N")]
    pub max_label_values: Option<usize>,

    /// Interval of `: ping` comments on the live feed [default: 15s].
    #[arg(long, env = "TOKENTAP_SSE_HEARTBEAT", value_name = "DURATION")]
    pub sse_heartbeat: Option<humantime::Duration>,

    /// Log filter, e.g. `info` or `tokentap=debug` [default: info].
    #[arg(long, env = "TOKENTAP_LOG_LEVEL", value_name = "FILTER")]
    pub log_level: Option<String>,

    /// Log format [default: text].
    #[arg(long, env = "TOKENTAP_LOG_FORMAT", value_name = "FORMAT")]
    pub log_format: Option<LogFormat>,
}

/// What happens to the upstream call when the client goes away before the answer is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DisconnectPolicy {
    /// Drop the upstream call at once; usage is estimated from what was streamed.
    #[default]
    Cancel,
    /// Keep reading the upstream (bounded) to record the provider's own final usage.
    Drain,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    #[default]
    Text,
    Json,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DemoPacing {
    #[default]
    Realistic,
    Off,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_every_flag() {
        let cli = Cli::try_parse_from([
            "tokentap",
            "--listen",
            "127.0.0.1:9000",
            "--admin-listen",
            "127.0.0.1:9001",
            "--upstream",
            "http://127.0.0.1:7000",
            "--connect-timeout",
            "500ms",
            "--first-byte-timeout",
            "30s",
            "--idle-timeout",
            "1m",
            "--request-timeout",
            "5m",
            "--drain-timeout",
            "2s",
            "--max-body",
            "1MiB",
            "--admin-token",
            "secret",
            "--insecure-admin",
            "--on-client-disconnect",
            "drain",
            "--demo",
            "--log-format",
            "json",
        ])
        .expect("valid flags");
        assert_eq!(cli.listen, Some("127.0.0.1:9000".parse().expect("addr")));
        assert_eq!(
            cli.connect_timeout.map(std::time::Duration::from),
            Some(std::time::Duration::from_millis(500))
        );
        assert_eq!(cli.max_body, Some(ByteSize(1024 * 1024)));
        assert_eq!(cli.on_client_disconnect, Some(DisconnectPolicy::Drain));
        assert!(cli.insecure_admin && cli.demo);
        assert_eq!(cli.log_format, Some(LogFormat::Json));
    }

    #[test]
    fn rejects_bad_values() {
        assert!(Cli::try_parse_from(["tokentap", "--listen", "nope"]).is_err());
        assert!(Cli::try_parse_from(["tokentap", "--idle-timeout", "soon"]).is_err());
        assert!(Cli::try_parse_from(["tokentap", "--on-client-disconnect", "maybe"]).is_err());
        assert!(Cli::try_parse_from(["tokentap", "--bogus"]).is_err());
    }

    #[test]
    fn nothing_given_means_none() {
        let cli = Cli::try_parse_from(["tokentap"]).expect("no flags");
        assert!(cli.listen.is_none() && cli.max_body.is_none() && !cli.demo);
    }
}
