//! Direct methods and cloud-to-device messages: handlers registered by name
//! (methods) or by `type` property (C2D) before the session starts, so no
//! call that arrives on the first connection is missed.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use serde_json::json;

use super::refusal::MethodRefusal;

/// A boxed, sendable future.
pub(crate) type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send + 'static>>;

/// One direct-method invocation.
#[derive(Debug, Clone)]
pub(crate) struct MethodCall {
    /// Method name.
    pub name: String,
    /// The hub's request id (`$rid`), echoed in the response.
    pub rid: String,
    /// Which connection it arrived on: `$rid`s restart per connection, so
    /// de-duplication must be per connection.
    pub connection: u64,
    /// The JSON payload as received.
    pub payload: Vec<u8>,
}

/// The answer to a direct method.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct MethodResponse {
    /// Status code sent in the response topic.
    pub status: u16,
    /// JSON body.
    pub body: Vec<u8>,
}

impl MethodResponse {
    /// A response with a JSON value body.
    pub(crate) fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            body: body.to_string().into_bytes(),
        }
    }

    /// An error answer `{"error": ..., "detail": ...}`.
    pub(crate) fn error(status: u16, error: &str, detail: &str) -> Self {
        Self::json(status, &json!({ "error": error, "detail": detail }))
    }
}

/// A direct-method handler.
pub(crate) type MethodHandler = Arc<dyn Fn(MethodCall) -> BoxFuture<MethodResponse> + Send + Sync>;

/// A cloud-to-device message.
#[derive(Debug, Clone)]
pub(crate) struct C2dMessage {
    /// Decoded property bag.
    pub properties: Vec<(String, Option<String>)>,
    /// Body.
    pub payload: Vec<u8>,
}

/// A C2D handler; the message is acknowledged (PUBACK) once it returns,
/// whatever it returns: MQTT has no reject, so an error is only logged.
pub(crate) type C2dHandler = Arc<dyn Fn(C2dMessage) -> BoxFuture<Result<(), String>> + Send + Sync>;

/// Shapes the answer to a call refused before its handler ran, in the
/// method's own answer format.
pub(crate) type RefusalHandler = Arc<dyn Fn(&MethodRefusal) -> MethodResponse + Send + Sync>;

/// A desired-properties handler: receives the full desired document (after
/// a twin GET or the retained document) or a patch.
pub(crate) type DesiredHandler = Arc<dyn Fn(serde_json::Value, bool) + Send + Sync>;

/// Handlers, keyed by method name and C2D `type`.
#[derive(Clone, Default)]
pub(crate) struct Router {
    methods: HashMap<String, MethodHandler>,
    c2d: HashMap<String, C2dHandler>,
    refusals: HashMap<String, RefusalHandler>,
    desired: Vec<DesiredHandler>,
}

impl Router {
    /// An empty router: every method is answered 404.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Registers a direct-method handler.
    pub(crate) fn method<F, Fut>(&mut self, name: &str, f: F) -> &mut Self
    where
        F: Fn(MethodCall) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = MethodResponse> + Send + 'static,
    {
        self.methods
            .insert(name.to_string(), Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Registers how `name` answers a call refused before its handler ran
    /// (see [`Router::refusal_answer`]).
    pub(crate) fn method_refusal(
        &mut self,
        name: &str,
        f: impl Fn(&MethodRefusal) -> MethodResponse + Send + Sync + 'static,
    ) -> &mut Self {
        self.refusals.insert(name.to_string(), Arc::new(f));
        self
    }

    /// The answer to a call of `name` refused for `why`: the method's own
    /// shape when it registered one, else `413 {"error":"payload_too_large",
    /// "detail":...}`.
    pub(crate) fn refusal_answer(&self, name: &str, why: &MethodRefusal) -> MethodResponse {
        match self.refusals.get(name) {
            Some(h) => h(why),
            None => match why {
                MethodRefusal::TooLarge { .. } => {
                    MethodResponse::error(413, "payload_too_large", &why.to_string())
                }
            },
        }
    }

    /// Registers a C2D handler for messages whose `type` property is `kind`.
    pub(crate) fn c2d<F, Fut>(&mut self, kind: &str, f: F) -> &mut Self
    where
        F: Fn(C2dMessage) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.c2d
            .insert(kind.to_string(), Arc::new(move |m| Box::pin(f(m))));
        self
    }

    /// Registers a desired-properties handler.
    pub(crate) fn desired(
        &mut self,
        f: impl Fn(serde_json::Value, bool) + Send + Sync + 'static,
    ) -> &mut Self {
        self.desired.push(Arc::new(f));
        self
    }

    /// Names of the registered methods (reported as capabilities).
    pub(crate) fn method_names(&self) -> Vec<String> {
        let mut names: Vec<_> = self.methods.keys().cloned().collect();
        names.sort();
        names
    }

    /// The future answering `call`: the handler's, or a 404.
    pub(crate) fn dispatch(&self, call: MethodCall) -> BoxFuture<MethodResponse> {
        match self.methods.get(&call.name) {
            Some(h) => h(call),
            None => {
                let resp = MethodResponse::error(
                    404,
                    "unknown method",
                    &format!("this device has no method named {:?}", call.name),
                );
                Box::pin(async move { resp })
            }
        }
    }

    /// The handler for a C2D message of this `type`.
    pub(crate) fn c2d_handler(&self, kind: Option<&str>) -> Option<C2dHandler> {
        kind.and_then(|k| self.c2d.get(k).cloned())
    }

    /// Delivers desired properties to every handler.
    pub(crate) fn deliver_desired(&self, doc: &serde_json::Value, full: bool) {
        for h in &self.desired {
            h(doc.clone(), full);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn call(name: &str) -> MethodCall {
        MethodCall {
            name: name.into(),
            rid: "1".into(),
            connection: 0,
            payload: b"{}".to_vec(),
        }
    }

    #[tokio::test]
    async fn unknown_methods_get_a_404_never_silence() {
        let r = Router::new();
        let resp = r.dispatch(call("Nope")).await;
        assert_eq!(resp.status, 404);
        let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap();
        assert_eq!(body["error"], "unknown method");
    }

    #[tokio::test]
    async fn registered_methods_are_routed_by_name() {
        let mut r = Router::new();
        r.method("Echo", |c: MethodCall| async move {
            MethodResponse {
                status: 200,
                body: c.payload,
            }
        });
        assert_eq!(r.dispatch(call("Echo")).await.body, b"{}");
        assert_eq!(r.method_names(), ["Echo"]);
    }

    #[test]
    fn refused_calls_get_413_or_the_method_s_own_shape() {
        let why = MethodRefusal::TooLarge { size: 9, max: 5 };
        let mut r = Router::new();
        let plain = r.refusal_answer("Any", &why);
        assert_eq!(plain.status, 413);
        let body: serde_json::Value = serde_json::from_slice(&plain.body).unwrap();
        assert_eq!(body["error"], "payload_too_large");
        r.method_refusal("Own", |w| {
            MethodResponse::json(413, &json!({"own": w.to_string()}))
        });
        let own: serde_json::Value =
            serde_json::from_slice(&r.refusal_answer("Own", &why).body).unwrap();
        assert!(own["own"].as_str().unwrap().contains("9 bytes"), "{own}");
    }
}
