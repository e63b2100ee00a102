//! The daemon's own errors (binding, serving), and the Engine API's error
//! responses made from kiln-engine's typed errors.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use kiln_engine::EngineError;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error("--host {0:?}: expected unix:///PATH or tcp://HOST[:PORT]")]
    BadHost(String),
    #[error("--host {0}: TCP only with TLS and client certificates: add --tlsverify --tlscacert CA.pem --tlscert CERT.pem --tlskey KEY.pem (or listen on unix:///PATH)")]
    TcpWithoutTls(String),
    #[error("{}: {message}", file.display())]
    Tls {
        file: std::path::PathBuf,
        message: String,
    },
    #[error("{0}: another daemon is serving on this socket")]
    InUse(std::path::PathBuf),
    #[error("{0}: exists and is not a socket; kiln serve will not replace it")]
    NotASocket(std::path::PathBuf),
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
}

/// An Engine API error: its status, and `{"message": ...}` as the docker
/// clients print it.
#[derive(Debug)]
pub(crate) struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub(crate) fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::BAD_REQUEST,
            message: message.into(),
        }
    }

    pub(crate) fn not_found(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::NOT_FOUND,
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> ApiError {
        ApiError {
            status: StatusCode::INTERNAL_SERVER_ERROR,
            message: message.into(),
        }
    }
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> ApiError {
        let status = match &error {
            EngineError::NotFound { .. } => StatusCode::NOT_FOUND,
            EngineError::Store(kiln_store::StoreError::UnknownImage(_)) => StatusCode::NOT_FOUND,
            EngineError::Conflict(_) => StatusCode::CONFLICT,
            EngineError::Runtime(kiln_runtime::RuntimeError::InvalidSpec(_)) => {
                StatusCode::BAD_REQUEST
            }
            EngineError::Request(_) | EngineError::Parse { .. } | EngineError::Plan { .. } => {
                StatusCode::BAD_REQUEST
            }
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError {
            status,
            message: error.to_string(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (
            self.status,
            axum::Json(serde_json::json!({ "message": self.message })),
        )
            .into_response()
    }
}
