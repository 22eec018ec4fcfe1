//! Choosing an endpoint: power of two choices over peak-EWMA latency weighted by
//! outstanding requests, skipping endpoints that outlier detection ejected.
//!
//! tower's `balance::p2c` drives whole `Service`s through `Discover`; here the
//! retry loop needs to pick an address per attempt and feed each outcome to the
//! outlier detector, so the choice is made directly over shared endpoint state.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::Rng;

use outrigger_proxy_core::addr::HostPort;

/// How quickly old latency observations fade (Linkerd and Finagle use 10s).
const DECAY: Duration = Duration::from_secs(10);

/// Cost assumed for an endpoint before its first response: zero, so a new
/// endpoint is tried at once (its pending count keeps it from being flooded).
const INITIAL_COST: Duration = Duration::ZERO;

/// Smallest latency estimate compared (1µs).
const MIN_COST_NS: f64 = 1_000.0;

pub struct Endpoint {
    /// Shared with the connections kept to it.
    pub target: Arc<HostPort>,
    /// Shared with the same endpoint in the next generation's list (see
    /// [`Endpoint::carried`]), so a new endpoint set keeps what is known.
    ewma: Arc<Mutex<PeakEwma>>,
    pending: Arc<AtomicU32>,
}

struct PeakEwma {
    cost_ns: f64,
    stamp: Instant,
}

impl Endpoint {
    pub fn new(target: HostPort, now: Instant) -> Self {
        Endpoint {
            target: Arc::new(target),
            ewma: Arc::new(Mutex::new(PeakEwma {
                cost_ns: INITIAL_COST.as_nanos() as f64,
                stamp: now,
            })),
            pending: Arc::new(AtomicU32::new(0)),
        }
    }

    /// The same endpoint for a rebuilt list (new policy or endpoint set): it
    /// shares this one's latency estimate and in-flight count, so an endpoint
    /// that stays is neither forgotten nor flooded as if it were new.
    pub fn carried(&self) -> Self {
        Endpoint {
            target: self.target.clone(),
            ewma: self.ewma.clone(),
            pending: self.pending.clone(),
        }
    }

    /// Latency estimate times outstanding requests (+1 so idle endpoints still
    /// compare by latency). The estimate decays while an endpoint goes
    /// unobserved, so one that was slow once is tried again later instead of
    /// being starved for good.
    fn load(&self, now: Instant) -> f64 {
        let ewma = self.ewma.lock().expect("not poisoned");
        let pending = self.pending.load(Ordering::Relaxed) as f64;
        // A floor keeps pending counts meaningful between unmeasured endpoints.
        decayed(&ewma, now).max(MIN_COST_NS) * (pending + 1.0)
    }

    /// Peak-sensitive: a slower observation replaces the estimate at once, a
    /// faster one only pulls it down gradually.
    pub fn observe(&self, rtt: Duration, now: Instant) {
        let mut ewma = self.ewma.lock().expect("not poisoned");
        let rtt_ns = rtt.as_nanos() as f64;
        // One weight serves the comparison and the blend.
        let weight = decay_weight(now.saturating_duration_since(ewma.stamp));
        ewma.cost_ns = if rtt_ns > ewma.cost_ns * weight {
            rtt_ns
        } else {
            ewma.cost_ns * weight + rtt_ns * (1.0 - weight)
        };
        ewma.stamp = now;
    }

    /// The latency estimate now (decayed since the last observation).
    pub fn estimate(&self, now: Instant) -> Duration {
        let ewma = self.ewma.lock().expect("not poisoned");
        Duration::from_nanos(decayed(&ewma, now) as u64)
    }

    /// Requests in flight to this endpoint.
    pub fn pending(&self) -> u32 {
        self.pending.load(Ordering::Relaxed)
    }

    /// Counts a request in flight until the guard drops.
    pub fn start(&self) -> PendingGuard<'_> {
        self.pending.fetch_add(1, Ordering::Relaxed);
        PendingGuard(&self.pending)
    }
}

fn decayed(ewma: &PeakEwma, now: Instant) -> f64 {
    ewma.cost_ns * decay_weight(now.saturating_duration_since(ewma.stamp))
}

/// How much of an estimate is left after `idle`: `exp(-idle / DECAY)`.
/// Under load an endpoint is observed every few microseconds, so the
/// exponent is tiny, and there a cubic polynomial (Taylor's) equals `exp` to
/// better than 1e-13 (the first term left out, x⁴/24, with x < 1e-3) for a
/// fraction of libm's cost: `exp` was ~70 instructions of the ~170 one
/// candidate's load took, three calls per request under the full policy
/// (callgrind, `bash bench/instructions.sh`). Beyond 10 ms of idleness,
/// `exp` itself.
fn decay_weight(idle: Duration) -> f64 {
    let x = idle.as_secs_f64() / DECAY.as_secs_f64();
    if x < 1e-3 {
        1.0 - x * (1.0 - x * (0.5 - x / 6.0))
    } else {
        (-x).exp()
    }
}

/// A uniform index below `n`: 32 random bits scaled, without
/// `random_range`'s rejection step (~30 instructions a draw, two or three per
/// choice). The bias it leaves, under n / 2³², cannot matter for spreading
/// load.
fn below<R: Rng>(rng: &mut R, n: usize) -> usize {
    ((u64::from(rng.next_u32()) * n as u64) >> 32) as usize
}

pub struct PendingGuard<'a>(&'a AtomicU32);

impl Drop for PendingGuard<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Picks among `endpoints`, given which are ejected. Returns `None` only when
/// there are no endpoints at all.
pub fn pick<R: Rng>(
    endpoints: &[Endpoint],
    is_ejected: impl Fn(usize) -> bool,
    now: Instant,
    rng: &mut R,
) -> Option<usize> {
    match endpoints.len() {
        0 => None,
        1 => Some(0),
        n => {
            // Two distinct random candidates, preferring ones not ejected; a few
            // tries keep this O(1) while rarely landing on an ejected endpoint.
            // Each candidate comes with whether it is ejected (asked once).
            let candidate = |rng: &mut R| {
                let mut index = below(rng, n);
                let mut out = is_ejected(index);
                for _ in 0..4 {
                    if !out {
                        break;
                    }
                    index = below(rng, n);
                    out = is_ejected(index);
                }
                (index, out)
            };
            let (a, a_out) = candidate(rng);
            let (mut b, mut b_out) = candidate(rng);
            if a == b {
                b = (a + 1 + below(rng, n - 1)) % n;
                b_out = is_ejected(b);
            }
            Some(match (a_out, b_out) {
                (false, true) => a,
                (true, false) => b,
                _ if endpoints[a].load(now) <= endpoints[b].load(now) => a,
                _ => b,
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn endpoints(n: usize, now: Instant) -> Vec<Endpoint> {
        (0..n)
            .map(|i| {
                Endpoint::new(
                    HostPort {
                        host: "10.0.0.1".into(),
                        port: 8000 + i as u16,
                    },
                    now,
                )
            })
            .collect()
    }

    #[test]
    fn slow_endpoint_gets_less_traffic() {
        let now = Instant::now();
        let eps = endpoints(3, now);
        eps[0].observe(Duration::from_millis(50), now);
        eps[1].observe(Duration::from_millis(2), now);
        eps[2].observe(Duration::from_millis(2), now);
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0; 3];
        for _ in 0..3000 {
            counts[pick(&eps, |_| false, now, &mut rng).unwrap()] += 1;
        }
        // P2C only picks the slow one when it is drawn twice, which cannot happen
        // with distinct candidates: it never wins against a fast one.
        assert_eq!(counts[0], 0, "{counts:?}");
        assert!(counts[1] > 1000 && counts[2] > 1000, "{counts:?}");
    }

    #[test]
    fn pending_requests_raise_load() {
        let now = Instant::now();
        let eps = endpoints(2, now);
        let _busy: Vec<_> = (0..5).map(|_| eps[0].start()).collect();
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        for _ in 0..100 {
            assert_eq!(pick(&eps, |_| false, now, &mut rng), Some(1));
        }
    }

    #[test]
    fn ejected_endpoints_are_skipped() {
        let now = Instant::now();
        let eps = endpoints(3, now);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for _ in 0..500 {
            assert_ne!(pick(&eps, |i| i == 1, now, &mut rng), Some(1));
        }
        // All ejected: still answers (traffic must go somewhere).
        assert!(pick(&eps, |_| true, now, &mut rng).is_some());
    }

    #[test]
    fn new_endpoints_are_tried_and_idle_ones_come_back() {
        let now = Instant::now();
        let mut eps = endpoints(1, now);
        eps[0].observe(Duration::from_millis(2), now);
        eps.push(Endpoint::new((*eps[0].target).clone(), now));
        let mut rng = rand::rngs::StdRng::seed_from_u64(5);
        assert_eq!(
            pick(&eps, |_| false, now, &mut rng),
            Some(1),
            "new endpoint first"
        );
        // A slow observation, then a long quiet spell: the estimate fades.
        eps[1].observe(Duration::from_millis(500), now);
        assert_eq!(pick(&eps, |_| false, now, &mut rng), Some(0));
        let later = now + Duration::from_secs(60);
        eps[0].observe(Duration::from_millis(2), later);
        assert_eq!(
            pick(&eps, |_| false, later, &mut rng),
            Some(1),
            "retried after decay"
        );
    }

    #[test]
    fn faster_observations_pull_the_estimate_down_gradually() {
        let now = Instant::now();
        let eps = endpoints(1, now);
        eps[0].observe(Duration::from_millis(100), now);
        eps[0].observe(Duration::from_millis(1), now + Duration::from_secs(1));
        let cost = eps[0].ewma.lock().unwrap().cost_ns / 1e6;
        assert!(cost > 80.0 && cost < 100.0, "{cost}");
        eps[0].observe(Duration::from_millis(1), now + Duration::from_secs(60));
        let cost = eps[0].ewma.lock().unwrap().cost_ns / 1e6;
        assert!(cost < 5.0, "{cost}");
    }

    #[test]
    fn the_decay_weight_is_exp_at_every_idleness() {
        // Both sides of the polynomial's range, and its edge.
        for nanos in [
            0,
            1,
            1_000,
            250_000,
            9_999_999,
            10_000_000,
            10_000_001,
            3_000_000_000,
        ] {
            let idle = Duration::from_nanos(nanos);
            let exact = (-idle.as_secs_f64() / DECAY.as_secs_f64()).exp();
            let weight = decay_weight(idle);
            assert!(
                (weight - exact).abs() <= exact * 1e-13,
                "{idle:?}: {weight} vs {exact}"
            );
        }
        assert_eq!(decay_weight(Duration::ZERO), 1.0);
        assert!(decay_weight(Duration::from_secs(3600)) < 1e-100);
    }

    #[test]
    fn indices_below_n_are_uniform_and_in_range() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        for n in [1, 2, 3, 7, 1000] {
            let mut counts = vec![0u32; n];
            let draws = 2000 * n as u32;
            for _ in 0..draws {
                counts[below(&mut rng, n)] += 1;
            }
            // Each within 10% of its share.
            assert!(
                counts.iter().all(|&c| c.abs_diff(2000) < 200),
                "{n}: {counts:?}"
            );
        }
    }
}
