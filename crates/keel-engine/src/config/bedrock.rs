//! The keys of a `kind = "bedrock"` provider: its AWS region and the
//! credentials its requests are signed with (SigV4). Credentials left out
//! of the file come from the standard `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY` and `AWS_SESSION_TOKEN` variables, else from
//! AWS's shared credentials file ([`super::aws_profile`]), read once when
//! the file is loaded, like every `${VAR}`.

use std::fmt;
use std::sync::Arc;

use super::aws_profile::{Found, Source};
use super::{ConfigError, RawConfig, RawProvider, Secret, Validator};

/// How a Bedrock provider's requests are signed.
#[derive(Clone, PartialEq, Eq)]
pub struct BedrockAuth {
    /// The AWS region (`us-east-1`): part of the signature's scope.
    pub region: String,
    /// The access key id.
    pub access_key_id: Secret,
    /// The secret access key.
    pub secret_access_key: Secret,
    /// The session token of temporary credentials.
    pub session_token: Option<Secret>,
}

impl fmt::Debug for BedrockAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secrets print masked ([`Secret`]'s own Debug).
        f.debug_struct("BedrockAuth")
            .field("region", &self.region)
            .field("access_key_id", &self.access_key_id)
            .field("secret_access_key", &self.secret_access_key)
            .field("session_token", &self.session_token)
            .finish()
    }
}

/// Whether raw provider `name` is a Bedrock provider.
fn is_bedrock(name: &str, p: &RawProvider) -> bool {
    p.kind.as_deref().unwrap_or(name) == "bedrock"
}

/// Fills the credentials a Bedrock provider leaves out from the standard
/// AWS variables of `env`.
pub(super) fn default_credentials(raw: &mut RawConfig, env: &dyn Fn(&str) -> Option<String>) {
    for (name, p) in raw.providers.iter_mut() {
        if !is_bedrock(name, p) {
            continue;
        }
        let from_env = |v: &mut Option<String>, var: &str| {
            if v.is_none() {
                *v = env(var).filter(|s| !s.is_empty());
            }
        };
        from_env(&mut p.access_key_id, "AWS_ACCESS_KEY_ID");
        from_env(&mut p.secret_access_key, "AWS_SECRET_ACCESS_KEY");
        from_env(&mut p.session_token, "AWS_SESSION_TOKEN");
        // A source gives both keys or none: the shared file only when
        // neither the config nor the environment named one.
        if p.access_key_id.is_some() || p.secret_access_key.is_some() {
            continue;
        }
        let Some(source) = Source::of(env) else {
            continue;
        };
        match source.read() {
            Found::Keys {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                p.access_key_id = Some(access_key_id);
                p.secret_access_key = Some(secret_access_key);
                if p.session_token.is_none() {
                    p.session_token = session_token;
                }
            }
            Found::Missing(why) => p.shared_credentials = Some((source.describe(), why)),
        }
    }
}

impl Validator<'_> {
    /// The signing keys of provider `key` (`None` for a provider of another
    /// kind, which may not set them).
    pub(super) fn bedrock(
        &self,
        key: &str,
        bedrock: bool,
        p: &RawProvider,
    ) -> Result<Option<Arc<BedrockAuth>>, ConfigError> {
        let aws_keys = [
            ("region", p.region.is_some()),
            ("access_key_id", p.access_key_id.is_some()),
            ("secret_access_key", p.secret_access_key.is_some()),
            ("session_token", p.session_token.is_some()),
        ];
        if !bedrock {
            if let Some((field, _)) = aws_keys.iter().find(|(_, set)| *set) {
                return Err(self.invalid(
                    &format!("{key}.{field}"),
                    "a key of bedrock providers only",
                    format!("a {:?} provider", p.kind.as_deref().unwrap_or("openai")),
                ));
            }
            return Ok(None);
        }
        for (field, set) in [
            ("api_key", p.api_key.is_some()),
            ("api_keys", p.api_keys.is_some()),
        ] {
            if set {
                return Err(self.invalid(
                    &format!("{key}.{field}"),
                    "no API key on a bedrock provider (requests are signed with access_key_id and secret_access_key)",
                    "a key",
                ));
            }
        }
        let region = match p.region.as_deref().map(str::trim) {
            Some(r)
                if !r.is_empty()
                    && r.bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-') =>
            {
                r.to_owned()
            }
            Some(r) => {
                return Err(self.invalid(
                    &format!("{key}.region"),
                    "an AWS region like \"us-east-1\"",
                    format!("{r:?}"),
                ))
            }
            None => {
                return Err(self.invalid(
                    &format!("{key}.region"),
                    "an AWS region like \"us-east-1\"",
                    "nothing",
                ))
            }
        };
        let credential = |field: &str, var: &str, v: &Option<String>| {
            v.clone()
                .filter(|s| !s.is_empty())
                .map(Secret::new)
                .ok_or_else(|| {
                    let what = field.replace('_', " ");
                    match &p.shared_credentials {
                        Some((place, why)) => self.invalid(
                            &format!("{key}.{field}"),
                            &format!(
                                "an AWS {what} (or {var} in the environment, or aws_{field} in {place})"
                            ),
                            format!("nothing ({why})"),
                        ),
                        None => self.invalid(
                            &format!("{key}.{field}"),
                            &format!("an AWS {what} (or {var} in the environment)"),
                            "nothing",
                        ),
                    }
                })
        };
        Ok(Some(Arc::new(BedrockAuth {
            region,
            access_key_id: credential("access_key_id", "AWS_ACCESS_KEY_ID", &p.access_key_id)?,
            secret_access_key: credential(
                "secret_access_key",
                "AWS_SECRET_ACCESS_KEY",
                &p.secret_access_key,
            )?,
            session_token: p
                .session_token
                .clone()
                .filter(|s| !s.is_empty())
                .map(Secret::new),
        })))
    }
}
