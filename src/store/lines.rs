//! The waiting room of the coalescing queues (`coalesce.rs`, `postgres/lookups.rs`):
//! one line per caller, lines served in turn, so a caller with much waiting gets one
//! batch and then the others' turn. Bounded in all and per line: past either bound a
//! job is given back at once, so the queue's memory is bounded and one caller's flood
//! cannot fill it for everyone.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;

pub(crate) struct Lines<K, J> {
    lines: HashMap<K, VecDeque<J>>,
    turns: VecDeque<K>,
    len: usize,
    max_waiting: usize,
    max_per_line: usize,
    max_batch: usize,
}

impl<K: Clone + Eq + Hash, J> Lines<K, J> {
    pub fn new(max_waiting: usize, max_per_line: usize, max_batch: usize) -> Self {
        Self {
            lines: HashMap::new(),
            turns: VecDeque::new(),
            len: 0,
            max_waiting,
            max_per_line,
            max_batch,
        }
    }

    /// Jobs waiting, in every line.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Queues `job` in `key`'s line, or gives it back when the queue or the line is
    /// full.
    pub fn push(&mut self, key: K, job: J) -> Result<(), J> {
        if self.len >= self.max_waiting {
            return Err(job);
        }
        let line = self.lines.entry(key.clone()).or_default();
        if line.len() >= self.max_per_line {
            return Err(job);
        }
        if line.is_empty() {
            self.turns.push_back(key);
        }
        line.push_back(job);
        self.len += 1;
        Ok(())
    }

    /// The next line's jobs that `take` accepts (the others, whose callers went
    /// away, are dropped), up to a batch.
    pub fn next_batch(&mut self, mut take: impl FnMut(&J) -> bool) -> Option<(K, Vec<J>)> {
        while let Some(key) = self.turns.pop_front() {
            let Some(line) = self.lines.get_mut(&key) else {
                continue;
            };
            let mut batch = Vec::new();
            while batch.len() < self.max_batch {
                let Some(job) = line.pop_front() else {
                    break;
                };
                self.len -= 1;
                if take(&job) {
                    batch.push(job);
                }
            }
            if line.is_empty() {
                self.lines.remove(&key);
            } else {
                self.turns.push_back(key.clone());
            }
            if !batch.is_empty() {
                return Some((key, batch));
            }
        }
        None
    }
}
