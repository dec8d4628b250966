//! Provider choice, exactly as the contract orders it: the `x-tokentap-provider` header, else a
//! `name/` prefix on the body's model (stripped before forwarding), else the first provider
//! whose model globs match, else the first provider. Only configured providers can be chosen.

use crate::config::ProviderConfig;
use crate::error::ProxyError;

/// The chosen provider's index, and the model to forward when a prefix was stripped.
#[derive(Debug, PartialEq, Eq)]
pub struct Route<'m> {
    pub provider: usize,
    pub stripped_model: Option<&'m str>,
}

pub fn choose<'m>(
    providers: &[ProviderConfig],
    header: Option<&str>,
    model: Option<&'m str>,
) -> Result<Route<'m>, ProxyError> {
    if let Some(name) = header {
        let name = name.trim();
        return providers
            .iter()
            .position(|p| p.name == name)
            .map(|provider| Route {
                provider,
                stripped_model: None,
            })
            .ok_or_else(|| ProxyError::UnknownProvider(name.to_owned()));
    }
    if let Some(model) = model {
        if let Some((prefix, rest)) = model.split_once('/') {
            if let Some(provider) = providers.iter().position(|p| p.name == prefix) {
                return Ok(Route {
                    provider,
                    stripped_model: Some(rest),
                });
            }
        }
        if let Some(provider) = providers.iter().position(|p| p.matches_model(model)) {
            return Ok(Route {
                provider,
                stripped_model: None,
            });
        }
    }
    Ok(Route {
        provider: 0,
        stripped_model: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{FileConfig, Settings};

    fn providers() -> Vec<ProviderConfig> {
        let file = FileConfig::parse(
            r#"
            [[providers]]
            name = "openai"
            base_url = "http://a"
            models = ["gpt-*"]
            [[providers]]
            name = "anthropic"
            base_url = "http://b"
            models = ["claude-*"]
            [[providers]]
            name = "openrouter"
            base_url = "http://c"
        "#,
        )
        .expect("toml");
        let cli = <crate::cli::Cli as clap::Parser>::try_parse_from(["tokentap"]).expect("cli");
        Settings::from_layers(&cli, file, &|_| None)
            .expect("valid")
            .providers
    }

    #[test]
    fn header_then_prefix_then_glob_then_first() {
        let p = providers();
        assert_eq!(
            choose(&p, Some("openrouter"), Some("gpt-4o"))
                .expect("ok")
                .provider,
            2
        );
        assert_eq!(
            choose(&p, None, Some("anthropic/claude-x")).expect("ok"),
            Route {
                provider: 1,
                stripped_model: Some("claude-x")
            }
        );
        // A slash that names no provider is part of the model (OpenRouter style).
        assert_eq!(
            choose(&p, None, Some("meta-llama/llama-3")).expect("ok"),
            Route {
                provider: 0,
                stripped_model: None
            }
        );
        assert_eq!(
            choose(&p, None, Some("claude-sonnet-4-5"))
                .expect("ok")
                .provider,
            1
        );
        assert_eq!(
            choose(&p, None, Some("mistral-large"))
                .expect("ok")
                .provider,
            0
        );
        assert_eq!(choose(&p, None, None).expect("ok").provider, 0);
        assert!(matches!(
            choose(&p, Some("evil.example.com"), None),
            Err(ProxyError::UnknownProvider(_))
        ));
    }
}
