//! Per-endpoint outlier detection, Envoy's consecutive-failures flavour.
//!
//! An endpoint that fails `consecutive_failures` times in a row is ejected from load
//! balancing for `base_ejection_time * n`, where `n` counts its ejections so far, so a
//! chronically bad endpoint stays out longer each time. The multiplier does not decay
//! (Envoy's decays on a timer we do not have); `with_max_ejection_time` bounds it.
//!
//! `max_ejection_percent` keeps enough endpoints in rotation: an ejection is allowed
//! when `(ejected + 1) * 100 <= max_ejection_percent * endpoints`, and additionally the
//! first ejection is always allowed when there are at least two endpoints and the
//! percent is non-zero (otherwise, e.g. 30% of 3 endpoints would never eject anyone,
//! which is never what a user who enabled detection meant). A refused ejection is
//! counted as overflow; the endpoint keeps its failure streak and is ejected on a later
//! failure once room frees up.

use std::hash::Hash;

// Looked up for every candidate of every balancing decision: a fast hash
// (std's SipHash cost ~150 instructions per lookup, measured with callgrind).
// The keys are the stack's endpoint indices, which no client chooses.
use foldhash::{HashMap, HashMapExt};
use std::time::{Duration, Instant};

use super::deadline;

#[derive(Debug, Clone, Copy, Default)]
struct Endpoint {
    consecutive_failures: u32,
    times_ejected: u32,
    ejected_until: Option<Instant>,
}

impl Endpoint {
    fn is_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }
}

/// An ejection just decided by [`OutlierDetector::record`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ejection {
    pub until: Instant,
    pub duration: Duration,
    /// How many times this endpoint has now been ejected (1 on the first).
    pub times_ejected: u32,
}

#[derive(Debug, Clone)]
pub struct OutlierDetector<K> {
    consecutive_failures: u32,
    base_ejection_time: Duration,
    max_ejection_time: Option<Duration>,
    max_ejection_percent: u32,
    endpoints: HashMap<K, Endpoint>,
    /// When the last ejection still running ends (at least: an endpoint
    /// forgotten since may have held it). Before it nobody is ejected, and
    /// the common case (no ejection) asks no endpoint: the balancer's two
    /// candidates and the per-request gauge refresh, which otherwise went
    /// over every endpoint of the destination, skip the table.
    ejected_until: Option<Instant>,
    ejections: u64,
    overflow: u64,
}

impl<K: Hash + Eq> OutlierDetector<K> {
    /// `consecutive_failures` of 0 is treated as 1.
    pub fn new(
        consecutive_failures: u32,
        base_ejection_time: Duration,
        max_ejection_percent: u32,
    ) -> Self {
        Self {
            consecutive_failures: consecutive_failures.max(1),
            base_ejection_time,
            max_ejection_time: None,
            max_ejection_percent,
            endpoints: HashMap::new(),
            ejected_until: None,
            ejections: 0,
            overflow: 0,
        }
    }

    /// Caps a single ejection's length (Envoy's `max_ejection_time`).
    pub fn with_max_ejection_time(mut self, max: Duration) -> Self {
        self.max_ejection_time = Some(max);
        self
    }

    /// Defines the endpoints in rotation. Known ones keep their history; new ones
    /// start clean; ones no longer listed are forgotten.
    pub fn set_endpoints(&mut self, keys: impl IntoIterator<Item = K>) {
        let mut next = HashMap::with_capacity(self.endpoints.len());
        for key in keys {
            let state = self.endpoints.remove(&key).unwrap_or_default();
            next.insert(key, state);
        }
        self.endpoints = next;
    }

    /// This detector under new keys, for an endpoint list whose order or
    /// members changed: `keys` pairs each new key with the key the same
    /// endpoint had here, if any. Endpoints that stay keep their ejection and
    /// streak; new ones start clean; the rest are forgotten.
    pub fn rekeyed<J: Hash + Eq>(
        &self,
        keys: impl IntoIterator<Item = (J, Option<K>)>,
    ) -> OutlierDetector<J> {
        OutlierDetector {
            consecutive_failures: self.consecutive_failures,
            base_ejection_time: self.base_ejection_time,
            max_ejection_time: self.max_ejection_time,
            max_ejection_percent: self.max_ejection_percent,
            endpoints: keys
                .into_iter()
                .map(|(key, old)| {
                    let state = old.and_then(|old| self.endpoints.get(&old).copied());
                    (key, state.unwrap_or_default())
                })
                .collect(),
            ejected_until: self.ejected_until,
            ejections: self.ejections,
            overflow: self.overflow,
        }
    }

    /// Reports one result for `key`. Unknown endpoints and results arriving while the
    /// endpoint is ejected (requests sent before the ejection) are ignored.
    pub fn record(&mut self, now: Instant, key: &K, failure: bool) -> Option<Ejection> {
        let endpoint = self.endpoints.get_mut(key)?;
        if endpoint.is_ejected(now) {
            return None;
        }
        if !failure {
            endpoint.consecutive_failures = 0;
            return None;
        }
        endpoint.consecutive_failures = endpoint.consecutive_failures.saturating_add(1);
        if endpoint.consecutive_failures < self.consecutive_failures {
            return None;
        }
        if !self.room_to_eject(now) {
            self.overflow += 1;
            return None;
        }
        let endpoint = self.endpoints.get_mut(key)?;
        endpoint.times_ejected = endpoint.times_ejected.saturating_add(1);
        let mut duration = self
            .base_ejection_time
            .saturating_mul(endpoint.times_ejected);
        if let Some(max) = self.max_ejection_time {
            duration = duration.min(max);
        }
        let until = deadline(now, duration);
        endpoint.ejected_until = Some(until);
        self.ejected_until = self.ejected_until.max(Some(until));
        // It returns with a clean streak: one failure after return is not an ejection.
        endpoint.consecutive_failures = 0;
        self.ejections += 1;
        Some(Ejection {
            until,
            duration,
            times_ejected: endpoint.times_ejected,
        })
    }

    fn room_to_eject(&self, now: Instant) -> bool {
        let total = self.endpoints.len() as u64;
        let ejected = self.ejected_count(now) as u64;
        let percent = u64::from(self.max_ejection_percent);
        let within_percent = (ejected + 1) * 100 <= percent * total;
        let first_of_several = ejected == 0 && total >= 2 && percent > 0;
        within_percent || first_of_several
    }

    /// Whether `key` is out of rotation at `now`. Unknown endpoints are not ejected.
    pub fn is_ejected(&self, now: Instant, key: &K) -> bool {
        self.any_ejected(now) && self.endpoints.get(key).is_some_and(|e| e.is_ejected(now))
    }

    /// Endpoints out of rotation at `now` (O(endpoints) while an ejection
    /// runs, O(1) otherwise).
    pub fn ejected_count(&self, now: Instant) -> usize {
        if !self.any_ejected(now) {
            return 0;
        }
        self.endpoints
            .values()
            .filter(|e| e.is_ejected(now))
            .count()
    }

    fn any_ejected(&self, now: Instant) -> bool {
        self.ejected_until.is_some_and(|until| now < until)
    }

    /// Ejections made since creation (`outrigger_ejections_total`).
    pub fn ejections_total(&self) -> u64 {
        self.ejections
    }

    /// Ejections refused by `max_ejection_percent` since creation.
    pub fn overflow_total(&self) -> u64 {
        self.overflow
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn detector(endpoints: u32, percent: u32) -> OutlierDetector<u32> {
        let mut d = OutlierDetector::new(5, secs(30), percent);
        d.set_endpoints(0..endpoints);
        d
    }

    /// Records `n` failures for `key`; returns the last result.
    fn fail(d: &mut OutlierDetector<u32>, now: Instant, key: u32, n: u32) -> Option<Ejection> {
        (0..n).map(|_| d.record(now, &key, true)).last().flatten()
    }

    #[test]
    fn ejects_at_exactly_the_threshold() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        assert_eq!(fail(&mut d, t0, 1, 4), None);
        assert!(!d.is_ejected(t0, &1));
        let e = d.record(t0, &1, true).unwrap();
        assert_eq!(
            e,
            Ejection {
                until: t0 + secs(30),
                duration: secs(30),
                times_ejected: 1
            }
        );
        assert!(d.is_ejected(t0, &1));
        assert!(!d.is_ejected(t0, &0) && !d.is_ejected(t0, &2));
        assert_eq!(d.ejected_count(t0), 1);
        assert_eq!(d.ejections_total(), 1);
    }

    #[test]
    fn success_resets_the_streak() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        fail(&mut d, t0, 1, 4);
        d.record(t0, &1, false);
        assert_eq!(fail(&mut d, t0, 1, 4), None);
        assert!(fail(&mut d, t0, 1, 1).is_some());
    }

    #[test]
    fn ejected_endpoint_returns_after_its_time() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        fail(&mut d, t0, 1, 5);
        assert!(d.is_ejected(t0 + Duration::from_millis(29_999), &1));
        assert!(!d.is_ejected(t0 + secs(30), &1));
        assert_eq!(d.ejected_count(t0 + secs(30)), 0);
        // Back with a clean streak: four failures are not enough again.
        assert_eq!(fail(&mut d, t0 + secs(30), 1, 4), None);
    }

    #[test]
    fn each_ejection_lasts_longer() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        let first = fail(&mut d, t0, 1, 5).unwrap();
        let second = fail(&mut d, first.until, 1, 5).unwrap();
        assert_eq!((second.duration, second.times_ejected), (secs(60), 2));
        let third = fail(&mut d, second.until, 1, 5).unwrap();
        assert_eq!((third.duration, third.until), (secs(90), t0 + secs(180)));
    }

    #[test]
    fn max_ejection_time_caps_growth() {
        let t0 = Instant::now();
        let mut d = detector(3, 50).with_max_ejection_time(secs(45));
        let first = fail(&mut d, t0, 1, 5).unwrap();
        let second = fail(&mut d, first.until, 1, 5).unwrap();
        assert_eq!(second.duration, secs(45));
    }

    #[test]
    fn never_more_than_max_percent_ejected() {
        let t0 = Instant::now();
        let mut d = detector(10, 30);
        let mut ejected = 0;
        for key in 0..10 {
            if fail(&mut d, t0, key, 5).is_some() {
                ejected += 1;
            }
            assert!(d.ejected_count(t0) * 100 <= 30 * 10);
        }
        assert_eq!(ejected, 3);
        assert_eq!(d.ejected_count(t0), 3);
        assert_eq!(d.overflow_total(), 7);
    }

    #[test]
    fn refused_endpoint_is_ejected_once_room_frees() {
        let t0 = Instant::now();
        let mut d = detector(2, 50);
        fail(&mut d, t0, 0, 5);
        assert_eq!(fail(&mut d, t0, 1, 5), None); // 2 of 2 > 50%
        assert_eq!(d.overflow_total(), 1);
        // Its streak survived: a single further failure after 0 returns ejects it.
        let e = d.record(t0 + secs(30), &1, true).unwrap();
        assert_eq!(e.times_ejected, 1);
    }

    #[test]
    fn first_ejection_always_allowed_among_several() {
        let t0 = Instant::now();
        // 30% of 3 is 0.9 endpoints: by the formula alone nobody could be ejected.
        let mut d = detector(3, 30);
        assert!(fail(&mut d, t0, 0, 5).is_some());
        assert_eq!(fail(&mut d, t0, 1, 5), None);
        assert_eq!(d.ejected_count(t0), 1);
    }

    #[test]
    fn lone_endpoint_ejected_only_at_hundred_percent() {
        let t0 = Instant::now();
        assert_eq!(fail(&mut detector(1, 50), t0, 0, 5), None);
        assert!(fail(&mut detector(1, 100), t0, 0, 5).is_some());
    }

    #[test]
    fn zero_percent_disables_ejection() {
        let t0 = Instant::now();
        let mut d = detector(10, 0);
        assert_eq!(fail(&mut d, t0, 0, 50), None);
        assert_eq!(d.ejected_count(t0), 0);
    }

    #[test]
    fn results_while_ejected_are_ignored() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        fail(&mut d, t0, 1, 5);
        // Stragglers sent before the ejection: neither extend it nor build a streak.
        assert_eq!(fail(&mut d, t0 + secs(1), 1, 10), None);
        assert_eq!(d.overflow_total(), 0);
        assert!(!d.is_ejected(t0 + secs(30), &1));
        for _ in 0..4 {
            assert_eq!(d.record(t0 + secs(30), &1, true), None);
        }
        assert!(d.record(t0 + secs(30), &1, true).is_some());
    }

    #[test]
    fn rekeyed_endpoints_keep_their_state() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        fail(&mut d, t0, 1, 5);
        fail(&mut d, t0, 2, 4);
        // New order: old 2 is now 0, old 1 is now 1, 2 is new; old 0 is gone.
        let mut r: OutlierDetector<u32> = d.rekeyed([(0, Some(2)), (1, Some(1)), (2, None)]);
        assert!(r.is_ejected(t0, &1));
        assert!(!r.is_ejected(t0, &0) && !r.is_ejected(t0, &2));
        assert_eq!(r.ejections_total(), 1);
        // The streak came along: one more failure ejects old 2 (1 of 3 ejected
        // already, 2 of 3 is above 50%: overflow), while new 2 needs five.
        assert_eq!(r.record(t0, &0, true), None);
        assert_eq!(r.overflow_total(), 1);
        assert_eq!(fail(&mut r, t0, 2, 4), None);
        // After old 1 returns, a single failure of old 2 ejects it.
        assert!(r.record(t0 + secs(30), &0, true).is_some());
    }

    #[test]
    fn endpoint_set_changes() {
        let t0 = Instant::now();
        let mut d = detector(3, 50);
        fail(&mut d, t0, 1, 5);
        fail(&mut d, t0, 2, 3);
        // 1 keeps its ejection, 2 keeps its streak, 0 is forgotten, 3 is new.
        d.set_endpoints([1, 2, 3]);
        assert!(d.is_ejected(t0, &1));
        assert!(fail(&mut d, t0, 2, 2).is_none()); // overflow: 2 of 3 > 50%
        assert_eq!(d.overflow_total(), 1);
        // Unknown endpoints are ignored outright.
        assert_eq!(fail(&mut d, t0, 0, 10), None);
        assert!(!d.is_ejected(t0, &0));
        // A removed and re-added endpoint starts from scratch.
        d.set_endpoints([2, 3]);
        d.set_endpoints([1, 2, 3]);
        assert!(!d.is_ejected(t0, &1));
        let e = fail(&mut d, t0, 1, 5).unwrap();
        assert_eq!(e.times_ejected, 1);
    }

    #[test]
    fn overlapping_ejections_are_each_seen_to_their_end() {
        let t0 = Instant::now();
        let mut d = detector(4, 50);
        assert_eq!(d.ejected_count(t0), 0);
        fail(&mut d, t0, 1, 5).expect("ejected until t0+30s");
        fail(&mut d, t0 + secs(20), 2, 5).expect("ejected until t0+50s");
        assert_eq!(d.ejected_count(t0 + secs(25)), 2);
        // The first has returned; the later one, which ends last, still counts.
        let t = t0 + secs(40);
        assert_eq!(d.ejected_count(t), 1);
        assert!(!d.is_ejected(t, &1) && d.is_ejected(t, &2));
        let t = t0 + secs(50);
        assert_eq!(d.ejected_count(t), 0);
        assert!(!d.is_ejected(t, &2));
    }
}
