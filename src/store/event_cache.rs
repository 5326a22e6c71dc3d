//! Cache channels' last events, kept store-side so that a subscriber on any
//! node gets the event published through any other (`cache_channels.rs`
//! decides what is kept and replays it).
//!
//! A separate trait from [`Store`](super::Store), which holds rooms: this
//! is a different concern with a different lifetime (minutes, not the
//! room's retention), and a store that has one need not have the other.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use dashmap::DashMap;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::StoreError;
use super::redis::RedisStore;

/// Where cache channels' last events live.
#[async_trait]
pub trait EventCache: Send + Sync + 'static {
    /// Keeps `frame` (an event frame as subscribers receive it) as
    /// `channel`'s last event for `ttl`, replacing any earlier one.
    async fn put_last_event(
        &self,
        channel: &str,
        frame: &Utf8Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError>;

    /// `channel`'s last event, unless none was kept or it expired.
    async fn last_event(&self, channel: &str) -> Result<Option<Utf8Bytes>, StoreError>;
}

/// One node's last events, for the in-memory store.
#[derive(Debug, Default)]
pub struct MemoryEventCache {
    /// channel → (frame, when it expires).
    entries: DashMap<String, (Utf8Bytes, Instant)>,
    /// Writes since the last sweep of expired entries.
    writes: AtomicUsize,
}

/// Expired entries are swept every this many writes, so the map holds at
/// most the channels written within one TTL plus this many.
const SWEEP_EVERY: usize = 1024;

#[async_trait]
impl EventCache for MemoryEventCache {
    async fn put_last_event(
        &self,
        channel: &str,
        frame: &Utf8Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let now = Instant::now();
        self.entries
            .insert(channel.to_owned(), (frame.clone(), now + ttl));
        if self.writes.fetch_add(1, Ordering::Relaxed) + 1 >= SWEEP_EVERY {
            self.writes.store(0, Ordering::Relaxed);
            self.entries.retain(|_, (_, expires)| *expires > now);
        }
        Ok(())
    }

    async fn last_event(&self, channel: &str) -> Result<Option<Utf8Bytes>, StoreError> {
        let now = Instant::now();
        // An expired entry is dropped when read (or by the next sweep).
        let found = self.entries.get(channel).map(|e| (e.0.clone(), e.1 > now));
        match found {
            Some((frame, true)) => Ok(Some(frame)),
            Some((_, false)) => {
                self.entries
                    .remove_if(channel, |_, (_, expires)| *expires <= now);
                Ok(None)
            }
            None => Ok(None),
        }
    }
}

/// `rollcall:cache:{<channel>}`: the hash tag keeps each channel's key in
/// one Redis Cluster slot, like a room's keys.
fn last_event_key(channel: &str) -> String {
    format!("rollcall:cache:{{{channel}}}")
}

/// Redis: one string per channel, `SET … PX`, so Redis expires it.
#[async_trait]
impl EventCache for RedisStore {
    async fn put_last_event(
        &self,
        channel: &str,
        frame: &Utf8Bytes,
        ttl: Duration,
    ) -> Result<(), StoreError> {
        let key = last_event_key(channel);
        let frame = frame.as_str().to_owned();
        let ttl_ms = ttl.as_millis().max(1) as u64;
        self.run(|mut c| async move {
            redis::cmd("SET")
                .arg(&key)
                .arg(frame)
                .arg("PX")
                .arg(ttl_ms)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    async fn last_event(&self, channel: &str) -> Result<Option<Utf8Bytes>, StoreError> {
        let key = last_event_key(channel);
        let frame: Option<String> = self
            .run(|mut c| async move { redis::cmd("GET").arg(&key).query_async(&mut c).await })
            .await?;
        Ok(frame.map(Utf8Bytes::from))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn memory_keeps_the_last_event_until_it_expires() {
        let cache = MemoryEventCache::default();
        let long = Duration::from_secs(60);
        assert_eq!(cache.last_event("cache-a").await.unwrap(), None);
        cache
            .put_last_event("cache-a", &"1".into(), long)
            .await
            .unwrap();
        cache
            .put_last_event("cache-a", &"2".into(), long)
            .await
            .unwrap();
        assert_eq!(
            cache.last_event("cache-a").await.unwrap().as_deref(),
            Some("2")
        );
        cache
            .put_last_event("cache-b", &"x".into(), Duration::from_millis(1))
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        assert_eq!(cache.last_event("cache-b").await.unwrap(), None);
        assert!(!cache.entries.contains_key("cache-b"), "dropped when read");
    }

    #[tokio::test]
    async fn memory_sweeps_expired_entries_as_it_is_written() {
        let cache = MemoryEventCache::default();
        for i in 0..SWEEP_EVERY * 3 {
            let ttl = Duration::from_nanos(1);
            cache
                .put_last_event(&format!("cache-{i}"), &"x".into(), ttl)
                .await
                .unwrap();
        }
        assert!(
            cache.entries.len() <= SWEEP_EVERY,
            "{}",
            cache.entries.len()
        );
    }
}
