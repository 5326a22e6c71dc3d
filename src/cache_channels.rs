//! Cache channels (`cache-`, `private-cache-`, `private-encrypted-cache-`,
//! `presence-cache-`): the last event published to one (HTTP API `events`
//! and `batch_events`, client events) is kept for [`CACHE_TTL`] in the
//! store-side [`EventCache`], so it works across nodes, and replayed to
//! each new subscriber right after `subscription_succeeded`; a subscriber
//! with nothing to replay gets `pusher:cache_miss` (and the app a
//! `cache_miss` webhook).
//!
//! Both ends wrap what is already there rather than changing the socket:
//! [`CacheReplay`] wraps the subscribe hook (so presence-cache channels
//! replay through the same path once presence subscribes succeed), and
//! [`CachingRelay`] wraps the client-event relay.
//!
//! Ordering: an event is cached *before* it is published. A subscriber
//! registered in the hub before the publication reaches its node gets it
//! live (and possibly once more as the replay); one registered after reads
//! the cache after the write. So a subscriber may see the last event twice,
//! never miss it — the cheap side of the trade for "the current state".

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use crate::channel_events::{ChannelEvent, ChannelEvents};
use crate::pusher::service::ClientEventRelay;
use crate::pusher::{ChannelName, SocketId, SubscribeHook, frame};
use crate::store::{Broadcast, EventCache, StoreError};

/// How long a cache channel's last event is kept (Pusher's 30 minutes).
pub const CACHE_TTL: Duration = Duration::from_secs(30 * 60);

/// Keeps the last event of every cache channel among `broadcasts`, in
/// order (a batch's later event to a channel replaces its earlier one).
/// Call before publishing them (see the module's ordering note).
pub async fn remember(cache: &dyn EventCache, broadcasts: &[Broadcast]) -> Result<(), StoreError> {
    for b in broadcasts {
        if b.halt.is_none() && is_cache(&b.channel) {
            cache
                .put_last_event(&b.channel, &b.frame, CACHE_TTL)
                .await?;
        }
    }
    Ok(())
}

fn is_cache(channel: &str) -> bool {
    ChannelName::parse(channel).is_ok_and(|c| c.is_cache())
}

/// The subscribe hook with cache channels' replay after the inner hook's
/// frames (rollcall's attendance snapshots).
pub struct CacheReplay {
    inner: Arc<dyn SubscribeHook>,
    cache: Arc<dyn EventCache>,
    events: Arc<dyn ChannelEvents>,
}

impl CacheReplay {
    /// `events` receives a [`ChannelEvent::CacheMiss`] per miss (the app
    /// webhooks' sink).
    pub fn new(
        inner: Arc<dyn SubscribeHook>,
        cache: Arc<dyn EventCache>,
        events: Arc<dyn ChannelEvents>,
    ) -> Self {
        Self {
            inner,
            cache,
            events,
        }
    }
}

#[async_trait]
impl SubscribeHook for CacheReplay {
    async fn after_subscribe(&self, channel: &ChannelName) -> Vec<Utf8Bytes> {
        let mut frames = self.inner.after_subscribe(channel).await;
        if !channel.is_cache() {
            return frames;
        }
        match self.cache.last_event(channel.as_str()).await {
            Ok(Some(last)) => frames.push(last),
            Ok(None) => {
                frames.push(frame::cache_miss(channel.as_str()));
                // The webhook's bookkeeping must not hold the subscriber
                // up: the miss is answered now, the event stored aside.
                let events = Arc::clone(&self.events);
                let miss = ChannelEvent::CacheMiss {
                    channel: channel.as_str().to_owned(),
                };
                tokio::spawn(async move { events.emit(vec![miss]).await });
            }
            Err(e) => {
                // Unknown, so no webhook; the subscriber is told "miss" so
                // the app falls back to fetching the state another way
                // rather than waiting for a replay that will not come.
                tracing::warn!(channel = channel.as_str(), error = %e, "cache channel: store unavailable, answering a miss");
                frames.push(frame::cache_miss(channel.as_str()));
            }
        }
        frames
    }
}

/// The client-event relay that also keeps cache channels' last event.
pub struct CachingRelay {
    inner: Arc<dyn ClientEventRelay>,
    cache: Arc<dyn EventCache>,
}

impl CachingRelay {
    pub fn new(inner: Arc<dyn ClientEventRelay>, cache: Arc<dyn EventCache>) -> Self {
        Self { inner, cache }
    }
}

#[async_trait]
impl ClientEventRelay for CachingRelay {
    async fn relay(&self, channel: &ChannelName, frame: Utf8Bytes, sender: &SocketId) -> bool {
        if channel.is_cache()
            && let Err(e) = self
                .cache
                .put_last_event(channel.as_str(), &frame, CACHE_TTL)
                .await
        {
            tracing::warn!(channel = channel.as_str(), error = %e, "client event not relayed: cache unavailable");
            return false;
        }
        self.inner.relay(channel, frame, sender).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::pusher::NoHook;
    use crate::store::MemoryEventCache;

    #[derive(Default)]
    struct Recorded(Mutex<Vec<ChannelEvent>>);

    #[async_trait]
    impl ChannelEvents for Recorded {
        async fn emit(&self, events: Vec<ChannelEvent>) {
            self.0.lock().unwrap().extend(events);
        }
    }

    fn chan(name: &str) -> ChannelName {
        ChannelName::parse(name).unwrap()
    }

    #[tokio::test]
    async fn replays_the_last_event_or_answers_a_miss_only_on_cache_channels() {
        let cache = Arc::new(MemoryEventCache::default());
        let events = Arc::new(Recorded::default());
        let hook = CacheReplay::new(Arc::new(NoHook), cache.clone(), events.clone());

        assert!(hook.after_subscribe(&chan("session.1")).await.is_empty());
        let miss = hook.after_subscribe(&chan("private-cache-a")).await;
        assert_eq!(
            miss,
            [Utf8Bytes::from(
                r#"{"event":"pusher:cache_miss","channel":"private-cache-a"}"#
            )]
        );

        let frames = [
            Broadcast::new("private-cache-a", "1".into()),
            Broadcast::new("session.1", "x".into()),
            Broadcast::new("private-cache-a", "2".into()),
            Broadcast::halt("#server-to-user-1", crate::pusher::Halt::Terminated),
        ];
        remember(&*cache, &frames).await.unwrap();
        let hit = hook.after_subscribe(&chan("private-cache-a")).await;
        assert_eq!(hit, [Utf8Bytes::from("2")], "the last one wins");
        assert_eq!(cache.last_event("session.1").await.unwrap(), None);

        tokio::task::yield_now().await;
        for _ in 0..100 {
            if !events.0.lock().unwrap().is_empty() {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            *events.0.lock().unwrap(),
            [ChannelEvent::CacheMiss {
                channel: "private-cache-a".into()
            }]
        );
    }
}
