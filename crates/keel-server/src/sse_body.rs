//! Encodes the engine's canonical stream items as the client's SSE.

use axum::body::Body;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use keel_engine::{ClientApi, StreamItem};
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

/// Most bytes of queued events one frame takes.
const COALESCE_BYTES: usize = 64 * 1024;

/// An SSE response that forwards `items` until the engine closes the channel.
pub(crate) fn response(api: ClientApi, items: mpsc::Receiver<StreamItem>) -> Response {
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
            // Waits for the next event, then takes every event already
            // queued behind it into the same frame: a burst of tokens (an
            // upstream packet often carries several) goes out in one write,
            // not one write per token. Nothing waits for more to come.
            let mut frame = Vec::new();
            let add = |frame: &mut Vec<u8>, events: Vec<Bytes>| {
                events.iter().for_each(|e| frame.extend_from_slice(e))
            };
            let mut done = match rx.recv().await {
                Some(item) => {
                    add(&mut frame, enc.item(item));
                    false
                }
                None => {
                    add(&mut frame, enc.end());
                    true
                }
            };
            while !done && frame.len() < COALESCE_BYTES {
                match rx.try_recv() {
                    Ok(item) => add(&mut frame, enc.item(item)),
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        add(&mut frame, enc.end());
                        done = true;
                    }
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
            (header::CONTENT_TYPE, "text/event-stream"),
            (header::CACHE_CONTROL, "no-cache"),
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
        StreamItem::Chunk(serde_json::from_str(&json).unwrap())
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
        let mut body = response(ClientApi::OpenAi, rx).into_body();
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
