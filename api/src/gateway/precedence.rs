//! The order in which a Service's attached rules are tried: the first whose
//! match holds serves the request, so the order is Gateway API's
//! precedence.
//!
//! HTTPRoute: an Exact path, then PathPrefix by length (longest first), then
//! RegularExpression (whose precedence the spec leaves to implementations),
//! then a method match, then the most header matches, then the most query
//! parameter matches. GRPCRoute: the most characters in the service, then in
//! the method, then the most header matches. GRPCRoute rules come before
//! HTTPRoute rules: they match gRPC requests only, so they shadow no HTTP
//! request, while an HTTPRoute prefix would shadow them. Ties: the oldest
//! route (creationTimestamp; none, as in a file, counts as oldest), then
//! namespace/name, then rule order, then match order.

use std::cmp::{Ordering, Reverse};

use super::{RouteKind, RouteObject};
use crate::policy::RouteMatch;

/// A rule's match with what ranks it among others.
pub(super) struct Ranked<'a> {
    pub object: &'a RouteObject,
    pub rule: usize,
    pub index: usize,
    pub r#match: &'a RouteMatch,
}

pub(super) fn compare(a: &Ranked<'_>, b: &Ranked<'_>) -> Ordering {
    specificity(a)
        .cmp(&specificity(b))
        .then_with(|| a.object.created.cmp(&b.object.created))
        .then_with(|| {
            (&a.object.namespace, &a.object.name).cmp(&(&b.object.namespace, &b.object.name))
        })
        .then_with(|| (a.rule, a.index).cmp(&(b.rule, b.index)))
}

/// Smaller is more specific (tried first).
#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Specificity {
    Grpc {
        service: Reverse<usize>,
        method: Reverse<usize>,
        headers: Reverse<usize>,
    },
    Http {
        path: PathRank,
        method: Reverse<bool>,
        headers: Reverse<usize>,
        query: Reverse<usize>,
    },
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum PathRank {
    Exact,
    /// By length, longest first ("/", i.e. any path, has length 1).
    Prefix(Reverse<usize>),
    Regex,
}

fn specificity(r: &Ranked<'_>) -> Specificity {
    let m = r.r#match;
    let headers = Reverse(m.headers.len() + m.header_regexes.len());
    match r.object.kind {
        RouteKind::Grpc => {
            let grpc = m.grpc.clone().unwrap_or_default();
            Specificity::Grpc {
                service: Reverse(grpc.service.map_or(0, |s| s.len())),
                method: Reverse(grpc.method.map_or(0, |s| s.len())),
                headers,
            }
        }
        RouteKind::Http => Specificity::Http {
            path: if m.path_exact.is_some() {
                PathRank::Exact
            } else if m.path_regex.is_some() {
                PathRank::Regex
            } else {
                PathRank::Prefix(Reverse(m.path_prefix.as_ref().map_or(1, String::len)))
            },
            method: Reverse(m.method.is_some()),
            headers,
            query: Reverse(m.query_params.len()),
        },
    }
}
