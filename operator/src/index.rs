//! The compiled view other parts read without blocking: swapped atomically
//! after every recompute, read with one atomic load.

use std::sync::Arc;

use arc_swap::ArcSwap;

use crate::compile::Compiled;

#[derive(Default)]
pub struct CompiledIndex {
    current: ArcSwap<Compiled>,
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
        }
        changed
    }
}
