//! API authentication of `tether-cloud serve`: static bearer tokens and
//! JWTs (ES256 here) with issuer, audience and expiry checked.

use std::time::{Duration, SystemTime};

use crate::cloud_support::{answering, plain_broker, problem, FakeDevice, Serve};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use tether::config::Secret;
use tether_cloud::JwtConfig;
use tether_testkit::{Broker, BrokerOptions};

const ISSUER: &str = "https://login.example.test";
const AUDIENCE: &str = "tether-cloud";

struct Keys {
    signing: EncodingKey,
    public_pem: String,
}

fn keys() -> Keys {
    let pair = rcgen::KeyPair::generate().expect("P-256 key");
    Keys {
        signing: EncodingKey::from_ec_pem(pair.serialize_pem().as_bytes()).unwrap(),
        public_pem: pair.public_key_pem(),
    }
}

fn token(keys: &Keys, aud: &str, exp_from_now: i64) -> String {
    let now = tether_protocol::time::unix_seconds(SystemTime::now()) as i64;
    let claims =
        serde_json::json!({"iss": ISSUER, "aud": aud, "sub": "ops", "exp": now + exp_from_now});
    jsonwebtoken::encode(&Header::new(Algorithm::ES256), &claims, &keys.signing).unwrap()
}

async fn status_with(serve: &Serve, auth: Option<&str>) -> reqwest::Response {
    let mut req = serve
        .http
        .get(serve.url("dev1", ""))
        .header("Remote-Query", "/x");
    if let Some(a) = auth {
        req = req.header("Authorization", a);
    }
    req.send().await.unwrap()
}

/// Without a token, or with an unknown one, the API answers 401 with a
/// problem body and `WWW-Authenticate: Bearer`; the static token and a
/// valid JWT pass; an expired JWT, one for another audience and one
/// signed by another key are refused.
#[tokio::test]
async fn bearer_tokens_and_jwts_are_checked() {
    let broker = Broker::start(BrokerOptions::new());
    let _device = FakeDevice::start(
        broker.plain_port(),
        "dev1",
        answering(200, "text/plain", "ok"),
    )
    .await;
    let keys = keys();
    let public_pem = keys.public_pem.clone();
    let serve = Serve::start(plain_broker(broker.plain_port()), move |c| {
        c.auth.anonymous = false;
        c.auth.tokens = vec![Secret::new("static-token-0123456789")];
        c.auth.jwt = Some(JwtConfig {
            algorithm: Algorithm::ES256,
            key: Secret::new(public_pem),
            issuer: ISSUER.into(),
            audience: AUDIENCE.into(),
            leeway: Duration::ZERO,
        });
    })
    .await;
    serve.wait_online("dev1").await;

    let resp = status_with(&serve, None).await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer");
    problem(resp, 401).await;
    problem(status_with(&serve, Some("Bearer nope")).await, 401).await;
    problem(status_with(&serve, Some("Basic ZGV2MTp4")).await, 401).await;

    let ok = status_with(&serve, Some("Bearer static-token-0123456789")).await;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await.unwrap(), "ok");

    let good = format!("Bearer {}", token(&keys, AUDIENCE, 300));
    assert_eq!(status_with(&serve, Some(&good)).await.status(), 200);
    let expired = format!("Bearer {}", token(&keys, AUDIENCE, -120));
    problem(status_with(&serve, Some(&expired)).await, 401).await;
    let other_aud = format!("Bearer {}", token(&keys, "someone-else", 300));
    problem(status_with(&serve, Some(&other_aud)).await, 401).await;
    let forged = format!("Bearer {}", token(&self::keys(), AUDIENCE, 300));
    problem(status_with(&serve, Some(&forged)).await, 401).await;
}
