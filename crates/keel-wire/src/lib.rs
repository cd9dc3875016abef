//! Wire types and codecs for the LLM APIs Keel fronts and calls.
//!
//! Keel speaks two dialects on both of its sides: OpenAI Chat Completions
//! ([`openai`]) and Anthropic Messages ([`anthropic`]); its clients may also
//! speak the OpenAI Responses API ([`responses`]), translated to chat. This crate holds the
//! types of both, the translation between them ([`translate`]), the
//! server-sent-events codec both use for streaming ([`sse`]), and small
//! content checks the engine runs on answers ([`content`]). It does no I/O:
//! the transport lives in the engine, so everything here is a pure function
//! of its input and can be tested with fixtures alone.

pub mod answer_view;
pub mod anthropic;
pub mod bedrock;
pub mod chunk_view;
pub mod content;
mod de;
pub mod embeddings;
pub mod gemini;
pub mod openai;
pub mod responses;
mod scan;
pub mod splice;
pub mod sse;
pub mod translate;
