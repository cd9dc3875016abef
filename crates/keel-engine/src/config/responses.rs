//! What a deployment declares about the OpenAI Responses API: whether it
//! speaks it natively (`responses = true`: the client's Responses request
//! goes to its `/responses` as the client wrote it), whether it takes
//! `reasoning`, and which built-in tools (`web_search`, `file_search`, ...)
//! it serves. Every other deployment answers Responses clients through the
//! chat translation.

use super::{ConfigError, ProviderKind, RawDeployment, Validator};

/// A deployment's Responses support.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ResponsesSupport {
    /// Serves `POST /responses` itself (`responses = true`).
    pub native: bool,
    /// Takes a Responses request's `reasoning` (`reasoning = true`; the
    /// default for native deployments).
    pub reasoning: bool,
    /// The built-in tool types it serves (`builtin_tools`), natively only.
    pub builtin_tools: Vec<String>,
    /// `base_url` + `/responses`, for native deployments.
    pub endpoint: Option<http::Uri>,
    /// This value of the deployment posts to [`Self::endpoint`] and reads
    /// Responses answers (see [`super::Deployment::responses_wire`]).
    pub speaks: bool,
}

impl ResponsesSupport {
    /// Whether it serves the built-in tool type `kind`.
    pub fn serves_tool(&self, kind: &str) -> bool {
        self.builtin_tools.iter().any(|t| t == kind)
    }
}

impl Validator<'_> {
    /// The Responses keys of deployment `key`.
    pub(super) fn responses_support(
        &self,
        key: &str,
        d: &RawDeployment,
        kind: ProviderKind,
        base_url: &str,
    ) -> Result<ResponsesSupport, ConfigError> {
        let native = d.responses.unwrap_or(false);
        if native && kind != ProviderKind::OpenAi {
            return Err(self.invalid(
                &format!("{key}.responses"),
                "a deployment of an openai provider (only OpenAI serves the Responses API natively)",
                format!("a provider of kind {:?}", kind.as_str()),
            ));
        }
        if d.reasoning == Some(true) && kind != ProviderKind::OpenAi {
            return Err(self.invalid(
                &format!("{key}.reasoning"),
                "a deployment of an openai provider (Keel passes reasoning to OpenAI models only)",
                format!("a provider of kind {:?}", kind.as_str()),
            ));
        }
        let builtin_tools = d.builtin_tools.clone().unwrap_or_default();
        if !builtin_tools.is_empty() && !native {
            return Err(self.invalid(
                &format!("{key}.builtin_tools"),
                "a native Responses deployment (set responses = true): built-in tools are served by the provider",
                "a deployment without responses = true",
            ));
        }
        for (i, t) in builtin_tools.iter().enumerate() {
            if t.trim().is_empty() || t == "function" {
                return Err(self.invalid(
                    &format!("{key}.builtin_tools[{i}]"),
                    "a built-in tool type such as \"web_search\" or \"file_search\"",
                    format!("{t:?}"),
                ));
            }
        }
        Ok(ResponsesSupport {
            native,
            reasoning: d.reasoning.unwrap_or(native),
            builtin_tools,
            endpoint: native
                .then(|| http::Uri::try_from(format!("{base_url}/responses")).ok())
                .flatten(),
            speaks: false,
        })
    }
}

impl super::Deployment {
    /// This deployment as a native Responses request reaches it: posted to
    /// its `/responses` endpoint, its answer read as a Response.
    pub(crate) fn responses_wire(&self) -> super::Deployment {
        let mut d = self.clone();
        if let Some(uri) = &self.responses.endpoint {
            d.endpoint = Some(uri.clone());
            d.responses.speaks = true;
        }
        d
    }
}

/// `[responses]`: how stored responses are kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ResponsesConfig {
    /// `ttl`: how long a stored response is kept (default 30 days).
    pub ttl: std::time::Duration,
    /// `max_items`: the most items a conversation may hold (its history,
    /// the request's input and the answer's output; default 10,000).
    pub max_items: usize,
}

impl Default for ResponsesConfig {
    fn default() -> Self {
        ResponsesConfig {
            ttl: DEFAULT_TTL,
            max_items: DEFAULT_MAX_ITEMS,
        }
    }
}

/// Stored responses are kept 30 days unless `[responses] ttl` says otherwise.
pub const DEFAULT_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 24 * 3600);
const DEFAULT_MAX_ITEMS: usize = 10_000;

/// `[responses]` as written.
#[derive(serde::Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawResponsesConfig {
    ttl: Option<String>,
    max_items: Option<u64>,
}

impl Validator<'_> {
    /// `[responses]`.
    pub(super) fn responses_config(
        &self,
        raw: &RawResponsesConfig,
    ) -> Result<ResponsesConfig, ConfigError> {
        let ttl = self.duration("responses.ttl", &raw.ttl, DEFAULT_TTL)?;
        if ttl.is_zero() {
            return Err(self.invalid(
                "responses.ttl",
                "a positive duration like \"30days\" or \"12h\"",
                format!("{:?}", raw.ttl.as_deref().unwrap_or_default()),
            ));
        }
        let max_items = match raw.max_items {
            None => DEFAULT_MAX_ITEMS,
            Some(n) => match usize::try_from(n) {
                Ok(n) if n > 0 => n,
                _ => {
                    return Err(self.invalid(
                        "responses.max_items",
                        "a positive number of items",
                        n,
                    ))
                }
            },
        };
        Ok(ResponsesConfig { ttl, max_items })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;
    use crate::config::Config;

    const BASE: &str = r#"
[providers.oa]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[providers.an]
kind = "anthropic"
base_url = "http://127.0.0.1:1/v1"
[routes.r]
chain = ["d"]
"#;

    fn load(extra: &str) -> Result<Config, String> {
        Config::from_toml_str(&format!("{BASE}{extra}"), "k.toml", &|_| None)
            .map_err(|e| e.to_string())
    }

    #[test]
    fn native_deployments_post_to_responses() {
        let c = load("[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\nresponses = true\nbuiltin_tools = [\"web_search\"]\n").unwrap();
        let d = &c.deployments[0];
        assert!(
            d.responses.native && d.responses.reasoning && d.responses.serves_tool("web_search")
        );
        assert!(!d.responses.serves_tool("file_search"));
        let wire = d.responses_wire();
        assert!(wire.responses.speaks);
        assert_eq!(
            wire.endpoint.unwrap().to_string(),
            "http://127.0.0.1:1/v1/responses"
        );
        assert_eq!(
            d.endpoint.as_ref().unwrap().to_string(),
            "http://127.0.0.1:1/v1/chat/completions"
        );
        assert_eq!(c.responses, ResponsesConfig::default());
        assert_eq!(c.responses.ttl, DEFAULT_TTL);
        let plain = load("[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\n").unwrap();
        assert_eq!(plain.deployments[0].responses, ResponsesSupport::default());
    }

    #[test]
    fn bad_responses_keys_are_named() {
        for (extra, want) in [
            (
                "[deployments.d]\nprovider = \"an\"\nmodel = \"m\"\nresponses = true\n",
                "k.toml: deployments.d.responses: expected a deployment of an openai provider (only OpenAI serves the Responses API natively), got a provider of kind \"anthropic\"",
            ),
            (
                "[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\nbuiltin_tools = [\"web_search\"]\n",
                "k.toml: deployments.d.builtin_tools: expected a native Responses deployment (set responses = true): built-in tools are served by the provider, got a deployment without responses = true",
            ),
            (
                "[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\nresponses = true\nbuiltin_tools = [\"function\"]\n",
                "k.toml: deployments.d.builtin_tools[0]: expected a built-in tool type such as \"web_search\" or \"file_search\", got \"function\"",
            ),
            (
                "[deployments.d]\nprovider = \"an\"\nmodel = \"m\"\nreasoning = true\n",
                "k.toml: deployments.d.reasoning: expected a deployment of an openai provider (Keel passes reasoning to OpenAI models only), got a provider of kind \"anthropic\"",
            ),
            (
                "[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\n[responses]\nttl = \"0s\"\n",
                "k.toml: responses.ttl: expected a positive duration like \"30days\" or \"12h\", got \"0s\"",
            ),
            (
                "[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\n[responses]\nttl = \"soon\"\n",
                "k.toml: responses.ttl: expected a duration like \"30s\" or \"250ms\", got \"soon\"",
            ),
            (
                "[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\n[responses]\nmax_items = 0\n",
                "k.toml: responses.max_items: expected a positive number of items, got 0",
            ),
        ] {
            assert_eq!(load(extra).unwrap_err(), want, "{extra}");
        }
        let c = load("[deployments.d]\nprovider = \"oa\"\nmodel = \"m\"\n[responses]\nttl = \"12h\"\nmax_items = 50\n").unwrap();
        assert_eq!(c.responses.ttl, std::time::Duration::from_secs(12 * 3600));
        assert_eq!(c.responses.max_items, 50);
    }
}
