//! What a streaming client receives.

use keel_engine::{ChatCall, Engine, RequestReport, StreamItem};

/// Streams `call` to the end: the text the client reads (an error item
/// written as `[error <class>: <message>]`, where it came) and the report
/// of what happened before the first byte.
pub async fn streamed(e: &Engine, call: ChatCall) -> (String, RequestReport) {
    let mut out = match e.chat_stream(call).await {
        Ok(out) => out,
        Err(err) => panic!("the stream did not start: {} {}", err.status, err.message),
    };
    let mut text = String::new();
    while let Some(item) = out.items.recv().await {
        match item {
            StreamItem::Chunk(c) => {
                for choice in c.into_parsed().unwrap().choices {
                    if let Some(t) = choice.delta.content {
                        text.push_str(&t);
                    }
                }
            }
            StreamItem::Error { class, message } => {
                text.push_str(&format!("[error {class:?}: {message}]"));
            }
        }
    }
    (text, out.meta)
}
