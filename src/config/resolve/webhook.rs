//! `[[webhook]]`: outbox sinks POSTing each message to a partner endpoint.

use std::collections::HashSet;
use std::time::Duration;

use crate::config::raw::RawWebhook;
use crate::config::{ConfigError, WebhookConfig};

use super::{positive, Ctx};

/// Resolves every `[[webhook]]`.
pub(super) fn webhooks(
    raw: Vec<RawWebhook>,
    cx: &mut Ctx,
) -> Result<Vec<WebhookConfig>, ConfigError> {
    let mut names = HashSet::new();
    raw.into_iter()
        .map(|w| {
            let name_ok = !w.name.is_empty()
                && w.name.len() <= 64
                && w.name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
            if !name_ok || w.name == "hub" {
                return Err(ConfigError::invalid(
                    "webhook.name",
                    format!(
                        "{:?}: use 1-64 letters, digits, - or _ (and not \"hub\")",
                        w.name
                    ),
                ));
            }
            if !names.insert(w.name.clone()) {
                return Err(ConfigError::invalid(
                    "webhook.name",
                    format!("{:?} is used twice", w.name),
                ));
            }
            let key = |k: &str| format!("webhook.{}.{k}", w.name);
            let loopback_http = ["http://127.0.0.1", "http://localhost", "http://[::1]"]
                .iter()
                .any(|p| w.url.starts_with(p));
            if !w.url.starts_with("https://") && !loopback_http {
                return Err(ConfigError::invalid(
                    key("url"),
                    "must be https:// (http:// only on loopback)",
                ));
            }
            let password = cx.secret(
                &format!("webhook.{}", w.name),
                "password",
                w.password,
                w.password_file,
            )?;
            if password.is_some() && w.username.is_none() {
                return Err(ConfigError::invalid(key("password"), "needs a username"));
            }
            let ca_file = w
                .ca_file
                .map(|p| cx.readable_file(&key("ca_file"), p))
                .transpose()?;
            Ok(WebhookConfig {
                url: w.url,
                username: w.username,
                password,
                headers: w.headers.into_iter().collect(),
                query: w.query.into_iter().collect(),
                ca_file,
                timeout: positive(
                    &key("timeout"),
                    w.timeout.unwrap_or(Duration::from_secs(10)),
                )?,
                name: w.name,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use crate::config::parse;

    const HUB: &str =
        "[hub]\nurl = \"mqtt://127.0.0.1:1883\"\ndevice_id = \"d\"\nallow_insecure = true\n";

    #[test]
    fn webhooks_parse_with_headers_query_and_defaults() {
        let text = format!(
            "{HUB}[[webhook]]\nname = \"partner\"\nurl = \"https://p.example/notify\"\nusername = \"u\"\npassword = \"p\"\n\
             headers = {{ X-A = \"1\" }}\nquery = {{ key = \"k\" }}\n"
        );
        let cfg = parse(&text, std::path::Path::new("/")).unwrap();
        let w = &cfg.webhooks[0];
        assert_eq!((w.name.as_str(), w.timeout.as_secs()), ("partner", 10));
        assert_eq!(w.headers, vec![("X-A".to_string(), "1".to_string())]);
        assert_eq!(w.query, vec![("key".to_string(), "k".to_string())]);
    }

    #[test]
    fn bad_webhooks_name_the_key() {
        let err = |extra: &str| {
            parse(&format!("{HUB}{extra}"), std::path::Path::new("/"))
                .unwrap_err()
                .to_string()
        };
        assert!(
            err("[[webhook]]\nname = \"hub\"\nurl = \"https://x\"\n").starts_with("webhook.name:")
        );
        assert!(
            err("[[webhook]]\nname = \"a\"\nurl = \"http://x.example\"\n")
                .starts_with("webhook.a.url:")
        );
        let twice = "[[webhook]]\nname = \"a\"\nurl = \"https://x\"\n[[webhook]]\nname = \"a\"\nurl = \"https://y\"\n";
        assert!(err(twice).contains("used twice"));
    }
}
