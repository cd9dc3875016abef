//! The fast fixed upstream of `keel bench overhead`: a minimal hyper server
//! that answers every chat completion at once with the same OpenAI-shaped
//! body (or the same short SSE stream when the request asks for one). It
//! does no parsing beyond looking for `"stream":true`, so it costs the same
//! for every path.

use std::convert::Infallible;
use std::net::SocketAddr;

use bytes::Bytes;
use http::{header, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;

/// The plain answer.
pub(crate) const ANSWER: &str = r#"{"id":"chatcmpl-bench","object":"chat.completion","created":1700000000,"model":"bench-upstream","choices":[{"index":0,"message":{"role":"assistant","content":"Hello! This is a fixed answer from the benchmark upstream."},"finish_reason":"stop","logprobs":null}],"usage":{"prompt_tokens":12,"completion_tokens":12,"total_tokens":24}}"#;

/// The streamed answer: a role chunk, eight content chunks, a finish chunk,
/// a usage chunk and `[DONE]`.
pub(crate) fn stream_answer() -> String {
    let chunk = |delta: &str, finish: &str| {
        format!(
            "data: {{\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-upstream\",\"choices\":[{{\"index\":0,\"delta\":{delta},\"finish_reason\":{finish}}}]}}\n\n"
        )
    };
    let mut s = chunk(r#"{"role":"assistant","content":""}"#, "null");
    for word in [
        "Hello! ",
        "This ",
        "is ",
        "a ",
        "fixed ",
        "streamed ",
        "answer",
        ".",
    ] {
        s.push_str(&chunk(&format!("{{\"content\":\"{word}\"}}"), "null"));
    }
    s.push_str(&chunk("{}", "\"stop\""));
    s.push_str("data: {\"id\":\"chatcmpl-bench\",\"object\":\"chat.completion.chunk\",\"created\":1700000000,\"model\":\"bench-upstream\",\"choices\":[],\"usage\":{\"prompt_tokens\":12,\"completion_tokens\":8,\"total_tokens\":20}}\n\n");
    s.push_str("data: [DONE]\n\n");
    s
}

/// Serves the fixed answers on `listen`; returns the bound address.
pub(crate) async fn spawn(listen: SocketAddr) -> std::io::Result<SocketAddr> {
    let listener = TcpListener::bind(listen).await?;
    let addr = listener.local_addr()?;
    let plain = Bytes::from_static(ANSWER.as_bytes());
    let stream = Bytes::from(stream_answer());
    tokio::spawn(async move {
        loop {
            let Ok((socket, _)) = listener.accept().await else {
                continue;
            };
            let _ = socket.set_nodelay(true);
            let (plain, stream) = (plain.clone(), stream.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| answer(req, plain.clone(), stream.clone()));
                let _ = http1::Builder::new()
                    .serve_connection(TokioIo::new(socket), service)
                    .await;
            });
        }
    });
    Ok(addr)
}

async fn answer(
    req: Request<Incoming>,
    plain: Bytes,
    stream: Bytes,
) -> Result<Response<Full<Bytes>>, Infallible> {
    let body = match req.into_body().collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => Bytes::new(),
    };
    let needle = b"\"stream\":true";
    let wants_stream = body.windows(needle.len()).any(|w| w == needle);
    let (content_type, bytes) = if wants_stream {
        ("text/event-stream", stream)
    } else {
        ("application/json", plain)
    };
    let mut resp = Response::new(Full::new(bytes));
    *resp.status_mut() = StatusCode::OK;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    Ok(resp)
}
