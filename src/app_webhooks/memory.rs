//! The webhook store of a single node without Redis: the queue and the
//! occupancy record in one mutex, with exactly the semantics of the Redis
//! scripts (`redis.rs`), so one conformance suite covers both.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use async_trait::async_trait;

use super::event::{Hold, Queued};
use super::queue::{Claim, Claimed, Occupancy, QueueOptions, WebhookQueue};
use crate::channel_events::ChannelEvent;
use crate::domain::UnixMillis;
use crate::store::StoreError;

pub struct MemoryWebhookStore {
    options: QueueOptions,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    seq: u64,
    /// (due, id): what is due first comes first; ids break ties in queue
    /// order.
    due: BTreeSet<(UnixMillis, u64)>,
    events: HashMap<u64, Entry>,
    /// Hold key → the held event still waiting under it.
    held: HashMap<String, u64>,
    /// Channel → nodes with local subscribers; node → its channels.
    channels: HashMap<String, HashSet<String>>,
    nodes: HashMap<String, HashSet<String>>,
}

struct Entry {
    json: String,
    queued_at: UnixMillis,
    tries: u32,
    due: UnixMillis,
    /// Set while the event is held and cancellable.
    hold_key: Option<String>,
}

impl MemoryWebhookStore {
    pub fn new(options: QueueOptions) -> Self {
        Self {
            options,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // Every method leaves the maps consistent before it can panic.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl Inner {
    fn set_due(&mut self, id: u64, due: UnixMillis) {
        if let Some(e) = self.events.get_mut(&id) {
            self.due.remove(&(e.due, id));
            e.due = due;
            self.due.insert((due, id));
        }
    }

    fn remove(&mut self, id: u64) {
        if let Some(e) = self.events.remove(&id) {
            self.due.remove(&(e.due, id));
            if let Some(key) = e.hold_key {
                self.held.remove(&key);
            }
        }
    }

    /// Stops `key`'s held event (if any) from being cancellable.
    fn release_hold(&mut self, key: &str) {
        if let Some(id) = self.held.remove(key)
            && let Some(e) = self.events.get_mut(&id)
        {
            e.hold_key = None;
        }
    }

    /// Queues one event; `false` when refused (the queue is full).
    fn push(&mut self, q: Queued, now: UnixMillis, options: &QueueOptions) -> bool {
        let (due, hold_key) = match q.hold {
            Hold::Cancels(key) => {
                match self.held.get(&key).copied() {
                    Some(id) if self.events.get(&id).is_some_and(|e| e.due > now) => {
                        // The departure is still waiting: both vanish.
                        self.remove(id);
                        return true;
                    }
                    Some(_) => self.release_hold(&key),
                    None => {}
                }
                (now, None)
            }
            Hold::Held(key) => (now + options.hold.as_millis() as i64, Some(key)),
            Hold::None => (now, None),
        };
        if self.events.len() >= options.max_len {
            return false;
        }
        self.seq += 1;
        let id = self.seq;
        if let Some(key) = &hold_key {
            self.release_hold(key);
            self.held.insert(key.clone(), id);
        }
        self.events.insert(
            id,
            Entry {
                json: q.json,
                queued_at: now,
                tries: 0,
                due,
                hold_key,
            },
        );
        self.due.insert((due, id));
        true
    }

    fn vacated(&mut self, channel: &str, now: UnixMillis, options: &QueueOptions) {
        let q = Queued::of(&ChannelEvent::Vacated {
            channel: channel.to_string(),
        });
        self.push(q, now, options);
    }
}

fn parse_ids(ids: &[String]) -> impl Iterator<Item = u64> + '_ {
    ids.iter().filter_map(|id| id.parse().ok())
}

#[async_trait]
impl WebhookQueue for MemoryWebhookStore {
    async fn enqueue(&self, events: Vec<Queued>, now: UnixMillis) -> Result<usize, StoreError> {
        let mut inner = self.lock();
        Ok(events
            .into_iter()
            .filter(|q| !inner.push(q.clone(), now, &self.options))
            .count())
    }

    async fn claim(
        &self,
        max: usize,
        now: UnixMillis,
        until: UnixMillis,
    ) -> Result<Claim, StoreError> {
        let mut inner = self.lock();
        let ids: Vec<u64> = inner
            .due
            .iter()
            .take_while(|(due, _)| *due <= now)
            .take(max)
            .map(|(_, id)| *id)
            .collect();
        if ids.is_empty() {
            let next_due = inner.due.first().map(|(due, _)| *due);
            return Ok(Claim {
                events: Vec::new(),
                next_due,
            });
        }
        let mut events = Vec::with_capacity(ids.len());
        for id in ids {
            inner.set_due(id, until);
            let e = inner.events.get_mut(&id).expect("indexed events exist");
            let key = e.hold_key.take();
            events.push(Claimed {
                id: id.to_string(),
                json: e.json.clone(),
                queued_at: e.queued_at,
                tries: e.tries,
            });
            if let Some(key) = key {
                inner.held.remove(&key);
            }
        }
        Ok(Claim {
            events,
            next_due: None,
        })
    }

    async fn ack(&self, ids: &[String]) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for id in parse_ids(ids) {
            inner.remove(id);
        }
        Ok(())
    }

    async fn retry(&self, ids: &[String], due: UnixMillis) -> Result<(), StoreError> {
        let mut inner = self.lock();
        for id in parse_ids(ids) {
            if let Some(e) = inner.events.get_mut(&id) {
                e.tries += 1;
                inner.set_due(id, due);
            }
        }
        Ok(())
    }
}

#[async_trait]
impl Occupancy for MemoryWebhookStore {
    async fn occupy(&self, channel: &str, node: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        let nodes = inner.channels.entry(channel.to_string()).or_default();
        let first = nodes.insert(node.to_string()) && nodes.len() == 1;
        inner
            .nodes
            .entry(node.to_string())
            .or_default()
            .insert(channel.to_string());
        if first {
            let q = Queued::of(&ChannelEvent::Occupied {
                channel: channel.to_string(),
            });
            inner.push(q, now, &self.options);
        }
        Ok(first)
    }

    async fn vacate(&self, channel: &str, node: &str, now: UnixMillis) -> Result<bool, StoreError> {
        let mut inner = self.lock();
        if let Some(channels) = inner.nodes.get_mut(node) {
            channels.remove(channel);
            if channels.is_empty() {
                inner.nodes.remove(node);
            }
        }
        let Some(nodes) = inner.channels.get_mut(channel) else {
            return Ok(false);
        };
        let last = nodes.remove(node) && nodes.is_empty();
        if nodes.is_empty() {
            inner.channels.remove(channel);
        }
        if last {
            inner.vacated(channel, now, &self.options);
        }
        Ok(last)
    }

    async fn vacate_node(&self, node: &str, now: UnixMillis) -> Result<Vec<String>, StoreError> {
        let mut inner = self.lock();
        let mut vacated = Vec::new();
        for channel in inner.nodes.remove(node).unwrap_or_default() {
            let Some(nodes) = inner.channels.get_mut(&channel) else {
                continue;
            };
            if nodes.remove(node) && nodes.is_empty() {
                inner.channels.remove(&channel);
                inner.vacated(&channel, now, &self.options);
                vacated.push(channel);
            }
        }
        vacated.sort();
        Ok(vacated)
    }
}
