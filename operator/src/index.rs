//! The compiled view other parts read without blocking: swapped atomically
//! after every recompute, read with one atomic load. Changes are announced on
//! a watch channel (the policy server recomputes subscriptions on each).

use std::sync::Arc;

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::compile::Compiled;

pub struct CompiledIndex {
    current: ArcSwap<Compiled>,
    changes: watch::Sender<u64>,
}

impl Default for CompiledIndex {
    fn default() -> Self {
        CompiledIndex {
            current: ArcSwap::default(),
            changes: watch::channel(0).0,
        }
    }
}

impl CompiledIndex {
    pub fn load(&self) -> Arc<Compiled> {
        self.current.load_full()
    }

    /// Installs a new view; returns whether it differs from the last one.
    pub fn store(&self, next: Compiled) -> bool {
        let changed = *self.current.load_full() != next;
        if changed {
            self.current.store(Arc::new(next));
            self.changes.send_modify(|n| *n += 1);
        }
        changed
    }

    /// Wakes on every change of the view.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.subscribe()
    }
}
