//! What a client connection's last request resolved to: its destination, the
//! control-plane subscription that names it, and the stack that served it.
//! Keep-alive clients send request after request to the same authority, so
//! the next one reuses all three instead of parsing, formatting and hashing
//! them again; a different authority replaces the memo.

use std::sync::{Arc, Mutex, OnceLock};

use http::{header, Request};
use outrigger_api::stream::Subscription;

use crate::stack::DestinationStack;
use outrigger_proxy_core::addr::Destination;

#[derive(Default)]
pub struct RouteMemo {
    last: Mutex<Option<Remembered>>,
}

/// The authority bytes a request named, and what they resolved to.
type Remembered = (Box<[u8]>, Arc<Resolved>);

impl std::fmt::Debug for RouteMemo {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteMemo").finish_non_exhaustive()
    }
}

/// One resolved destination and what hangs off it.
pub struct Resolved {
    pub destination: Destination,
    pub subscription: OnceLock<Option<Subscription>>,
    /// The stack the last request used; valid while its versions are current.
    pub stack: Mutex<Option<StackMemo>>,
}

/// The policy-file and snapshot versions a stack was found under, and the stack.
pub type StackMemo = ((u64, u64), Arc<DestinationStack>);

impl Resolved {
    pub fn new(destination: Destination) -> Self {
        Resolved {
            destination,
            subscription: OnceLock::new(),
            stack: Mutex::new(None),
        }
    }
}

impl RouteMemo {
    /// The memo for `request`, or the result of `resolve`, remembered when it
    /// succeeds (the same authority on the same connection resolves alike).
    pub fn resolve<B, E>(
        &self,
        request: &Request<B>,
        resolve: impl FnOnce() -> Result<Destination, E>,
    ) -> Result<Arc<Resolved>, E> {
        let key = authority_key(request);
        let mut last = self.last.lock().expect("not poisoned");
        if let Some((memo_key, resolved)) = last.as_ref() {
            if **memo_key == *key {
                return Ok(resolved.clone());
            }
        }
        let resolved = Arc::new(Resolved::new(resolve()?));
        *last = Some((key.into(), resolved.clone()));
        Ok(resolved)
    }
}

/// The bytes a destination is resolved from: the absolute URI's authority,
/// else the Host header, else nothing (the connection's own destination).
fn authority_key<B>(request: &Request<B>) -> &[u8] {
    if let Some(authority) = request.uri().authority() {
        return authority.as_str().as_bytes();
    }
    request
        .headers()
        .get(header::HOST)
        .map_or(&[][..], |host| host.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use outrigger_proxy_core::addr::HostPort;

    fn destination(host: &str) -> Destination {
        let hp = HostPort {
            host: host.into(),
            port: 80,
        };
        Destination {
            connect: hp.clone(),
            name: hp,
        }
    }

    #[test]
    fn same_authority_reuses_a_different_one_resolves_again() {
        let memo = RouteMemo::default();
        let mut calls = 0;
        let request = |host: &str| Request::get("/").header("host", host).body(()).unwrap();
        let mut resolve = |req: &Request<()>, host: &'static str| {
            memo.resolve(req, || {
                calls += 1;
                Ok::<_, ()>(destination(host))
            })
            .unwrap()
        };
        let a = resolve(&request("a"), "a");
        let again = resolve(&request("a"), "a");
        assert!(Arc::ptr_eq(&a, &again));
        let b = resolve(&request("b"), "b");
        assert_eq!(b.destination.name.host, "b");
        let absolute = Request::get("http://b/x").body(()).unwrap();
        resolve(&absolute, "b");
        assert_eq!(calls, 2);
    }

    #[test]
    fn failures_are_not_remembered() {
        let memo = RouteMemo::default();
        let request = Request::get("/").header("host", "a").body(()).unwrap();
        assert!(memo
            .resolve(&request, || Err::<Destination, _>("no"))
            .is_err());
        let ok = memo.resolve(&request, || Ok::<_, &str>(destination("a")));
        assert!(ok.is_ok());
    }
}
