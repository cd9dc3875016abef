//! Embedding deployments and routes: a deployment declares the embedding
//! space its vectors belong to, and a route's chain stays inside one space,
//! because vectors of different models cannot be mixed: a silent fallback
//! to another model would corrupt the client's index. OpenAI, Azure and
//! Gemini deployments serve embeddings; the kind of a deployment does not
//! matter to a route, its space does (one space may span providers that
//! serve the same model).

use super::{ConfigError, Deployment, ProviderKind, RawDeployment, RawRoute, Validator};

/// The most inputs one Gemini `batchEmbedContents` request may carry.
const GEMINI_MAX_BATCH: u32 = 100;

/// What a deployment declares about embeddings.
pub(super) struct EmbeddingSpec {
    pub space: Option<String>,
    pub max_batch_inputs: Option<u32>,
    pub dimensions: bool,
}

impl Validator<'_> {
    /// The embedding keys of deployment `key`.
    pub(super) fn embedding(
        &self,
        key: &str,
        d: &RawDeployment,
        kind: ProviderKind,
    ) -> Result<EmbeddingSpec, ConfigError> {
        let space = match &d.embedding_space {
            Some(s) if s.trim().is_empty() => {
                return Err(self.invalid(
                    &format!("{key}.embedding_space"),
                    "the name of an embedding space",
                    "\"\"",
                ))
            }
            Some(_) if kind == ProviderKind::Bedrock => {
                return Err(self.invalid(
                    &format!("{key}.embedding_space"),
                    "a deployment of an openai, azure or gemini provider (Keel serves Bedrock's Converse API, not its embeddings)",
                    "a bedrock provider",
                ))
            }
            Some(_) if kind == ProviderKind::Anthropic => {
                return Err(self.invalid(
                    &format!("{key}.embedding_space"),
                    "a deployment of an openai, azure or gemini provider (Anthropic serves no embeddings)",
                    "an anthropic provider",
                ))
            }
            other => other.clone(),
        };
        for (field, set) in [
            ("max_batch_inputs", d.max_batch_inputs.is_some()),
            ("dimensions", d.dimensions.is_some()),
        ] {
            if set && space.is_none() {
                return Err(self.invalid(
                    &format!("{key}.{field}"),
                    "an embedding deployment (set embedding_space first)",
                    "a chat deployment",
                ));
            }
        }
        if d.max_batch_inputs == Some(0) {
            return Err(self.invalid(
                &format!("{key}.max_batch_inputs"),
                "a positive number of inputs",
                0,
            ));
        }
        // Gemini's `batchEmbedContents` takes at most 100 requests.
        let max_batch_inputs = match (kind, d.max_batch_inputs) {
            (ProviderKind::Gemini, Some(n)) if n > GEMINI_MAX_BATCH => {
                return Err(self.invalid(
                    &format!("{key}.max_batch_inputs"),
                    &format!("1..={GEMINI_MAX_BATCH} (Gemini's batchEmbedContents takes at most {GEMINI_MAX_BATCH} inputs)"),
                    n,
                ))
            }
            (ProviderKind::Gemini, None) if space.is_some() => Some(GEMINI_MAX_BATCH),
            (_, n) => n,
        };
        Ok(EmbeddingSpec {
            space,
            max_batch_inputs,
            dimensions: d.dimensions.unwrap_or(true),
        })
    }

    /// The embedding space of route `key`, whose chain (indexes into
    /// `deployments`) must stay in one space, or hold only chat deployments.
    pub(super) fn route_space(
        &self,
        key: &str,
        r: &RawRoute,
        chain: &[usize],
        deployments: &[Deployment],
    ) -> Result<Option<String>, ConfigError> {
        let first = &deployments[chain[0]];
        let describe = |d: &Deployment| match &d.embedding_space {
            Some(s) => format!("deployments.{} of embedding space {s:?}", d.name),
            None => format!(
                "deployments.{}, a chat deployment (no embedding_space)",
                d.name
            ),
        };
        let expected = match &first.embedding_space {
            Some(s) => format!(
                "a deployment of embedding space {s:?}, as deployments.{} is",
                first.name
            ),
            None => format!("a chat deployment, as deployments.{} is", first.name),
        };
        let listed = chain
            .iter()
            .enumerate()
            .map(|(i, &d)| (format!("{key}.chain[{i}]"), d));
        for (at, d) in listed {
            let d = &deployments[d];
            if d.embedding_space != first.embedding_space {
                return Err(self.invalid(&at, &expected, describe(d)));
            }
        }
        if first.embedding_space.is_some() {
            for (field, set) in [
                ("static_response", r.static_response.is_some()),
                ("json_schema", r.json_schema.is_some()),
                ("refusal_fallbacks", !r.refusal_fallbacks.is_empty()),
            ] {
                if set {
                    return Err(self.invalid(
                        &format!("{key}.{field}"),
                        "nothing on an embeddings route (its answers are vectors)",
                        "a value",
                    ));
                }
            }
        }
        Ok(first.embedding_space.clone())
    }
}
