//! Providers: the only hosts tokentap ever connects to. Built and checked once at start-up.

use globset::{Glob, GlobSet, GlobSetBuilder};
use http::{HeaderName, HeaderValue};

use super::file::ProviderFile;
use super::{ConfigError, DEFAULT_PROVIDER, EnvSource};

/// Where a provider's key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AuthHeader {
    /// `Authorization: Bearer <key>` (OpenAI and most compatible APIs).
    Authorization,
    /// `x-api-key: <key>` (Anthropic).
    XApiKey,
}

/// The key a provider sends upstream in place of the client's credential.
#[derive(Clone)]
pub struct Credential {
    pub header: AuthHeader,
    pub value: HeaderValue,
}

impl std::fmt::Debug for Credential {
    // The key itself must never reach a log line, even through `{:?}` of the settings.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Credential")
            .field("header", &self.header)
            .field("value", &"<redacted>")
            .finish()
    }
}

#[derive(Debug, Clone)]
pub struct ProviderConfig {
    pub name: String,
    /// Scheme, authority and optional path prefix, without a trailing `/`.
    pub base_url: String,
    pub models: Vec<String>,
    pub model_globs: GlobSet,
    pub credential: Option<Credential>,
    pub headers: Vec<(HeaderName, HeaderValue)>,
    pub include_usage: bool,
}

impl ProviderConfig {
    pub fn matches_model(&self, model: &str) -> bool {
        !self.models.is_empty() && self.model_globs.is_match(model)
    }

    fn plain(name: &str, base_url: &str, field: &str) -> Result<ProviderConfig, ConfigError> {
        Ok(ProviderConfig {
            name: name.to_owned(),
            base_url: check_base_url(base_url, field)?,
            models: Vec::new(),
            model_globs: GlobSet::empty(),
            credential: None,
            headers: Vec::new(),
            include_usage: true,
        })
    }
}

pub(super) fn build_all(
    upstream: Option<&str>,
    entries: &[ProviderFile],
    env: EnvSource<'_>,
) -> Result<Vec<ProviderConfig>, ConfigError> {
    let mut providers = Vec::with_capacity(entries.len() + 1);
    for (i, entry) in entries.iter().enumerate() {
        let provider = build(entry, &format!("providers[{i}]"), env)?;
        if providers
            .iter()
            .any(|p: &ProviderConfig| p.name == provider.name)
        {
            return Err(ConfigError::invalid(
                format!("providers[{i}].name"),
                format!("`{}` is used by another provider", provider.name),
            ));
        }
        providers.push(provider);
    }
    if let Some(url) = upstream {
        match providers.iter_mut().find(|p| p.name == DEFAULT_PROVIDER) {
            Some(existing) => existing.base_url = check_base_url(url, "upstream")?,
            None => providers.insert(0, ProviderConfig::plain(DEFAULT_PROVIDER, url, "upstream")?),
        }
    }
    Ok(providers)
}

pub(super) fn point_default_at(
    providers: &mut Vec<ProviderConfig>,
    base_url: &str,
) -> Result<(), ConfigError> {
    let base_url = check_base_url(base_url, "demo")?;
    match providers.iter().position(|p| p.name == DEFAULT_PROVIDER) {
        Some(i) => {
            let mut provider = providers.remove(i);
            provider.base_url = base_url;
            providers.insert(0, provider);
        }
        None => providers.insert(
            0,
            ProviderConfig::plain(DEFAULT_PROVIDER, &base_url, "demo")?,
        ),
    }
    Ok(())
}

fn build(
    entry: &ProviderFile,
    at: &str,
    env: EnvSource<'_>,
) -> Result<ProviderConfig, ConfigError> {
    let name = entry
        .name
        .as_deref()
        .ok_or_else(|| ConfigError::invalid(format!("{at}.name"), "is required"))?;
    let name_ok = !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    if !name_ok {
        return Err(ConfigError::invalid(
            format!("{at}.name"),
            format!("`{name}` must be letters, digits, `-`, `_` or `.`"),
        ));
    }
    let base_url = entry
        .base_url
        .as_deref()
        .ok_or_else(|| ConfigError::invalid(format!("{at}.base_url"), "is required"))?;
    let mut provider = ProviderConfig::plain(name, base_url, &format!("{at}.base_url"))?;

    let mut globs = GlobSetBuilder::new();
    for (j, pattern) in entry.models.iter().enumerate() {
        let glob = Glob::new(pattern).map_err(|err| {
            ConfigError::invalid(format!("{at}.models[{j}]"), format!("`{pattern}`: {err}"))
        })?;
        globs.add(glob);
    }
    provider.model_globs = globs
        .build()
        .map_err(|err| ConfigError::invalid(format!("{at}.models"), err.to_string()))?;
    provider.models = entry.models.clone();

    let header = match entry
        .auth_header
        .as_deref()
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("authorization") => AuthHeader::Authorization,
        Some("x-api-key") => AuthHeader::XApiKey,
        Some(other) => {
            return Err(ConfigError::invalid(
                format!("{at}.auth_header"),
                format!("`{other}` must be `authorization` or `x-api-key`"),
            ));
        }
    };
    let key = match (&entry.api_key_env, &entry.api_key_file) {
        (Some(_), Some(_)) => {
            return Err(ConfigError::invalid(
                format!("{at}.api_key_env"),
                "give api_key_env or api_key_file, not both",
            ));
        }
        (Some(var), None) => Some(
            env(var)
                .map(|v| v.trim().to_owned())
                .filter(|v| !v.is_empty())
                .ok_or_else(|| {
                    ConfigError::invalid(
                        format!("{at}.api_key_env"),
                        format!("environment variable {var} is not set"),
                    )
                })?,
        ),
        (None, Some(path)) => {
            let text = std::fs::read_to_string(path).map_err(|err| {
                ConfigError::invalid(
                    format!("{at}.api_key_file"),
                    format!("cannot read {path}: {err}"),
                )
            })?;
            let key = text.trim().to_owned();
            if key.is_empty() {
                return Err(ConfigError::invalid(
                    format!("{at}.api_key_file"),
                    format!("{path} is empty"),
                ));
            }
            Some(key)
        }
        (None, None) => None,
    };
    if let Some(key) = key {
        let text = match header {
            AuthHeader::Authorization => format!("Bearer {key}"),
            AuthHeader::XApiKey => key,
        };
        let mut value = HeaderValue::from_str(&text).map_err(|_| {
            ConfigError::invalid(
                format!("{at}.api_key"),
                "the key holds characters a header cannot carry",
            )
        })?;
        value.set_sensitive(true);
        provider.credential = Some(Credential { header, value });
    }

    for (key, value) in &entry.headers {
        let name = HeaderName::from_bytes(key.as_bytes()).map_err(|_| {
            ConfigError::invalid(
                format!("{at}.headers"),
                format!("`{key}` is not a header name"),
            )
        })?;
        let value = HeaderValue::from_str(value).map_err(|_| {
            ConfigError::invalid(format!("{at}.headers.{key}"), "is not a valid header value")
        })?;
        provider.headers.push((name, value));
    }
    provider.include_usage = entry.include_usage.unwrap_or(true);
    Ok(provider)
}

fn check_base_url(url: &str, field: &str) -> Result<String, ConfigError> {
    let uri: http::Uri = url
        .parse()
        .map_err(|_| ConfigError::invalid(field, format!("`{url}` is not a URL")))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => {
            return Err(ConfigError::invalid(
                field,
                format!("`{url}` must start with http:// or https://"),
            ));
        }
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(ConfigError::invalid(field, format!("`{url}` has no host")));
    }
    if uri.query().is_some() || url.contains('#') {
        return Err(ConfigError::invalid(
            field,
            format!("`{url}` must not carry a query or fragment"),
        ));
    }
    Ok(url.trim_end_matches('/').to_owned())
}
