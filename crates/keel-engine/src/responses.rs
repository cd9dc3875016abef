//! What a Responses request needs of a deployment beyond what its chat
//! translation needs: built-in tools (served only by native deployments
//! that declare them) and fields only a native deployment can honour
//! (`include`, `truncation`, `background`). Capability matching leaves out
//! any other deployment, with the reason in the 400 when none is left.
//! (`reasoning` is no requirement: it is passed to the deployments that
//! take it, see [`crate::config::ResponsesSupport::reasoning`].)

use keel_wire::responses::{ResponsesRequest, BUILTIN_TOOLS, NATIVE_FIELDS};

use crate::config::Deployment;

/// The needs of a Responses request (none for any other request).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ResponsesNeeds {
    /// Built-in tools asked for: bit `i` is [`BUILTIN_TOOLS`]`[i]`.
    builtin_tools: u16,
    /// Native-only fields set: bit `i` is [`NATIVE_FIELDS`]`[i]`.
    native_fields: u8,
}

impl ResponsesNeeds {
    /// The needs of `req`; `Err` names a tool type that is neither a
    /// function nor a built-in tool (`tools[i].type`).
    pub fn of(req: &ResponsesRequest) -> Result<ResponsesNeeds, String> {
        let mut needs = ResponsesNeeds::default();
        for (i, kind) in req.builtin_tools() {
            match BUILTIN_TOOLS.iter().position(|t| *t == kind) {
                Some(bit) => needs.builtin_tools |= 1 << bit,
                None => {
                    return Err(format!(
                        "tools[{i}].type: tools of type `{kind}` are not supported (function tools, or a built-in tool: {})",
                        BUILTIN_TOOLS.join(", ")
                    ))
                }
            }
        }
        for field in req.native_fields() {
            if let Some(bit) = NATIVE_FIELDS.iter().position(|(f, _)| *f == field) {
                needs.native_fields |= 1 << bit;
            }
        }
        Ok(needs)
    }

    /// Whether the request needs anything of its own.
    pub fn any(&self) -> bool {
        *self != ResponsesNeeds::default()
    }

    /// Why `dep` cannot serve the request, if it cannot.
    pub(crate) fn mismatch(&self, dep: &Deployment) -> Option<String> {
        if !self.any() {
            return None;
        }
        let r = &dep.responses;
        if !r.native {
            if let Some((field, _)) = bits(self.native_fields.into(), &NATIVE_FIELDS).next() {
                return Some(format!(
                    "cannot honour `{field}`: not a native Responses deployment (responses = true)"
                ));
            }
        }
        if let Some(tool) = bits(self.builtin_tools, &BUILTIN_TOOLS).find(|t| !r.serves_tool(t)) {
            return Some(format!(
                "does not serve the built-in tool `{tool}` (not in its builtin_tools)"
            ));
        }
        None
    }
}

/// The entries of `table` whose bits are set in `mask`.
fn bits<T: Copy>(mask: u16, table: &[T]) -> impl Iterator<Item = T> + '_ {
    table
        .iter()
        .enumerate()
        .filter(move |(i, _)| mask & (1 << i) != 0)
        .map(|(_, t)| *t)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
    use super::*;

    fn deployments() -> Vec<Deployment> {
        crate::config::Config::from_toml_str(
            r#"
[providers.oa]
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
[providers.an]
kind = "anthropic"
base_url = "http://127.0.0.1:1/v1"
[deployments.native]
provider = "oa"
model = "m"
responses = true
builtin_tools = ["web_search"]
[deployments.chat]
provider = "oa"
model = "m"
[deployments.claude]
provider = "an"
model = "m"
[routes.r]
chain = ["native", "chat", "claude"]
"#,
            "t.toml",
            &|_| None,
        )
        .unwrap()
        .deployments
    }

    fn needs(v: serde_json::Value) -> Result<ResponsesNeeds, String> {
        ResponsesNeeds::of(&serde_json::from_value(v).unwrap())
    }

    #[test]
    fn only_deployments_that_can_serve_a_request_match_it() {
        let d = deployments();
        let named = |n: &str| d.iter().find(|dep| dep.name == n).unwrap();
        let (native, chat, claude) = (named("native"), named("chat"), named("claude"));
        let plain = needs(serde_json::json!({"model": "r", "input": "x",
            "truncation": "disabled", "background": false, "include": []}))
        .unwrap();
        assert!(!plain.any());
        assert!(d.iter().all(|dep| plain.mismatch(dep).is_none()));
        let web = needs(serde_json::json!({"model": "r", "input": "x",
            "tools": [{"type": "function", "name": "f"}, {"type": "web_search"}]}))
        .unwrap();
        assert_eq!(web.mismatch(native), None);
        let why = web.mismatch(chat).unwrap();
        assert!(why.contains("built-in tool `web_search`"), "{why}");
        let files = needs(serde_json::json!({"model": "r", "input": "x",
            "tools": [{"type": "file_search"}]}))
        .unwrap();
        assert!(files.mismatch(native).unwrap().contains("`file_search`"));
        // `reasoning` is passed where it is taken, never a reason to skip.
        let reasoning =
            needs(serde_json::json!({"model": "r", "input": "x", "reasoning": {"effort": "low"}}))
                .unwrap();
        assert!(d.iter().all(|dep| reasoning.mismatch(dep).is_none()));
        let _ = claude;
        let trunc =
            needs(serde_json::json!({"model": "r", "input": "x", "truncation": "auto"})).unwrap();
        assert_eq!(trunc.mismatch(native), None);
        assert!(trunc.mismatch(chat).unwrap().contains("`truncation`"));
        let bad = needs(serde_json::json!({"model": "r", "input": "x",
            "tools": [{"type": "function", "name": "f"}, {"type": "teleport"}]}));
        assert!(bad
            .unwrap_err()
            .starts_with("tools[1].type: tools of type `teleport`"));
    }
}
