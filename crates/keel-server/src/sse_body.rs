//! Encodes the engine's canonical stream items as the client's SSE.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keel_engine::{ClientApi, Meta, StreamItem};
use keel_policy::FailureClass;
use keel_wire::sse;
use keel_wire::translate::OpenAiToAnthropicStream;
use serde_json::json;
use tokio::sync::mpsc;

struct Encoder {
    api: ClientApi,
    anthropic: Option<OpenAiToAnthropicStream>,
    ended: bool,
}

impl Encoder {
    fn item(&mut self, item: StreamItem) -> Vec<Bytes> {
        match item {
            StreamItem::Chunk(chunk) => match self.api {
                ClientApi::OpenAi => match serde_json::to_string(&chunk) {
                    Ok(s) => vec![sse::encode_data(&s)],
                    Err(_) => Vec::new(),
                },
                ClientApi::Anthropic => {
                    let conv = self
                        .anthropic
                        .get_or_insert_with(|| OpenAiToAnthropicStream::new(&chunk.model));
                    conv.push(&chunk)
                        .iter()
                        .filter_map(anthropic_event)
                        .collect()
                }
            },
            StreamItem::Error { class, message } => {
                self.ended = true;
                match self.api {
                    ClientApi::OpenAi => {
                        let body = json!({"error": {"message": message, "type": "server_error", "param": null, "code": class.as_str()}});
                        vec![sse::encode_data(&body.to_string())]
                    }
                    ClientApi::Anthropic => {
                        let ty = if class == FailureClass::Overloaded {
                            "overloaded_error"
                        } else {
                            "api_error"
                        };
                        let body =
                            json!({"type": "error", "error": {"type": ty, "message": message}});
                        vec![sse::encode_named("error", &body.to_string())]
                    }
                }
            }
        }
    }

    /// The clean end (only when no error was sent).
    fn end(&mut self) -> Vec<Bytes> {
        if self.ended {
            return Vec::new();
        }
        self.ended = true;
        match self.api {
            ClientApi::OpenAi => vec![sse::encode_data("[DONE]")],
            ClientApi::Anthropic => match self.anthropic.as_mut() {
                Some(conv) => conv.finish().iter().filter_map(anthropic_event).collect(),
                None => Vec::new(),
            },
        }
    }
}

fn anthropic_event(ev: &keel_wire::anthropic::StreamEvent) -> Option<Bytes> {
    let data = serde_json::to_string(ev).ok()?;
    Some(sse::encode_named(ev.event_name(), &data))
}

/// An SSE response that forwards `items` until the engine closes the channel.
pub(crate) fn response(
    api: ClientApi,
    items: mpsc::Receiver<StreamItem>,
    _meta: &Meta,
) -> Response {
    let enc = Encoder {
        api,
        anthropic: None,
        ended: false,
    };
    let stream = futures_util::stream::unfold(
        (items, enc, false),
        |(mut rx, mut enc, finished)| async move {
            if finished {
                return None;
            }
            match rx.recv().await {
                Some(item) => {
                    let out = enc.item(item);
                    Some((
                        Ok::<_, std::convert::Infallible>(Bytes::from(out.concat())),
                        (rx, enc, false),
                    ))
                }
                None => {
                    let out = enc.end();
                    Some((Ok(Bytes::from(out.concat())), (rx, enc, true)))
                }
            }
        },
    );
    (
        StatusCode::OK,
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}
