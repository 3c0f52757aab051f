//! The Cloud Relay's direct-method payloads (shared/specs/cloud-relay.md):
//! the REST request the cloud sends ([`request`], §1), the rules its
//! `path` must keep ([`path`]), and the answer the device returns
//! ([`answer`], §2). The cloud side writes requests and
//! reads answers; the device reads requests and writes answers; both go
//! through these types, so the contract exists once.

pub mod answer;
pub mod path;
pub mod request;

pub use answer::{Answer, AnswerBody, AnswerError, AnswerHeaders};
pub use request::{ForwardHeaders, HttpMethod, RequestBody, RequestError, RestRequest};
