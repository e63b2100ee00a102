//! The Engine API's progress answers (build, pull, push, load): a 200 with
//! one JSON object per line, written by blocking work as it goes, and a
//! failure after the header as an `errorDetail` line, which the docker
//! clients print and exit non-zero on.

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderValue};
use axum::response::Response;
use serde_json::{json, Value};
use tokio::sync::mpsc;

/// The writing end, for a blocking thread.
pub(crate) struct JsonLines {
    sender: mpsc::Sender<Bytes>,
}

impl JsonLines {
    /// Sends one line; false once the client is gone.
    pub(crate) fn send(&self, value: Value) -> bool {
        let mut line = value.to_string();
        line.push_str("\r\n");
        self.sender.blocking_send(Bytes::from(line)).is_ok()
    }

    pub(crate) fn status(&self, status: String) -> bool {
        self.send(json!({ "status": status }))
    }

    pub(crate) fn error(&self, message: &str) {
        self.send(json!({ "errorDetail": { "message": message }, "error": message }));
    }
}

/// A writer and the response that streams what it writes.
pub(crate) fn json_lines() -> (JsonLines, Response) {
    let (sender, receiver) = mpsc::channel::<Bytes>(64);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver
            .recv()
            .await
            .map(|bytes| (Ok::<Bytes, std::io::Error>(bytes), receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    (JsonLines { sender }, response)
}
