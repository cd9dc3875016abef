//! Azure OpenAI providers (`kind = "azure"`, docs/azure.md): the wire is
//! OpenAI's, so only the address and the key's header differ. A resource
//! serves its deployments either under a dated API version
//! (`/openai/deployments/{deployment}/chat/completions?api-version=2024-10-21`,
//! the deployment named in the path) or under the v1 API
//! (`/openai/v1/chat/completions`, the deployment named by the body's
//! `model`); which one is the provider's `api_version`.

use http::header::{HeaderName, HeaderValue, AUTHORIZATION};

use super::{ConfigError, RawProvider, Validator};

/// How a provider of kind `azure` is addressed and authenticated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AzureApi {
    /// The API version every request names.
    pub version: AzureVersion,
    /// How the provider's key is sent.
    pub auth: AzureAuth,
}

/// An Azure OpenAI API version.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AzureVersion {
    /// A dated version (`2024-10-21`, `2025-04-01-preview`): the deployment
    /// is named in the path and the version in the `api-version` query.
    Dated(String),
    /// The v1 API: `/openai/v1/...`, the deployment named by `model`.
    V1,
}

/// What the provider's secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AzureAuth {
    /// A resource key, sent as `api-key`.
    ApiKey,
    /// A Microsoft Entra ID (Azure AD) token, sent as `Authorization: Bearer`.
    AdToken,
}

impl AzureApi {
    /// The URL of operation `op` (`/chat/completions`, `/embeddings`) of
    /// deployment `deployment` on the resource at `base_url`.
    ///
    /// ```
    /// use keel_engine::config::{AzureApi, AzureAuth, AzureVersion};
    /// let dated = AzureApi { version: AzureVersion::Dated("2024-10-21".into()), auth: AzureAuth::ApiKey };
    /// assert_eq!(
    ///     dated.url("https://r.openai.azure.com", "gpt4o-prod", "/chat/completions"),
    ///     "https://r.openai.azure.com/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21"
    /// );
    /// let v1 = AzureApi { version: AzureVersion::V1, auth: AzureAuth::ApiKey };
    /// assert_eq!(v1.url("https://r.openai.azure.com", "gpt4o-prod", "/embeddings"), "https://r.openai.azure.com/openai/v1/embeddings");
    /// ```
    pub fn url(&self, base_url: &str, deployment: &str, op: &str) -> String {
        match &self.version {
            AzureVersion::Dated(v) => {
                format!("{base_url}/openai/deployments/{deployment}{op}?api-version={v}")
            }
            AzureVersion::V1 => format!("{base_url}/openai/v1{op}"),
        }
    }

    /// The header carrying `secret`, marked sensitive.
    pub(crate) fn auth_header(&self, secret: &str) -> Option<(HeaderName, HeaderValue)> {
        const API_KEY: HeaderName = HeaderName::from_static("api-key");
        match self.auth {
            AzureAuth::ApiKey => crate::transport::secret_header(secret).map(|v| (API_KEY, v)),
            AzureAuth::AdToken => crate::transport::secret_header(&format!("Bearer {secret}"))
                .map(|v| (AUTHORIZATION, v)),
        }
    }
}

/// `2024-10-21` or `2025-04-01-preview`.
fn dated(v: &str) -> bool {
    let (date, rest) = v.split_at(v.len().min(10));
    let b = date.as_bytes();
    b.len() == 10
        && b.iter().enumerate().all(|(i, c)| {
            if i == 4 || i == 7 {
                *c == b'-'
            } else {
                c.is_ascii_digit()
            }
        })
        && (rest.is_empty() || rest == "-preview")
}

/// Letters, digits, `-`, `_` and `.`: what Azure allows in a deployment name
/// (so it can stand in a path unescaped).
pub(super) fn deployment_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
}

impl Validator<'_> {
    /// The Azure keys of provider `key` (`providers.NAME`): `Some` for an
    /// azure provider, `None` for any other (which may not set them). An
    /// Entra ID token joins the key pool as its only secret.
    pub(super) fn azure(
        &self,
        key: &str,
        p: &RawProvider,
        azure: bool,
    ) -> Result<Option<(AzureApi, Option<String>)>, ConfigError> {
        if !azure {
            for (field, set) in [
                ("api_version", p.api_version.is_some()),
                ("azure_ad_token", p.azure_ad_token.is_some()),
            ] {
                if set {
                    return Err(self.invalid(
                        &format!("{key}.{field}"),
                        "no such key (only kind = \"azure\" takes it)",
                        format!("kind = \"{}\"", p.kind.as_deref().unwrap_or("openai")),
                    ));
                }
            }
            return Ok(None);
        }
        match p.base_url.as_deref().map(|u| u.trim_end_matches('/')) {
            None => {
                return Err(self.invalid(
                    &format!("{key}.base_url"),
                    "the resource endpoint, like \"https://NAME.openai.azure.com\"",
                    "nothing",
                ))
            }
            Some(u) if u.ends_with("/openai") || u.ends_with("/openai/v1") => {
                return Err(self.invalid(
                    &format!("{key}.base_url"),
                    "the resource endpoint without /openai (Keel adds the path)",
                    format!("{u:?}"),
                ))
            }
            Some(_) => {}
        }
        let expected = "\"v1\" or a dated version like \"2024-10-21\"";
        let version = match p.api_version.as_deref() {
            None => return Err(self.invalid(&format!("{key}.api_version"), expected, "nothing")),
            Some("v1") => AzureVersion::V1,
            Some(v) if dated(v) => AzureVersion::Dated(v.to_owned()),
            Some(v) => {
                return Err(self.invalid(&format!("{key}.api_version"), expected, format!("{v:?}")))
            }
        };
        let token = p.azure_ad_token.clone();
        let has_key = p.api_key.as_deref().is_some_and(|k| !k.is_empty()) || p.api_keys.is_some();
        let auth = match &token {
            Some(t) if t.is_empty() => {
                return Err(self.invalid(
                    &format!("{key}.azure_ad_token"),
                    "a Microsoft Entra ID token",
                    "\"\"",
                ))
            }
            Some(_) if has_key => {
                return Err(self.invalid(
                    &format!("{key}.azure_ad_token"),
                    "either api_key/api_keys or azure_ad_token, not both",
                    "both",
                ))
            }
            Some(_) => AzureAuth::AdToken,
            None => AzureAuth::ApiKey,
        };
        Ok(Some((AzureApi { version, auth }, token)))
    }
}
