//! Name and token syntax from the Kubernetes and HTTP specifications.

/// RFC 1123 label, as Kubernetes uses it for Service and namespace names.
pub(super) fn is_dns_label(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !s.starts_with('-')
        && !s.ends_with('-')
}

/// `route-<digits>`: what an unnamed route is called.
pub(super) fn is_generated_route_name(s: &str) -> bool {
    s.strip_prefix("route-")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// RFC 1123 subdomain: dot-separated labels, as for most object names.
pub(super) fn is_dns_subdomain(s: &str) -> bool {
    !s.is_empty() && s.len() <= 253 && s.split('.').all(is_dns_label)
}

/// RFC 9110 token: what header names and methods are made of.
pub(super) fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Methods are case-sensitive and the standard ones uppercase; a lowercase
/// one in a policy is almost surely a mistake that would match nothing.
pub(super) fn is_uppercase_method(s: &str) -> bool {
    is_token(s) && !s.bytes().any(|b| b.is_ascii_lowercase())
}

/// A protobuf identifier: what gRPC method names are.
pub(super) fn is_proto_ident(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_')
}

/// A fully qualified protobuf name (`package.sub.Service`): identifiers
/// joined by dots.
pub(super) fn is_proto_full_name(s: &str) -> bool {
    s.split('.').all(is_proto_ident)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dns_names() {
        assert!(is_dns_label("payments-v2"));
        for bad in ["", "-a", "a-", "A", "a.b", &"a".repeat(64)] {
            assert!(!is_dns_label(bad), "{bad:?}");
        }
        assert!(is_dns_subdomain("payments.v2"));
        assert!(!is_dns_subdomain("payments..v2"));
    }

    #[test]
    fn tokens_and_methods() {
        assert!(is_token("x-request-id"));
        assert!(!is_token("x request"));
        assert!(!is_token("x:y"));
        assert!(is_uppercase_method("M-SEARCH"));
        assert!(!is_uppercase_method("Post"));
        assert!(!is_uppercase_method(""));
    }

    #[test]
    fn protobuf_names() {
        assert!(is_proto_ident("SayHello") && is_proto_ident("_x1"));
        for bad in ["", "1a", "a-b", "a.b", "a/b"] {
            assert!(!is_proto_ident(bad), "{bad:?}");
        }
        assert!(is_proto_full_name("helloworld.Greeter") && is_proto_full_name("Greeter"));
        for bad in ["", ".a", "a.", "a..b", "a/b", "a.1b"] {
            assert!(!is_proto_full_name(bad), "{bad:?}");
        }
    }
}
