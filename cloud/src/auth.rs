//! Bearer authentication of API clients: static tokens from a file and/or
//! JWTs verified against a configured key with `iss`, `aud` and `exp`
//! required.

use axum::http::{header, HeaderMap};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use sha2::{Digest, Sha256};

use super::config::{AuthConfig, JwtConfig};
use super::error::CloudError;

/// Checks `Authorization: Bearer ...` headers.
pub struct Authenticator {
    /// SHA-256 of each static token: comparing digests keeps the tokens'
    /// bytes out of any timing difference.
    tokens: Vec<[u8; 32]>,
    jwt: Option<(DecodingKey, Validation)>,
    anonymous: bool,
}

impl Authenticator {
    /// Builds the checker.
    ///
    /// # Errors
    /// No method configured (and not anonymous), anonymous together with
    /// a method, or an unusable JWT key.
    pub fn new(cfg: &AuthConfig) -> Result<Self, CloudError> {
        let has_method = !cfg.tokens.is_empty() || cfg.jwt.is_some();
        if cfg.anonymous && has_method {
            return Err(CloudError::config(
                "auth.anonymous",
                "cannot be combined with tokens or a JWT key",
            ));
        }
        if !cfg.anonymous && !has_method {
            return Err(CloudError::config(
                "auth",
                "give a token file, a JWT key, or allow anonymous access explicitly",
            ));
        }
        Ok(Authenticator {
            tokens: cfg.tokens.iter().map(|t| digest(t.expose())).collect(),
            jwt: cfg.jwt.as_ref().map(jwt_checker).transpose()?,
            anonymous: cfg.anonymous,
        })
    }

    /// Accepts or refuses a request by its headers.
    ///
    /// # Errors
    /// Why the request is refused (for the log; clients only see 401).
    pub fn check(&self, headers: &HeaderMap) -> Result<(), String> {
        if self.anonymous {
            return Ok(());
        }
        let value = headers
            .get(header::AUTHORIZATION)
            .ok_or("no Authorization header")?
            .to_str()
            .map_err(|_| "Authorization is not text")?;
        let (scheme, token) = value.split_once(' ').ok_or("Authorization is not Bearer")?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err("Authorization is not Bearer".into());
        }
        let token = token.trim();
        if self.tokens.contains(&digest(token)) {
            return Ok(());
        }
        match &self.jwt {
            Some((key, validation)) => {
                jsonwebtoken::decode::<serde_json::Value>(token, key, validation)
                    .map(|_| ())
                    .map_err(|e| format!("JWT refused: {e}"))
            }
            None => Err("unknown token".into()),
        }
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn jwt_checker(cfg: &JwtConfig) -> Result<(DecodingKey, Validation), CloudError> {
    let pem = cfg.key.expose().as_bytes();
    let bad =
        |e: jsonwebtoken::errors::Error| CloudError::config("auth.jwt.key_file", e.to_string());
    let key = match cfg.algorithm {
        Algorithm::HS256 | Algorithm::HS384 | Algorithm::HS512 => {
            if pem.len() < 32 {
                return Err(CloudError::config(
                    "auth.jwt.key_file",
                    "an HMAC secret needs at least 32 bytes",
                ));
            }
            DecodingKey::from_secret(pem)
        }
        Algorithm::RS256
        | Algorithm::RS384
        | Algorithm::RS512
        | Algorithm::PS256
        | Algorithm::PS384
        | Algorithm::PS512 => DecodingKey::from_rsa_pem(pem).map_err(bad)?,
        Algorithm::ES256 | Algorithm::ES384 => DecodingKey::from_ec_pem(pem).map_err(bad)?,
        Algorithm::EdDSA => DecodingKey::from_ed_pem(pem).map_err(bad)?,
    };
    let mut validation = Validation::new(cfg.algorithm);
    validation.set_issuer(&[cfg.issuer.as_str()]);
    validation.set_audience(&[cfg.audience.as_str()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    validation.leeway = cfg.leeway.as_secs();
    Ok((key, validation))
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use tether_protocol::Secret;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn auth() -> Authenticator {
        Authenticator::new(&AuthConfig {
            tokens: vec![Secret::new("static-token")],
            jwt: Some(JwtConfig {
                algorithm: Algorithm::HS256,
                key: Secret::new(SECRET),
                issuer: "https://issuer.test".into(),
                audience: "tether-cloud".into(),
                leeway: Duration::ZERO,
            }),
            anonymous: false,
        })
        .unwrap()
    }

    fn bearer(token: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().unwrap(),
        );
        h
    }

    fn jwt(claims: serde_json::Value) -> String {
        jsonwebtoken::encode(
            &jsonwebtoken::Header::default(),
            &claims,
            &jsonwebtoken::EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    }

    #[test]
    fn static_tokens_and_jwts_are_checked() {
        let a = auth();
        let now = tether_protocol::time::unix_seconds(std::time::SystemTime::now());
        assert!(a.check(&bearer("static-token")).is_ok());
        assert!(a.check(&bearer("static-token2")).is_err());
        assert!(a.check(&HeaderMap::new()).is_err());
        let good = serde_json::json!({"iss": "https://issuer.test", "aud": "tether-cloud", "exp": now + 60});
        assert!(a.check(&bearer(&jwt(good.clone()))).is_ok());
        let mut no_exp = good.clone();
        no_exp.as_object_mut().unwrap().remove("exp");
        assert!(a.check(&bearer(&jwt(no_exp))).is_err());
        let mut other_iss = good;
        other_iss["iss"] = "https://elsewhere".into();
        assert!(a.check(&bearer(&jwt(other_iss))).is_err());
    }

    #[test]
    fn no_method_or_a_mixed_one_is_refused() {
        assert!(Authenticator::new(&AuthConfig::default()).is_err());
        let mixed = AuthConfig {
            tokens: vec![Secret::new("t")],
            anonymous: true,
            ..AuthConfig::default()
        };
        assert!(Authenticator::new(&mixed).is_err());
    }
}
