//! What a request needs from a deployment (its requirements), for the
//! capability filter, routing, cost estimates and tenant limits.

use crate::call::{ChatCall, ClientApi, Work};
use crate::config::{Deployment, ProviderKind};
use crate::upstream;

/// The needs of a request, for capability matching.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Requirements {
    pub prompt_tokens: u32,
    /// The client's output limit (0: none given).
    pub max_tokens: u32,
    pub tools: bool,
    pub images: bool,
    pub stream: bool,
    /// Choices asked for (`n`).
    pub choices: u32,
    /// The API the client speaks (decides where its limit is clamped).
    pub api: ClientApi,
    /// What a plain request (embeddings, token count) needs instead of a
    /// chat deployment (`None`: a chat request).
    pub plain: Option<PlainNeeds>,
    /// What a Responses request needs beyond its chat translation.
    pub responses: crate::responses::ResponsesNeeds,
}

/// What a plain request needs from a deployment.
#[derive(Clone, Copy, Debug)]
pub(crate) enum PlainNeeds {
    /// Vectors: an embeddings deployment that takes this many inputs, the
    /// largest of about this many tokens, `dimensions` when asked, and
    /// inputs of token ids when there are some (Gemini embeds text only).
    Embeddings {
        inputs: usize,
        largest: u32,
        dimensions: bool,
        token_ids: bool,
    },
    /// A token count: an Anthropic deployment.
    CountTokens,
}

/// The provider's maximum of inputs per embeddings request (OpenAI's).
pub(crate) const MAX_EMBEDDING_INPUTS: u32 = 2048;

impl Requirements {
    pub(crate) fn of(call: &ChatCall, stream: bool) -> Requirements {
        let r = call.request();
        match &call.work {
            Work::Chat => {}
            Work::Embeddings(part) => {
                return Requirements {
                    prompt_tokens: part.tokens,
                    max_tokens: 0,
                    tools: false,
                    images: false,
                    stream: false,
                    choices: 1,
                    api: call.api,
                    plain: Some(PlainNeeds::Embeddings {
                        inputs: part.range.len(),
                        largest: part.largest,
                        dimensions: part.request.dimensions.is_some(),
                        token_ids: part.inputs().iter().any(serde_json::Value::is_array),
                    }),
                    responses: Default::default(),
                }
            }
            Work::CountTokens => {
                return Requirements {
                    prompt_tokens: estimate_prompt_tokens(r),
                    max_tokens: 0,
                    tools: false,
                    images: false,
                    stream: false,
                    choices: 1,
                    api: call.api,
                    plain: Some(PlainNeeds::CountTokens),
                    responses: Default::default(),
                }
            }
        }
        Requirements {
            prompt_tokens: estimate_prompt_tokens(r),
            max_tokens: r.effective_max_tokens().unwrap_or(0),
            tools: r.has_tools(),
            images: r.has_images(),
            stream,
            choices: r.n.unwrap_or(1),
            api: call.api,
            plain: None,
            responses: call.options.responses,
        }
    }

    /// The output tokens `dep` would be asked for (its clamp applied).
    pub(crate) fn output_tokens(&self, dep: &Deployment) -> u32 {
        if self.plain.is_some() {
            return 0;
        }
        let asked = (self.max_tokens > 0).then_some(self.max_tokens);
        upstream::output_limit(dep.kind, self.api, asked, dep.max_output_tokens).unwrap_or(0)
    }

    /// Tokens the limiter reserves: the prompt plus the expected output.
    pub(crate) fn reserve_tokens(&self) -> u32 {
        match self.plain {
            // Embeddings use their input; a token count uses no tokens.
            Some(PlainNeeds::Embeddings { .. }) => return self.prompt_tokens,
            Some(PlainNeeds::CountTokens) => return 0,
            None => {}
        }
        self.prompt_tokens.saturating_add(if self.max_tokens > 0 {
            self.max_tokens
        } else {
            512
        })
    }

    /// Why `dep` cannot serve this request, if it cannot.
    pub(crate) fn mismatch(&self, dep: &Deployment) -> Option<String> {
        if let Some(plain) = self.plain {
            return plain_mismatch(plain, dep);
        }
        if let Some(why) = self.responses.mismatch(dep) {
            return Some(why);
        }
        let c = &dep.capabilities;
        let output = self.output_tokens(dep);
        if self.prompt_tokens.saturating_add(output) > dep.context_window {
            return Some(format!(
                "needs ~{} prompt + {} output tokens, context window is {}",
                self.prompt_tokens, output, dep.context_window
            ));
        }
        if self.choices > 1 && dep.kind == ProviderKind::Anthropic {
            return Some(format!(
                "Anthropic generates one choice per request, n = {} was asked",
                self.choices
            ));
        }
        if self.choices > 1 && dep.kind == ProviderKind::Gemini {
            return Some(format!(
                "Keel asks Gemini for one candidate per request, n = {} was asked",
                self.choices
            ));
        }
        if self.choices > 1 && dep.kind == ProviderKind::Bedrock {
            return Some(format!(
                "Bedrock's Converse generates one choice per request, n = {} was asked",
                self.choices
            ));
        }
        if self.tools && !c.tools {
            return Some("no tool support".into());
        }
        if self.images && !c.vision {
            return Some("no image support".into());
        }
        if self.stream && !c.streaming {
            return Some("no streaming".into());
        }
        None
    }
}

/// Why `dep` cannot serve a plain request, if it cannot.
fn plain_mismatch(plain: PlainNeeds, dep: &Deployment) -> Option<String> {
    match plain {
        PlainNeeds::Embeddings {
            inputs,
            largest,
            dimensions,
            token_ids,
        } => {
            let most = dep.max_batch_inputs.unwrap_or(MAX_EMBEDDING_INPUTS) as usize;
            if dep.embedding_space.is_none() {
                Some("serves no embeddings (no embedding_space)".into())
            } else if inputs > most {
                Some(format!(
                    "takes at most {most} inputs per request, {inputs} were sent"
                ))
            } else if largest > dep.context_window {
                Some(format!(
                    "an input of ~{largest} tokens is over its input limit of {} tokens",
                    dep.context_window
                ))
            } else if dimensions && !dep.dimensions {
                Some("does not support dimensions".into())
            } else if token_ids && dep.kind == ProviderKind::Gemini {
                Some("embeds text only (Gemini takes no token ids)".into())
            } else {
                None
            }
        }
        PlainNeeds::CountTokens if dep.kind != ProviderKind::Anthropic => {
            Some("counts no tokens (not an Anthropic deployment)".into())
        }
        PlainNeeds::CountTokens => None,
    }
}

/// A rough token estimate (4 characters a token, plus per-message overhead).
pub(crate) fn estimate_prompt_tokens(r: &keel_wire::openai::ChatRequest) -> u32 {
    let chars = r.prompt_text_len() as u64;
    (chars / 4 + 4 * r.messages.len() as u64 + 3).min(u32::MAX as u64) as u32
}
