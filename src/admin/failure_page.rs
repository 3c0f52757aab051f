//! The shapes of the failure API, without IO: a failure exactly as Afero
//! lists it, the query of a list, how a page is gathered from the store in
//! small chunks (bounded in count and bytes), and its `Link` header.

use std::collections::HashMap;

use serde::Serialize;
use serde_json::Value;
use tether_outbox::{FailureIds, FailureRow, PushFailure};

/// Most failures in one answer; also a list's size without `limit`.
pub(crate) const LIST_CAP: usize = 1000;
/// Most stored bytes of failures in one answer (at least one failure is
/// always given), so an answer stays small however large the messages.
pub(crate) const LIST_BYTES: usize = 4 << 20;
/// Failures read from the store per step while gathering a page.
pub(crate) const CHUNK: usize = 32;

/// One failure with exactly the fields of Afero's failure API.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct AferoFailure {
    /// A UUID (see [`FailureIds`]).
    pub partner_push_failure_id: String,
    /// The sink: `hub` or a webhook's name.
    pub partner_id: String,
    /// When it was recorded, UTC milliseconds since the epoch.
    pub created_timestamp: u64,
    /// The last error.
    pub error_message: String,
    /// The full message as it was to be sent.
    pub partner_push_message: Value,
}

impl AferoFailure {
    /// The API view of failure number `number`; the id comes from the
    /// number, never from the record (old records hold a decimal id there).
    pub(crate) fn new(ids: &FailureIds, number: u64, f: PushFailure) -> Self {
        Self {
            partner_push_failure_id: ids.uuid(number).to_string(),
            partner_id: f.partner_id,
            created_timestamp: f.created_timestamp,
            error_message: f.error_message,
            partner_push_message: f.partner_push_message,
        }
    }
}

/// Listing order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Order {
    /// Afero's order (the partner paths).
    OldestFirst,
    /// tether's `/v1/pushFailures` extension.
    NewestFirst,
}

/// Which failure numbers a list may show: above `after`, below `before`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Bounds {
    /// Exclusive lower bound.
    pub after: Option<u64>,
    /// Exclusive upper bound.
    pub before: Option<u64>,
}

/// A parsed list query.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ListQuery {
    /// Page size, 1..=[`LIST_CAP`].
    pub limit: usize,
    /// The window.
    pub bounds: Bounds,
}

/// A query parameter that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("query parameter {field}: {detail}")]
pub(crate) struct QueryError {
    /// The parameter.
    pub field: &'static str,
    /// What is wrong and what is expected.
    pub detail: String,
}

/// Parses `limit`, `after` and `before`; `default_limit` applies without
/// `limit`, and a larger `limit` than [`LIST_CAP`] is capped.
///
/// # Errors
/// When `limit` is not a whole number of at least 1, or `after`/`before`
/// is not a failure id of this store.
pub(crate) fn parse_query(
    q: &HashMap<String, String>,
    ids: &FailureIds,
    default_limit: usize,
) -> Result<ListQuery, QueryError> {
    let limit = match q.get("limit") {
        None => default_limit,
        Some(v) => v
            .parse::<usize>()
            .ok()
            .filter(|n| *n >= 1)
            .ok_or_else(|| QueryError {
                field: "limit",
                detail: format!("{v:?} is not a whole number from 1 to {LIST_CAP}"),
            })?,
    };
    let id = |field: &'static str| -> Result<Option<u64>, QueryError> {
        q.get(field)
            .map(|v| {
                ids.number(v).ok_or_else(|| QueryError {
                    field,
                    detail: format!(
                        "{v:?} is not a partnerPushFailureId of this tether (pass one from a list)"
                    ),
                })
            })
            .transpose()
    };
    Ok(ListQuery {
        limit: limit.min(LIST_CAP),
        bounds: Bounds {
            after: id("after")?,
            before: id("before")?,
        },
    })
}

/// What a list gathered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Page {
    /// The failures, in the order asked for.
    pub rows: Vec<FailureRow>,
    /// Whether more failures lie beyond the last one.
    pub more: bool,
}

/// Gathers up to `limit` failures of `partner` (all when `None`) within
/// `bounds`, at most `max_bytes` of them (but at least one), reading
/// `fetch(bounds, n)` in chunks of [`CHUNK`] so memory stays bounded.
/// `fetch` returns up to `n` rows within the bounds, in `order`.
///
/// # Errors
/// What `fetch` returns.
pub(crate) fn gather<E>(
    order: Order,
    mut bounds: Bounds,
    partner: Option<&str>,
    limit: usize,
    max_bytes: usize,
    mut fetch: impl FnMut(Bounds, usize) -> Result<Vec<FailureRow>, E>,
) -> Result<Page, E> {
    let mut rows: Vec<FailureRow> = Vec::new();
    let mut bytes = 0usize;
    loop {
        let chunk = fetch(bounds, CHUNK)?;
        let exhausted = chunk.len() < CHUNK;
        for row in chunk {
            match order {
                Order::OldestFirst => bounds.after = Some(row.number),
                Order::NewestFirst => bounds.before = Some(row.number),
            }
            if partner.is_some_and(|p| p != row.failure.partner_id) {
                continue;
            }
            if rows.len() >= limit || (!rows.is_empty() && bytes + row.bytes > max_bytes) {
                return Ok(Page { rows, more: true });
            }
            bytes += row.bytes;
            rows.push(row);
        }
        if exhausted {
            return Ok(Page { rows, more: false });
        }
    }
}

/// The `Link` header (RFC 8288) of an oldest-first page of `path` that
/// has more: the next page starts after `last`, same `limit` and `before`.
pub(crate) fn next_link(path: &str, last: &str, q: &ListQuery, ids: &FailureIds) -> String {
    let before = q
        .bounds
        .before
        .map_or(String::new(), |b| format!("&before={}", ids.uuid(b)));
    format!(
        "<{path}?after={last}&limit={}{before}>; rel=\"next\"",
        q.limit
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(number: u64, partner: &str, bytes: usize) -> FailureRow {
        FailureRow {
            number,
            bytes,
            failure: PushFailure {
                partner_push_failure_id: number.to_string(),
                partner_id: partner.into(),
                created_timestamp: 1_700_000_000_000 + number,
                error_message: "503 Service Unavailable".into(),
                partner_push_message: serde_json::json!({"n": number}),
                message_type: "attribute".into(),
                message_id: uuid::Uuid::new_v4().to_string(),
            },
        }
    }

    /// A fake store: `fetch` honours the bounds, in `order`.
    fn store(
        rows: Vec<FailureRow>,
        order: Order,
    ) -> impl FnMut(Bounds, usize) -> Result<Vec<FailureRow>, ()> {
        move |b: Bounds, n: usize| {
            let inside = |r: &&FailureRow| {
                b.after.is_none_or(|a| r.number > a) && b.before.is_none_or(|x| r.number < x)
            };
            let mut out: Vec<FailureRow> = rows.iter().filter(inside).cloned().collect();
            if order == Order::NewestFirst {
                out.reverse();
            }
            out.truncate(n);
            Ok(out)
        }
    }

    fn numbers(p: &Page) -> Vec<u64> {
        p.rows.iter().map(|r| r.number).collect()
    }

    #[test]
    fn a_page_stops_at_the_limit_and_says_more_only_when_more_of_the_partner_exist() {
        let rows: Vec<_> = (1..=100)
            .map(|n| row(n, if n % 2 == 0 { "hub" } else { "w" }, 10))
            .collect();
        let fetch = store(rows.clone(), Order::OldestFirst);
        let p = gather(
            Order::OldestFirst,
            Bounds::default(),
            Some("hub"),
            10,
            LIST_BYTES,
            fetch,
        )
        .unwrap();
        assert_eq!(numbers(&p), (1..=10).map(|n| n * 2).collect::<Vec<_>>());
        assert!(p.more);
        let p = gather(
            Order::OldestFirst,
            Bounds {
                after: Some(90),
                before: None,
            },
            Some("hub"),
            10,
            LIST_BYTES,
            store(rows.clone(), Order::OldestFirst),
        )
        .unwrap();
        assert_eq!(numbers(&p), vec![92, 94, 96, 98, 100]);
        assert!(!p.more);
        let p = gather(
            Order::OldestFirst,
            Bounds::default(),
            Some("hub"),
            50,
            LIST_BYTES,
            store(rows, Order::OldestFirst),
        )
        .unwrap();
        assert_eq!(p.rows.len(), 50);
        assert!(!p.more, "exactly the partner's 50: nothing beyond");
    }

    #[test]
    fn a_page_is_bounded_in_bytes_but_always_gives_one_failure() {
        let rows: Vec<_> = (1..=5).map(|n| row(n, "hub", 300)).collect();
        let p = gather(
            Order::OldestFirst,
            Bounds::default(),
            None,
            10,
            700,
            store(rows.clone(), Order::OldestFirst),
        )
        .unwrap();
        assert_eq!((numbers(&p), p.more), (vec![1, 2], true));
        let p = gather(
            Order::OldestFirst,
            Bounds::default(),
            None,
            10,
            100,
            store(rows, Order::OldestFirst),
        )
        .unwrap();
        assert_eq!((numbers(&p), p.more), (vec![1], true));
    }

    #[test]
    fn newest_first_pages_downwards() {
        let rows: Vec<_> = (1..=40).map(|n| row(n, "hub", 1)).collect();
        let p = gather(
            Order::NewestFirst,
            Bounds::default(),
            None,
            3,
            LIST_BYTES,
            store(rows.clone(), Order::NewestFirst),
        )
        .unwrap();
        assert_eq!((numbers(&p), p.more), (vec![40, 39, 38], true));
        let p = gather(
            Order::NewestFirst,
            Bounds {
                after: None,
                before: Some(3),
            },
            None,
            3,
            LIST_BYTES,
            store(rows, Order::NewestFirst),
        )
        .unwrap();
        assert_eq!((numbers(&p), p.more), (vec![2, 1], false));
    }

    #[test]
    fn the_view_has_exactly_aferos_fields_and_a_computed_uuid() {
        let ids = FailureIds::for_store("s");
        let v = serde_json::to_value(AferoFailure::new(&ids, 7, row(7, "hub", 1).failure)).unwrap();
        let mut keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        keys.sort();
        assert_eq!(
            keys,
            [
                "createdTimestamp",
                "errorMessage",
                "partnerId",
                "partnerPushFailureId",
                "partnerPushMessage"
            ]
        );
        assert_eq!(v["partnerPushFailureId"], ids.uuid(7).to_string());
    }

    #[test]
    fn queries_parse_cap_and_name_the_bad_parameter() {
        let ids = FailureIds::for_store("s");
        let q = |pairs: &[(&str, String)]| {
            let m: HashMap<String, String> = pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.clone()))
                .collect();
            parse_query(&m, &ids, LIST_CAP)
        };
        assert_eq!(q(&[]).unwrap().limit, LIST_CAP);
        assert_eq!(q(&[("limit", "5000".into())]).unwrap().limit, LIST_CAP);
        let ok = q(&[("limit", "2".into()), ("after", ids.uuid(4).to_string())]).unwrap();
        assert_eq!((ok.limit, ok.bounds.after), (2, Some(4)));
        assert_eq!(q(&[("before", "9".into())]).unwrap().bounds.before, Some(9));
        for (k, v) in [("limit", "0"), ("limit", "x"), ("after", "nope")] {
            assert_eq!(q(&[(k, v.into())]).unwrap_err().field, k);
        }
        let other = FailureIds::for_store("t").uuid(1).to_string();
        assert_eq!(q(&[("before", other)]).unwrap_err().field, "before");
    }

    #[test]
    fn the_link_continues_after_the_last_failure_with_the_same_window() {
        let ids = FailureIds::for_store("s");
        let q = ListQuery {
            limit: 2,
            bounds: Bounds {
                after: None,
                before: Some(9),
            },
        };
        assert_eq!(
            next_link("/v1/partners/hub/pushFailures", "L", &q, &ids),
            format!(
                "</v1/partners/hub/pushFailures?after=L&limit=2&before={}>; rel=\"next\"",
                ids.uuid(9)
            )
        );
    }
}
