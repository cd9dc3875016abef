//! AWS's shared credentials file (`~/.aws/credentials`), the last place a
//! Bedrock provider's keys come from, as every AWS SDK and the CLI read
//! it: the profile `AWS_PROFILE` names (else `default`) of the file
//! `AWS_SHARED_CREDENTIALS_FILE` names (else `$HOME/.aws/credentials`),
//! its static keys `aws_access_key_id`, `aws_secret_access_key` and
//! `aws_session_token`. Read once, when the config is loaded.
//!
//! Only static keys: a profile that gets its keys by running a process,
//! assuming a role or SSO is not followed (Keel would need the AWS SDK's
//! credential providers for that); such a profile has no
//! `aws_access_key_id`, and the config error says so.

use std::collections::HashMap;
use std::path::PathBuf;

/// Where shared credentials are looked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Source {
    /// The credentials file.
    pub path: PathBuf,
    /// The profile (section) in it.
    pub profile: String,
}

/// What the shared file gave.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Found {
    /// A profile with both keys (and a session token, when it has one).
    Keys {
        access_key_id: String,
        secret_access_key: String,
        session_token: Option<String>,
    },
    /// Why there are none, for the config error: "the file does not
    /// exist", "the file has no profile \"dev\"", ...
    Missing(String),
}

impl Source {
    /// The file and profile `env` names; `None` when neither
    /// `AWS_SHARED_CREDENTIALS_FILE` nor `HOME` is set.
    pub(super) fn of(env: &dyn Fn(&str) -> Option<String>) -> Option<Source> {
        let set = |var: &str| env(var).filter(|v| !v.trim().is_empty());
        let path = match set("AWS_SHARED_CREDENTIALS_FILE") {
            Some(p) => PathBuf::from(p),
            None => PathBuf::from(set("HOME")?).join(".aws").join("credentials"),
        };
        let profile = set("AWS_PROFILE").unwrap_or_else(|| "default".to_owned());
        Some(Source { path, profile })
    }

    /// Reads the profile's keys.
    pub(super) fn read(&self) -> Found {
        match std::fs::read_to_string(&self.path) {
            Ok(text) => self.find(&text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                Found::Missing("the file does not exist".into())
            }
            Err(e) => Found::Missing(format!("the file cannot be read: {e}")),
        }
    }

    /// The profile's keys in the text of a credentials file.
    fn find(&self, text: &str) -> Found {
        let Some(keys) = sections(text).remove(self.profile.as_str()) else {
            return Found::Missing(format!("the file has no profile {:?}", self.profile));
        };
        let key = |k: &str| keys.get(k).filter(|v| !v.is_empty()).cloned();
        match (key("aws_access_key_id"), key("aws_secret_access_key")) {
            (Some(access_key_id), Some(secret_access_key)) => Found::Keys {
                access_key_id,
                secret_access_key,
                session_token: key("aws_session_token"),
            },
            (None, _) => Found::Missing(format!(
                "profile {:?} has no aws_access_key_id",
                self.profile
            )),
            (Some(_), None) => Found::Missing(format!(
                "profile {:?} has no aws_secret_access_key",
                self.profile
            )),
        }
    }

    /// Where the keys were looked for, for an error message.
    pub(super) fn describe(&self) -> String {
        format!("profile {:?} of {}", self.profile, self.path.display())
    }
}

/// The sections of an INI text: `[name]` headers, `key = value` lines
/// (keys lower-cased, as the AWS CLI reads them), `#` and `;` comment lines.
fn sections(text: &str) -> HashMap<&str, HashMap<String, String>> {
    let mut out: HashMap<&str, HashMap<String, String>> = HashMap::new();
    let mut current: Option<&str> = None;
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') || line.starts_with(';') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            let name = name.trim();
            out.entry(name).or_default();
            current = Some(name);
            continue;
        }
        if let (Some(section), Some((k, v))) = (current, line.split_once('=')) {
            out.entry(section)
                .or_default()
                .insert(k.trim().to_ascii_lowercase(), v.trim().to_owned());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILE: &str = "# a comment\n[default]\naws_access_key_id = AKIDDEFAULT\naws_secret_access_key=secret-default\n\n\
        [dev]\n; another\nAWS_ACCESS_KEY_ID = AKIDDEV\naws_secret_access_key = secret-dev\naws_session_token = token-dev\n\
        [sso]\nsso_start_url = https://example.awsapps.com/start\n[half]\naws_access_key_id = AKIDHALF\n";

    fn source(profile: &str) -> Source {
        Source {
            path: PathBuf::from("/x/credentials"),
            profile: profile.into(),
        }
    }

    #[test]
    fn profiles_are_read_as_the_aws_cli_reads_them() {
        assert_eq!(
            source("default").find(FILE),
            Found::Keys {
                access_key_id: "AKIDDEFAULT".into(),
                secret_access_key: "secret-default".into(),
                session_token: None
            }
        );
        assert_eq!(
            source("dev").find(FILE),
            Found::Keys {
                access_key_id: "AKIDDEV".into(),
                secret_access_key: "secret-dev".into(),
                session_token: Some("token-dev".into())
            }
        );
        let missing = |p: &str| match source(p).find(FILE) {
            Found::Missing(why) => why,
            other => format!("{other:?}"),
        };
        assert_eq!(missing("prod"), "the file has no profile \"prod\"");
        assert_eq!(missing("sso"), "profile \"sso\" has no aws_access_key_id");
        assert_eq!(
            missing("half"),
            "profile \"half\" has no aws_secret_access_key"
        );
    }

    #[test]
    fn the_file_and_profile_come_from_the_standard_variables() {
        let env = |vars: &'static [(&'static str, &'static str)]| {
            move |k: &str| {
                vars.iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| v.to_string())
            }
        };
        assert_eq!(
            Source::of(&env(&[("HOME", "/home/u")])),
            Some(Source {
                path: PathBuf::from("/home/u/.aws/credentials"),
                profile: "default".into()
            })
        );
        assert_eq!(
            Source::of(&env(&[
                ("HOME", "/home/u"),
                ("AWS_SHARED_CREDENTIALS_FILE", "/etc/aws/creds"),
                ("AWS_PROFILE", "dev")
            ])),
            Some(source("dev")).map(|s| Source {
                path: PathBuf::from("/etc/aws/creds"),
                ..s
            })
        );
        assert_eq!(Source::of(&env(&[])), None);
    }
}
