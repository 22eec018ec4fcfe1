//! Header hygiene between hops: connection-scoped headers stay on their hop, and
//! every request carries an `x-request-id`.

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

pub const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// plus the proxy-addressed ones.
const HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHORIZATION,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
];

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// `TE: trailers` survives: gRPC needs it end to end. With `keep_upgrade`, the
/// `Connection: upgrade` and `Upgrade` pair survives for a protocol switch.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // Which hop-by-hop names the message has, found in one pass over its few
    // names. Most have none, or only `Connection`: looking up each of the
    // seven cost about 1,500 instructions a message, twice per request
    // (bench/instructions.sh).
    let present = headers
        .keys()
        .fold(0u8, |set, name| set | hop_by_hop_bit(name));
    if present == 0 {
        return;
    }
    let has = |name: &HeaderName| present & hop_by_hop_bit(name) != 0;
    // Most messages name only headers removed anyway ("keep-alive") or none
    // ("close"): collect the rest, which usually allocates nothing.
    let named: Vec<HeaderName> = match has(&header::CONNECTION) {
        false => Vec::new(),
        true => headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|name| {
                !name.eq_ignore_ascii_case("close")
                    && !HOP_BY_HOP
                        .iter()
                        .any(|hop| name.eq_ignore_ascii_case(hop.as_str()))
            })
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect(),
    };
    let te_trailers = has(&header::TE)
        && headers.get_all(header::TE).iter().any(|v| {
            v.to_str()
                .is_ok_and(|v| v.to_ascii_lowercase().contains("trailers"))
        });
    let upgrade = match keep_upgrade && has(&header::UPGRADE) {
        true => headers.get(header::UPGRADE).cloned(),
        false => None,
    };

    for name in &named {
        headers.remove(name);
    }
    for (i, hop) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(hop);
        }
    }
    if te_trailers {
        headers.insert(header::TE, HeaderValue::from_static("trailers"));
    }
    if let Some(upgrade) = upgrade {
        headers.insert(header::UPGRADE, upgrade);
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    }
}

/// `name`'s bit in a set of [`HOP_BY_HOP`] names (0 when it is not one).
fn hop_by_hop_bit(name: &HeaderName) -> u8 {
    HOP_BY_HOP
        .iter()
        .position(|hop| hop == name)
        .map_or(0, |i| 1 << i)
}

/// Whether an HTTP/1.1 request asks to switch protocols (e.g. WebSocket).
pub fn wants_upgrade(headers: &HeaderMap) -> bool {
    headers.contains_key(header::UPGRADE)
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|token| token.trim().eq_ignore_ascii_case("upgrade"))
}

/// Returns the request's id, generating one when absent or unusable.
///
/// The id is marked never-indexed for HTTP/2's header compression: a value
/// new with every request gains nothing from HPACK's dynamic table, and
/// indexing it cost every HTTP/2 hop an insertion, an eviction and the
/// hashing behind them, on both the request and the response
/// (bench/instructions.sh with INSTR_LOAD=h2).
pub fn ensure_request_id(headers: &mut HeaderMap) -> HeaderValue {
    // One lookup (the name hashed once) whether the id is there or not.
    match headers.entry(REQUEST_ID) {
        Entry::Occupied(mut entry) => {
            let id = entry.get_mut();
            if !id.is_empty() && id.len() <= 128 {
                id.set_sensitive(true);
                return id.clone();
            }
            let id = new_request_id();
            entry.insert(id.clone());
            id
        }
        Entry::Vacant(entry) => entry.insert(new_request_id()).clone(),
    }
}

fn new_request_id() -> HeaderValue {
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    let text = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut text);
    let mut id = HeaderValue::from_str(text).expect("a UUID is a valid header value");
    id.set_sensitive(true);
    id
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_connection_named_and_standard_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, x-secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TE, "trailers, deflate".parse().unwrap());
        h.insert("x-app", "kept".parse().unwrap());
        strip_hop_by_hop(&mut h, false);
        assert!(h.get("x-secret").is_none());
        assert!(h.get("keep-alive").is_none());
        assert!(h.get(header::CONNECTION).is_none());
        assert_eq!(h[header::TE], "trailers");
        assert_eq!(h["x-app"], "kept");
    }

    #[test]
    fn keeps_upgrade_pair_when_asked() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "Upgrade".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        assert!(wants_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h[header::UPGRADE], "websocket");
        assert_eq!(h[header::CONNECTION], "upgrade");
    }

    #[test]
    fn request_id_is_kept_or_generated() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, "abc".parse().unwrap());
        assert_eq!(ensure_request_id(&mut h), "abc");
        let mut h = HeaderMap::new();
        let id = ensure_request_id(&mut h);
        assert_eq!(id.len(), 36);
        assert_eq!(h[REQUEST_ID], id);
    }

    #[test]
    fn request_ids_are_never_indexed_by_hpack() {
        let mut h = HeaderMap::new();
        h.insert(REQUEST_ID, "abc".parse().unwrap());
        assert!(ensure_request_id(&mut h).is_sensitive());
        assert!(h[REQUEST_ID].is_sensitive());
        let mut h = HeaderMap::new();
        assert!(ensure_request_id(&mut h).is_sensitive());
        assert!(h[REQUEST_ID].is_sensitive());
    }

    #[test]
    fn an_empty_or_overlong_request_id_is_replaced() {
        for bad in [String::new(), "x".repeat(129)] {
            let mut h = HeaderMap::new();
            h.append(REQUEST_ID, HeaderValue::from_str(&bad).unwrap());
            h.append(REQUEST_ID, "second".parse().unwrap());
            let id = ensure_request_id(&mut h);
            assert_eq!(id.len(), 36);
            let ids: Vec<_> = h.get_all(REQUEST_ID).iter().collect();
            assert_eq!(ids, [&id], "every value the client sent is replaced");
        }
    }
}
