//! Outlier detection by consecutive failures (Envoy's semantics): an endpoint
//! that fails `consecutive_failures` times in a row is ejected for
//! `base_ejection_time` × (times it has been ejected), never more than
//! `max_ejection_percent` of the endpoints at once.

use std::collections::HashMap;
use std::hash::Hash;
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub duration: Duration,
    /// How many times this endpoint has been ejected, this one included.
    pub count: u32,
}

#[derive(Debug, Default, Clone)]
struct EndpointState {
    consecutive_failures: u32,
    ejections: u32,
    ejected_until: Option<Instant>,
}

#[derive(Debug)]
pub struct OutlierDetector<K> {
    consecutive_failures: u32,
    base_ejection_time: Duration,
    max_ejection_percent: u32,
    endpoints: HashMap<K, EndpointState>,
    /// Ejections refused because too many endpoints were already out.
    overflow: u64,
}

impl<K: Hash + Eq + Clone> OutlierDetector<K> {
    pub fn new(
        consecutive_failures: u32,
        base_ejection_time: Duration,
        max_ejection_percent: u32,
    ) -> Self {
        OutlierDetector {
            consecutive_failures: consecutive_failures.max(1),
            base_ejection_time,
            max_ejection_percent: max_ejection_percent.min(100),
            endpoints: HashMap::new(),
            overflow: 0,
        }
    }

    /// Defines the endpoint set; state of endpoints that remain is kept.
    pub fn set_endpoints(&mut self, keys: impl IntoIterator<Item = K>) {
        let mut next = HashMap::new();
        for key in keys {
            let state = self.endpoints.remove(&key).unwrap_or_default();
            next.insert(key, state);
        }
        self.endpoints = next;
    }

    pub fn is_ejected(&self, now: Instant, key: &K) -> bool {
        self.endpoints
            .get(key)
            .and_then(|s| s.ejected_until)
            .is_some_and(|until| until > now)
    }

    pub fn ejected_count(&self, now: Instant) -> usize {
        self.endpoints
            .values()
            .filter(|s| s.ejected_until.is_some_and(|until| until > now))
            .count()
    }

    pub fn overflow_total(&self) -> u64 {
        self.overflow
    }

    /// Records an outcome; returns the ejection it caused, if any.
    pub fn record(&mut self, now: Instant, key: K, failure: bool) -> Option<Ejection> {
        let ejected_now = self.ejected_count(now);
        let total = self.endpoints.len();
        let max_percent = self.max_ejection_percent;
        let state = self.endpoints.get_mut(&key)?;
        if !failure {
            state.consecutive_failures = 0;
            return None;
        }
        if state.ejected_until.is_some_and(|until| until > now) {
            return None;
        }
        state.consecutive_failures += 1;
        if state.consecutive_failures < self.consecutive_failures {
            return None;
        }
        // Keep at least the share of endpoints the percentage protects; with
        // two or more endpoints and a non-zero percentage, one may always go.
        let within_share = (ejected_now + 1) * 100 <= max_percent as usize * total;
        let first_allowed = ejected_now == 0 && total >= 2 && max_percent > 0;
        if !(within_share || first_allowed) {
            self.overflow += 1;
            return None;
        }
        state.consecutive_failures = 0;
        state.ejections += 1;
        let duration = self.base_ejection_time * state.ejections;
        state.ejected_until = Some(now + duration);
        Some(Ejection {
            duration,
            count: state.ejections,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn detector() -> OutlierDetector<usize> {
        let mut d = OutlierDetector::new(3, Duration::from_secs(10), 50);
        d.set_endpoints(0..3);
        d
    }

    #[test]
    fn ejects_after_consecutive_failures_and_returns() {
        let t0 = Instant::now();
        let mut d = detector();
        assert_eq!(d.record(t0, 1, true), None);
        assert_eq!(d.record(t0, 1, false), None, "success resets the count");
        assert_eq!(d.record(t0, 1, true), None);
        assert_eq!(d.record(t0, 1, true), None);
        let first = d.record(t0, 1, true).unwrap();
        assert_eq!(first.duration, Duration::from_secs(10));
        assert!(d.is_ejected(t0 + Duration::from_secs(9), &1));
        assert!(!d.is_ejected(t0 + Duration::from_secs(10), &1));
        // The second ejection lasts twice as long.
        let t1 = t0 + Duration::from_secs(11);
        for _ in 0..2 {
            assert_eq!(d.record(t1, 1, true), None);
        }
        assert_eq!(
            d.record(t1, 1, true).unwrap().duration,
            Duration::from_secs(20)
        );
    }

    #[test]
    fn never_more_than_the_allowed_share() {
        let t0 = Instant::now();
        let mut d = detector();
        let mut ejected = 0;
        for key in 0..3 {
            for _ in 0..3 {
                if d.record(t0, key, true).is_some() {
                    ejected += 1;
                }
            }
        }
        // 50% of 3 endpoints: one ejection (two would be 66%).
        assert_eq!(ejected, 1);
        assert_eq!(d.ejected_count(t0), 1);
        assert!(d.overflow_total() >= 2);
    }

    #[test]
    fn unknown_or_removed_endpoints_are_ignored() {
        let t0 = Instant::now();
        let mut d = detector();
        d.set_endpoints([0, 1]);
        assert_eq!(d.record(t0, 2, true), None);
        assert_eq!(d.ejected_count(t0), 0);
    }
}
