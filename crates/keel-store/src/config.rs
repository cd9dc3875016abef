//! `[store]` settings and Redis URL validation.

use std::fmt;
use std::time::Duration;

/// Where shared state lives. The default is memory only (one process).
#[derive(Clone, Debug, PartialEq)]
pub struct StoreConfig {
    /// `[store] redis`: share state through this Redis (`None`: memory only).
    pub redis: Option<RedisUrl>,
    /// `[store] prefix`: every key starts with it, so replicas of different
    /// fleets can share one Redis.
    pub prefix: String,
    /// `[store] required`: refuse to start while Redis is unreachable.
    pub required: bool,
    /// `[store] timeout`: longest wait for one Redis operation before
    /// answering from local state.
    pub timeout: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            redis: None,
            prefix: "keel:".into(),
            required: true,
            timeout: Duration::from_millis(50),
        }
    }
}

/// A validated `redis://` URL.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl(String);

impl RedisUrl {
    /// Checks `text` is a `redis://[user[:password]@]host[:port][/db]` URL
    /// (TLS is not built in). The error is the reason, for config messages.
    pub fn parse(text: &str) -> Result<RedisUrl, String> {
        let url = url::Url::parse(text)
            .map_err(|e| format!("not a URL like redis://host:6379/0 ({e})"))?;
        match url.scheme() {
            "redis" => {}
            "rediss" => {
                return Err("TLS (rediss://) is not supported by this build; use redis://".into())
            }
            other => return Err(format!("scheme must be redis://, got {other}://")),
        }
        if url.host_str().is_none_or(str::is_empty) {
            return Err("no host".into());
        }
        let path = url.path().trim_start_matches('/');
        if !path.is_empty() && path.parse::<u32>().is_err() {
            return Err(format!(
                "the path must be a database number like /0, got /{path}"
            ));
        }
        if url.query().is_some() || url.fragment().is_some() {
            return Err("query strings and fragments are not supported".into());
        }
        redis::Client::open(text).map_err(|e| e.to_string())?;
        Ok(RedisUrl(text.to_string()))
    }

    /// The URL itself (with its password), for connecting.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// The URL with any password replaced by `***`, for messages.
    pub fn masked(&self) -> String {
        match url::Url::parse(&self.0) {
            Ok(mut u) if u.password().is_some() => {
                let _ = u.set_password(Some("***"));
                u.to_string()
            }
            _ => self.0.clone(),
        }
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert!(RedisUrl::parse("redis://127.0.0.1:6379/0").is_ok());
        assert!(RedisUrl::parse("redis://localhost").is_ok());
        assert_eq!(
            RedisUrl::parse("http://x:1").unwrap_err(),
            "scheme must be redis://, got http://"
        );
        assert_eq!(
            RedisUrl::parse("rediss://x:1").unwrap_err(),
            "TLS (rediss://) is not supported by this build; use redis://"
        );
        assert_eq!(
            RedisUrl::parse("redis://h:6379/abc").unwrap_err(),
            "the path must be a database number like /0, got /abc"
        );
        assert_eq!(
            RedisUrl::parse("127.0.0.1:6379").unwrap_err(),
            "not a URL like redis://host:6379/0 (relative URL without a base)"
        );
        let u = RedisUrl::parse("redis://user:secret@h:1/2").unwrap();
        assert_eq!(u.masked(), "redis://user:***@h:1/2");
        assert_eq!(format!("{u:?}"), "redis://user:***@h:1/2");
    }
}
