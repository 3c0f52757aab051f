//! How a controller reply is answered (cloud-relay.md §2); the payload
//! itself is [`tether_protocol::relay::Answer`].
//!
//! Why each rule:
//! - Binary data cannot go inline (no base64 in the protocol), and IoT Hub
//!   refuses method payloads over 128 KiB, so large or binary 2xx bodies go
//!   through file upload.
//! - The Cloud Relay answers every blob response with HTTP 200 whatever
//!   `status` says, so non-2xx answers are always inline, cut to the inline
//!   limit with a visible marker.

use serde::Serialize;
use tether_protocol::relay::answer::MAX_PAYLOAD_BYTES;
use tether_protocol::relay::{Answer, AnswerBody, AnswerHeaders};

use crate::hub::methods::MethodResponse;

use super::controller::ControllerReply;
use super::error::Failure;

/// Starts the text appended to a cut body.
pub(crate) const TRUNCATION_MARKER: &str = "\n[truncated by tether: ";

/// The body of a failure's answer: what tether could not do, for the
/// caller.
#[derive(Serialize)]
struct ErrorBody<'a> {
    error: &'a str,
    detail: &'a str,
}

/// How a controller reply must be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Shape {
    /// Inline; the ready answer.
    Inline(MethodResponse),
    /// Through file upload: 2xx, and too large, binary, or too long once
    /// serialized.
    Blob,
}

/// Decides inline vs blob for `reply` and builds the inline answer.
pub(crate) fn shape(reply: &ControllerReply, inline_limit: usize) -> Shape {
    let success = (200..300).contains(&reply.status);
    if success {
        match std::str::from_utf8(&reply.body) {
            Ok(text) if reply.body.len() <= inline_limit => {
                let answer = inline(reply, text);
                if answer.body.len() <= MAX_PAYLOAD_BYTES {
                    return Shape::Inline(answer);
                }
                Shape::Blob
            }
            _ => Shape::Blob,
        }
    } else {
        Shape::Inline(truncated(reply, inline_limit))
    }
}

/// The inline answer when file upload is not available: the body as is
/// when it is text and fits the hub's limit, otherwise 413.
pub(crate) fn inline_without_upload(reply: &ControllerReply) -> Result<MethodResponse, Failure> {
    let refuse = |why: &str| {
        Failure::TooLarge(format!(
            "the controller's answer ({} bytes) {why}, and file upload is not configured",
            reply.body.len()
        ))
    };
    let text = std::str::from_utf8(&reply.body).map_err(|_| refuse("is binary"))?;
    let answer = inline(reply, text);
    if answer.body.len() > MAX_PAYLOAD_BYTES {
        return Err(refuse("does not fit in a method response"));
    }
    Ok(answer)
}

/// `{"status":..,"headers":{..},"body":"<text>"}`.
pub(crate) fn inline(reply: &ControllerReply, text: &str) -> MethodResponse {
    answer(Answer {
        status: reply.status,
        headers: headers_of(reply),
        body: AnswerBody::Inline(text.to_string()),
    })
}

/// `{"status":..,"headers":{..},"blobUrl":"<name>"}`, always with a
/// Content-Type.
pub(crate) fn blob(reply: &ControllerReply, blob_name: &str) -> MethodResponse {
    answer(Answer {
        status: reply.status,
        headers: headers_of(reply),
        body: AnswerBody::Blob(blob_name.to_string()),
    })
}

/// The answer for a failure: same shape, JSON error text as the body.
pub(crate) fn failure(f: &Failure) -> MethodResponse {
    let detail = f.to_string();
    let body = serde_json::to_string(&ErrorBody {
        error: f.code(),
        detail: &detail,
    })
    .unwrap_or_default();
    answer(Answer {
        status: f.status(),
        headers: AnswerHeaders {
            content_type: Some("application/json".into()),
            content_disposition: None,
        },
        body: AnswerBody::Inline(body),
    })
}

/// A non-2xx answer, inline, cut to `inline_limit` bytes (and further if
/// escaping would push it over [`MAX_PAYLOAD_BYTES`]) with a marker naming
/// how much was kept.
fn truncated(reply: &ControllerReply, inline_limit: usize) -> MethodResponse {
    let text = String::from_utf8_lossy(&reply.body);
    let total = reply.body.len();
    let mut keep = inline_limit.min(text.len());
    loop {
        let cut = floor_char_boundary(&text, keep);
        let answer = if cut >= text.len() {
            inline(reply, &text)
        } else {
            let body = format!(
                "{}{TRUNCATION_MARKER}{cut} of {total} bytes shown]",
                &text[..cut]
            );
            inline(reply, &body)
        };
        if answer.body.len() <= MAX_PAYLOAD_BYTES || cut == 0 {
            return answer;
        }
        keep = cut / 2;
    }
}

fn floor_char_boundary(s: &str, at: usize) -> usize {
    let mut i = at.min(s.len());
    while !s.is_char_boundary(i) {
        i -= 1;
    }
    i
}

fn headers_of(reply: &ControllerReply) -> AnswerHeaders {
    AnswerHeaders {
        content_type: reply.content_type.clone(),
        content_disposition: reply.content_disposition.clone(),
    }
}

fn answer(answer: Answer) -> MethodResponse {
    MethodResponse {
        status: answer.status,
        body: answer.encode(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, ct: Option<&str>, body: &[u8]) -> ControllerReply {
        ControllerReply {
            status,
            content_type: ct.map(str::to_string),
            content_disposition: None,
            body: body.to_vec(),
        }
    }

    fn text(r: &MethodResponse) -> String {
        String::from_utf8(r.body.clone()).unwrap()
    }

    #[test]
    fn spec_example_inline_is_byte_exact() {
        let r = reply(
            200,
            Some("application/json;charset=UTF-8"),
            br#"{"apiRevision":"8.0"}"#,
        );
        let Shape::Inline(a) = shape(&r, 16384) else {
            panic!("inline expected")
        };
        assert_eq!(a.status, 200);
        assert_eq!(
            text(&a),
            r#"{"status":200,"headers":{"Content-Type":"application/json;charset=UTF-8"},"body":"{\"apiRevision\":\"8.0\"}"}"#
        );
    }

    #[test]
    fn large_binary_or_overlong_success_bodies_go_to_a_blob() {
        assert_eq!(shape(&reply(200, None, &[b'a'; 17]), 16), Shape::Blob);
        assert_eq!(shape(&reply(201, None, &[0xff, 0xfe]), 16), Shape::Blob);
        // Control characters escape to 6 bytes each.
        let ctl = vec![1u8; MAX_PAYLOAD_BYTES / 5];
        assert_eq!(shape(&reply(200, None, &ctl), usize::MAX), Shape::Blob);
        assert!(matches!(
            shape(&reply(204, None, b""), 16),
            Shape::Inline(_)
        ));
    }

    #[test]
    fn error_bodies_are_inline_and_cut_with_a_marker() {
        let body = "é".repeat(20);
        let Shape::Inline(a) = shape(&reply(500, Some("text/plain"), body.as_bytes()), 7) else {
            panic!("inline expected")
        };
        assert_eq!(a.status, 500);
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["body"], "ééé\n[truncated by tether: 6 of 40 bytes shown]");
    }

    #[test]
    fn binary_error_bodies_are_inline_too() {
        let Shape::Inline(a) = shape(&reply(404, None, &[0xff, b'x']), 100) else {
            panic!("inline expected")
        };
        let v: serde_json::Value = serde_json::from_slice(&a.body).unwrap();
        assert_eq!(v["body"], "\u{fffd}x");
        assert_eq!(v["status"], 404);
    }

    #[test]
    fn cut_error_bodies_still_fit_the_hub_limit_after_escaping() {
        let ctl = vec![1u8; 1 << 20];
        let Shape::Inline(a) = shape(&reply(500, None, &ctl), usize::MAX) else {
            panic!("inline expected")
        };
        assert!(a.body.len() <= MAX_PAYLOAD_BYTES, "{}", a.body.len());
    }

    #[test]
    fn failures_have_the_error_shape() {
        let a = failure(&Failure::Busy("all 4 slots are taken".into()));
        assert_eq!(a.status, 503);
        assert_eq!(
            text(&a),
            r#"{"status":503,"headers":{"Content-Type":"application/json"},"body":"{\"error\":\"busy\",\"detail\":\"the relay is busy: all 4 slots are taken\"}"}"#
        );
    }

    #[test]
    fn without_upload_text_that_fits_stays_inline_and_the_rest_is_413() {
        assert!(inline_without_upload(&reply(200, None, &[b'a'; 50_000])).is_ok());
        let err = inline_without_upload(&reply(200, None, &[0xff])).unwrap_err();
        assert_eq!(err.status(), 413);
        let err = inline_without_upload(&reply(200, None, &[b'a'; MAX_PAYLOAD_BYTES])).unwrap_err();
        assert_eq!(err.status(), 413);
    }
}
