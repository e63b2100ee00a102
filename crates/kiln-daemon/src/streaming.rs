//! Bodies written by blocking work as it goes: the Engine API's progress
//! answers (build, pull, push, load: a 200 with one JSON object per line,
//! a failure after the header as an `errorDetail` line, which the docker
//! clients print and exit non-zero on) and tar streams (save, `docker cp`
//! out: a failure after the header cuts the stream short, so the
//! client's tar reader fails rather than taking half).

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

/// A `Write` whose bytes become a body's chunks.
pub(crate) struct BodyWriter(mpsc::Sender<Result<Bytes, std::io::Error>>);

impl BodyWriter {
    /// Ends the body with an error: the client sees the stream cut.
    pub(crate) fn fail(&self, message: String) {
        let _ = self.0.blocking_send(Err(std::io::Error::other(message)));
    }
}

impl std::io::Write for BodyWriter {
    fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(data)))
            .map_err(|_| std::io::Error::from(std::io::ErrorKind::BrokenPipe))?;
        Ok(data.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// A writer for a blocking thread and the body that streams what it
/// writes (a tar: `application/x-tar`).
pub(crate) fn tar_body() -> (BodyWriter, Response) {
    let (sender, receiver) = mpsc::channel::<Result<Bytes, std::io::Error>>(16);
    let stream = futures_util::stream::unfold(receiver, |mut receiver| async move {
        receiver.recv().await.map(|item| (item, receiver))
    });
    let mut response = Response::new(Body::from_stream(stream));
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/x-tar"),
    );
    (BodyWriter(sender), response)
}
