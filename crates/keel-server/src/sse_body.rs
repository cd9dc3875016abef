//! Encodes the engine's canonical stream items as the client's SSE.

use axum::body::Body;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keel_engine::{ClientApi, StreamItem, StreamItems};
use keel_policy::FailureClass;
use keel_wire::sse;
use keel_wire::translate::{ChatToResponsesStream, OpenAiToAnthropicStream, ResponsesEvent};
use serde_json::json;
use tokio::sync::mpsc;

use crate::stored_responses::Pending;

struct Encoder {
    api: ClientApi,
    anthropic: Option<OpenAiToAnthropicStream>,
    /// For a Responses client (boxed: the encoder moves with every frame).
    responses: Option<Box<ResponsesOut>>,
    ended: bool,
}

/// A Responses client's stream state.
struct ResponsesOut {
    /// Its events and final response.
    conv: ChatToResponsesStream,
    /// For a stored Responses stream: where its final response goes, kept
    /// before the last event leaves (a clean end only).
    keep: Option<Pending>,
    /// The final response of a cleanly ended Responses stream.
    finished: Option<keel_wire::responses::Response>,
}

impl Encoder {
    /// Appends the events of `item` to `out`.
    fn item(&mut self, item: StreamItem, out: &mut Vec<u8>) {
        match item {
            StreamItem::Chunk(chunk) => match (self.api, chunk.raw_json_parts()) {
                // The provider's own bytes, with the client's model (one
                // line: the engine passes through no chunk with a break).
                (ClientApi::OpenAi | ClientApi::Embeddings, Some(parts)) => {
                    sse::write_data_line(out, &parts)
                }
                (ClientApi::OpenAi | ClientApi::Embeddings, None) => {
                    if let Ok(chunk) = chunk.parsed() {
                        if let Ok(json) = serde_json::to_vec(&*chunk) {
                            sse::write_data(out, &json);
                        }
                    }
                }
                // A native deployment's own event, as it came.
                (ClientApi::Responses, _) if chunk.native_event().is_some() => {
                    let native = chunk.native_event().unwrap_or_default();
                    if let Some((name, data)) =
                        self.responses.as_mut().and_then(|r| r.conv.native(native))
                    {
                        sse::write_named(out, &name, &data);
                    }
                }
                (ClientApi::Responses, _) => match (chunk.into_parsed(), self.responses.as_mut()) {
                    (Ok(chunk), Some(r)) => responses_events(&r.conv.push(&chunk), out),
                    (Ok(_), None) => {}
                    (Err(e), _) => self.item(
                        StreamItem::Error {
                            class: FailureClass::Network,
                            message: format!("unreadable stream chunk: {e}"),
                        },
                        out,
                    ),
                },
                (ClientApi::Anthropic, _) => match chunk.into_parsed() {
                    Ok(chunk) => {
                        let conv = self
                            .anthropic
                            .get_or_insert_with(|| OpenAiToAnthropicStream::new(&chunk.model));
                        for ev in conv.push(&chunk) {
                            anthropic_event(&ev, out);
                        }
                    }
                    Err(e) => self.item(
                        StreamItem::Error {
                            class: FailureClass::Network,
                            message: format!("unreadable stream chunk: {e}"),
                        },
                        out,
                    ),
                },
            },
            StreamItem::Error { class, message } => {
                self.ended = true;
                match self.api {
                    ClientApi::Responses => {
                        if let Some(r) = self.responses.as_mut() {
                            responses_events(&r.conv.fail(class.as_str(), &message), out);
                        }
                    }
                    ClientApi::OpenAi | ClientApi::Embeddings => {
                        let body = json!({"error": {"message": message, "type": "server_error", "param": null, "code": class.as_str()}});
                        sse::write_data(out, body.to_string().as_bytes());
                    }
                    ClientApi::Anthropic => {
                        let ty = if class == FailureClass::Overloaded {
                            "overloaded_error"
                        } else {
                            "api_error"
                        };
                        let body =
                            json!({"type": "error", "error": {"type": ty, "message": message}});
                        sse::write_named(out, "error", body.to_string().as_bytes());
                    }
                }
            }
        }
    }

    /// The clean end (only when no error was sent).
    fn end(&mut self, out: &mut Vec<u8>) {
        if self.ended {
            return;
        }
        self.ended = true;
        match self.api {
            ClientApi::OpenAi | ClientApi::Embeddings => sse::write_data(out, b"[DONE]"),
            ClientApi::Responses => {
                if let Some(r) = self.responses.as_mut() {
                    responses_events(&r.conv.finish(), out);
                    r.finished = Some(r.conv.response().clone());
                }
            }
            ClientApi::Anthropic => {
                if let Some(conv) = self.anthropic.as_mut() {
                    for ev in conv.finish() {
                        anthropic_event(&ev, out);
                    }
                }
            }
        }
    }
}

fn responses_events(events: &[ResponsesEvent], out: &mut Vec<u8>) {
    for ev in events {
        if let Ok(data) = serde_json::to_vec(&ev.data) {
            sse::write_named(out, ev.name, &data);
        }
    }
}

fn anthropic_event(ev: &keel_wire::anthropic::StreamEvent, out: &mut Vec<u8>) {
    if let Ok(data) = serde_json::to_vec(ev) {
        sse::write_named(out, ev.event_name(), &data);
    }
}

/// Bytes a frame is allocated with: a few chunks' worth, so a burst
/// seldom regrows it.
const FRAME_CAPACITY: usize = 1024;

/// Most bytes of queued events one frame takes.
const COALESCE_BYTES: usize = 64 * 1024;

/// An SSE response that forwards `items` until the engine closes the channel.
pub(crate) fn response(api: ClientApi, items: StreamItems) -> Response {
    encode(
        Encoder {
            api,
            anthropic: None,
            responses: None,
            ended: false,
        },
        items,
    )
}

/// A Responses client's SSE response: `items` as the events of `conv`;
/// with `keep`, the final response is stored before the last event leaves.
pub(crate) fn responses(
    conv: ChatToResponsesStream,
    items: StreamItems,
    keep: Option<Pending>,
) -> Response {
    encode(
        Encoder {
            api: ClientApi::Responses,
            anthropic: None,
            responses: Some(Box::new(ResponsesOut {
                conv,
                keep,
                finished: None,
            })),
            ended: false,
        },
        items,
    )
}

fn encode(enc: Encoder, items: StreamItems) -> Response {
    let stream = futures_util::stream::unfold(
        (items, enc, false),
        |(mut rx, mut enc, finished)| async move {
            if finished {
                return None;
            }
            // Waits for the next event, then takes every event already
            // queued behind it into the same frame: a burst of tokens (an
            // upstream packet often carries several) goes out in one write,
            // not one write per token. Nothing waits for more to come.
            let mut frame = Vec::with_capacity(FRAME_CAPACITY);
            let mut done = match rx.recv().await {
                Some(item) => {
                    enc.item(item, &mut frame);
                    false
                }
                None => {
                    enc.end(&mut frame);
                    true
                }
            };
            while !done && frame.len() < COALESCE_BYTES {
                match rx.try_recv() {
                    Ok(item) => enc.item(item, &mut frame),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        enc.end(&mut frame);
                        done = true;
                    }
                }
            }
            // A stored stream's response is kept before its last event
            // leaves: a client that saw it can retrieve or continue it.
            if done {
                let kept = enc
                    .responses
                    .as_mut()
                    .and_then(|r| Some((r.keep.take()?, r.finished.take()?)));
                if let Some((keep, resp)) = kept {
                    // Boxed: a store write is a large future, and this
                    // one is built for every frame.
                    Box::pin(keep.save(resp)).await;
                }
            }
            Some((
                Ok::<_, std::convert::Infallible>(Bytes::from(frame)),
                (rx, enc, done),
            ))
        },
    );
    (
        StatusCode::OK,
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("text/event-stream"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        Body::from_stream(stream),
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;
    use http_body_util::BodyExt;

    fn chunk(i: u32) -> StreamItem {
        let json = format!(
            r#"{{"id":"c","object":"chat.completion.chunk","created":1,"model":"r","choices":[{{"index":0,"delta":{{"content":"t{i}"}},"finish_reason":null}}]}}"#
        );
        StreamItem::Chunk(
            serde_json::from_str::<keel_wire::openai::ChatChunk>(&json)
                .unwrap()
                .into(),
        )
    }

    async fn frame(body: &mut Body) -> Option<String> {
        let f = body.frame().await?.unwrap();
        Some(String::from_utf8(f.into_data().unwrap().to_vec()).unwrap())
    }

    #[tokio::test]
    async fn queued_events_leave_in_one_frame_and_later_ones_in_the_next() {
        let (tx, rx) = mpsc::channel(8);
        for i in 0..3 {
            tx.send(chunk(i)).await.unwrap();
        }
        let mut body = response(ClientApi::OpenAi, rx.into()).into_body();
        let first = frame(&mut body).await.unwrap();
        assert_eq!(first.matches("data: {").count(), 3, "{first}");
        assert!(first.contains("t0") && first.contains("t2"), "{first}");
        assert!(!first.contains("[DONE]"), "{first}");
        tx.send(chunk(3)).await.unwrap();
        drop(tx);
        // The last event and the end, found closed right behind it.
        let second = frame(&mut body).await.unwrap();
        assert!(second.contains("t3"), "{second}");
        assert!(second.trim_end().ends_with("data: [DONE]"), "{second}");
        assert_eq!(frame(&mut body).await, None);
    }
}
