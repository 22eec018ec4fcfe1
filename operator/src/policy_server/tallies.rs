//! `status.proxies` kept up to date where it changes (an ack, a new snapshot,
//! a stream or channel going away) instead of recounted by a scan of every
//! proxy: the scan ran under the hub's lock after every burst of acks, and
//! the acks waited on it.
//!
//! The unit counted is an applied entry: a proxy's last acknowledged version
//! of a live channel whose latest snapshot carries a policy. A proxy counts
//! once per policy it has entries for, and is current when none of those
//! entries is behind its channel's latest version.

use std::collections::HashMap;
use std::sync::Arc;

use crate::proxy_reports::Tally;

/// One proxy's counted entries per policy (a proxy watches a handful of
/// subscriptions: a short list).
#[derive(Default)]
pub struct ProxyPolicies(Vec<ProxyPolicy>);

struct ProxyPolicy {
    policy: Arc<str>,
    entries: u32,
    behind: u32,
}

impl ProxyPolicies {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// One applied entry, as counted.
pub struct Entry<'a> {
    pub policy: &'a Arc<str>,
    pub generation: Option<i64>,
    pub up_to_date: bool,
}

#[derive(Default)]
struct PolicyTally {
    total: u32,
    current: u32,
    /// How many counted entries carry each generation (almost always one
    /// generation: every channel is refreshed from the same view).
    generations: Vec<(Option<i64>, u32)>,
}

/// Per policy (`namespace/name`), over every proxy with open streams.
#[derive(Default)]
pub struct Tallies(HashMap<Arc<str>, PolicyTally>);

impl Tallies {
    /// Counts (`add`) or uncounts one applied entry of the proxy owning
    /// `proxy`; an entry is uncounted with exactly what it was counted with.
    pub fn adjust(&mut self, proxy: &mut ProxyPolicies, entry: Entry<'_>, add: bool) {
        let i = match proxy.0.iter().position(|p| p.policy == *entry.policy) {
            Some(i) => i,
            None => {
                proxy.0.push(ProxyPolicy {
                    policy: entry.policy.clone(),
                    entries: 0,
                    behind: 0,
                });
                proxy.0.len() - 1
            }
        };
        let p = &mut proxy.0[i];
        let counts = |p: &ProxyPolicy| {
            (
                u32::from(p.entries > 0),
                u32::from(p.entries > 0 && p.behind == 0),
            )
        };
        let before = counts(p);
        let behind = u32::from(!entry.up_to_date);
        if add {
            p.entries += 1;
            p.behind += behind;
        } else {
            p.entries -= 1;
            p.behind -= behind;
        }
        let after = counts(p);
        if p.entries == 0 {
            proxy.0.swap_remove(i);
        }
        let tally = self.0.entry(entry.policy.clone()).or_default();
        tally.total = tally.total + after.0 - before.0;
        tally.current = tally.current + after.1 - before.1;
        match tally
            .generations
            .iter()
            .position(|(g, _)| *g == entry.generation)
        {
            Some(g) if add => tally.generations[g].1 += 1,
            Some(g) => {
                tally.generations[g].1 -= 1;
                if tally.generations[g].1 == 0 {
                    tally.generations.swap_remove(g);
                }
            }
            None => {
                debug_assert!(add, "uncounting an entry never counted");
                tally.generations.push((entry.generation, 1));
            }
        }
        if tally.total == 0 {
            debug_assert!(tally.generations.is_empty());
            self.0.remove(entry.policy);
        }
    }

    /// The policies some proxy counts for, with their tallies.
    pub fn get(&self) -> HashMap<String, Tally> {
        self.0
            .iter()
            .map(|(policy, t)| {
                let tally = Tally {
                    total: t.total,
                    current: t.current,
                    generation: t.generations.iter().map(|(g, _)| *g).max().flatten(),
                };
                (policy.to_string(), tally)
            })
            .collect()
    }
}
