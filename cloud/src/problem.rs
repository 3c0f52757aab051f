//! The Cloud Relay's error table (cloud-relay.md §4) as
//! `application/problem+json` answers, byte-compatible with its
//! `ApplicationProblemDetails`: `errorCode`, `type`, `title`, `status`,
//! `detail`, `instance`, in that order.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::broker::CallError;

/// A request the API answers with an error.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    /// 400 / 100: `responseTimeout` is not an integer.
    #[error("invalid responseTimeout")]
    InvalidResponseTimeout,
    /// 400 (validation problem): no `Remote-Query` header.
    #[error("Remote-Query header missing")]
    MissingRemoteQuery,
    /// 401: no or a bad bearer token; the reason is logged, not sent.
    #[error("unauthorized: {0}")]
    Unauthorized(String),
    /// 404 / 1000: no such device, or not connected.
    #[error("device {0:?} not connected")]
    DeviceNotFound(String),
    /// 504 / 1001: the device did not answer in time.
    #[error("device timeout")]
    OperationTimeout,
    /// 502 / 1002: the device's answer is not understood; the reason is
    /// logged.
    #[error("invalid device answer: {0}")]
    InvalidResult(String),
    /// 502 / 1003: a method payload over 128 KiB.
    #[error("message too large")]
    MessageTooLarge,
    /// 503 / 5000: the broker is unreachable.
    #[error("broker unreachable: {0}")]
    Communication(String),
    /// 503 / 5002: too many calls in flight.
    #[error("too many calls in flight")]
    QuotaExceeded,
    /// 413: a request body over the blob size limit.
    #[error("request body over {0} bytes")]
    BodyTooLarge(u64),
    /// 500: our own failure (disk, ...); the reason is logged.
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<CallError> for ApiError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::NotConnected(d) => ApiError::DeviceNotFound(d),
            CallError::Timeout(_) => ApiError::OperationTimeout,
            CallError::Unavailable(reason) => ApiError::Communication(reason),
            CallError::Busy => ApiError::QuotaExceeded,
            CallError::TooLarge(_) => ApiError::MessageTooLarge,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Problem<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    error_code: Option<u16>,
    #[serde(rename = "type")]
    kind: &'static str,
    title: &'static str,
    status: u16,
    detail: &'a str,
    /// `null` in the Cloud Relay's coded errors; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    instance: Option<Option<()>>,
}

impl ApiError {
    /// Status, `errorCode` and `detail` as the Cloud Relay sends them.
    pub fn parts(&self) -> (StatusCode, Option<u16>, String) {
        match self {
            ApiError::InvalidResponseTimeout => {
                (StatusCode::BAD_REQUEST, Some(100), "Invalid request".into())
            }
            ApiError::MissingRemoteQuery => (
                StatusCode::BAD_REQUEST,
                None,
                "The Remote-Query field is required.".into(),
            ),
            ApiError::Unauthorized(_) => (
                StatusCode::UNAUTHORIZED,
                None,
                "A valid bearer token is required".into(),
            ),
            ApiError::DeviceNotFound(d) => (
                StatusCode::NOT_FOUND,
                Some(1000),
                format!("Reference '{d}' does not exist"),
            ),
            ApiError::OperationTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                Some(1001),
                "Operation error or timeout".into(),
            ),
            ApiError::InvalidResult(_) => {
                (StatusCode::BAD_GATEWAY, Some(1002), "Invalid result".into())
            }
            ApiError::MessageTooLarge => (
                StatusCode::BAD_GATEWAY,
                Some(1003),
                "Message too large".into(),
            ),
            ApiError::Communication(reason) => {
                (StatusCode::SERVICE_UNAVAILABLE, Some(5000), reason.clone())
            }
            ApiError::QuotaExceeded => (
                StatusCode::SERVICE_UNAVAILABLE,
                Some(5002),
                "Total number of messages exceeded the allocated quota".into(),
            ),
            ApiError::BodyTooLarge(max) => (
                StatusCode::PAYLOAD_TOO_LARGE,
                None,
                format!("The request body is over {max} bytes"),
            ),
            ApiError::Internal(_) => (
                StatusCode::INTERNAL_SERVER_ERROR,
                None,
                "An error occurred while executing the request".into(),
            ),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code, detail) = self.parts();
        match &self {
            ApiError::InvalidResult(why) | ApiError::Internal(why) => {
                tracing::warn!(status = status.as_u16(), reason = %why, "cloud API error");
            }
            ApiError::Unauthorized(why) => tracing::info!(reason = %why, "cloud API: unauthorized"),
            _ => tracing::debug!(status = status.as_u16(), error = %self, "cloud API error"),
        }
        let title = status.canonical_reason().unwrap_or("Error");
        let body = if self == ApiError::MissingRemoteQuery {
            // ASP.NET's automatic ValidationProblemDetails.
            serde_json::json!({
                "type": "https://tools.ietf.org/html/rfc7231#section-6.5.1",
                "title": "One or more validation errors occurred.",
                "status": 400,
                "errors": {"Remote-Query": [detail]},
            })
            .to_string()
        } else {
            let problem = Problem {
                error_code: code,
                kind: "about:blank",
                title,
                status: status.as_u16(),
                detail: &detail,
                instance: code.map(|_| None),
            };
            serde_json::to_string(&problem).unwrap_or_default()
        };
        let mut resp = (status, body).into_response();
        resp.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/problem+json"),
        );
        if status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn body_of(e: ApiError) -> (u16, String, String) {
        let resp = e.into_response();
        let ct = resp.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .to_string();
        let status = resp.status().as_u16();
        let bytes = axum::body::to_bytes(resp.into_body(), 10_000)
            .await
            .unwrap();
        (status, ct, String::from_utf8(bytes.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn coded_errors_match_the_cloud_relay_bytes() {
        let (status, ct, body) = body_of(ApiError::OperationTimeout).await;
        assert_eq!((status, ct.as_str()), (504, "application/problem+json"));
        assert_eq!(
            body,
            r#"{"errorCode":1001,"type":"about:blank","title":"Gateway Timeout","status":504,"detail":"Operation error or timeout","instance":null}"#
        );
        let (_, _, body) = body_of(ApiError::Internal("disk full".into())).await;
        assert_eq!(
            body,
            r#"{"type":"about:blank","title":"Internal Server Error","status":500,"detail":"An error occurred while executing the request"}"#
        );
    }
}
