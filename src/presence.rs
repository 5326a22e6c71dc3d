//! Presence on this node: joins and leaves of its sockets, through the
//! store-side [`PresenceStore`], and the node's lease in the
//! [`NodeRegistry`], which is how members of a node that died without
//! saying goodbye (SIGKILL, a network cut) are removed everywhere.
//!
//! The bound: a node renews its lease every `ttl / 4`; every node looks for
//! lapsed leases on the same tick. A dead node's members are therefore
//! removed (and `member_removed` published, once: the store's removal is
//! atomic per channel) at most `ttl + ttl / 4` after its last renewal, plus
//! the store round trips.
//!
//! A node that was declared dead but is in fact alive (a pause or a
//! partition longer than `ttl`) finds out at its next renewal: the store
//! never revives a lapsed lease. The node stops admitting connections
//! (4100), closes every socket with 4200 (clients join again, here or
//! elsewhere), removes its own members as any reaper would, and registers
//! afresh once forgotten — it never resurrects anyone itself. Left open: a
//! reaper on another node that listed it just before it re-registered may
//! still remove a connection made right after (a window of one reaper
//! pass); that member is then missing from lists, never a ghost, until it
//! reconnects.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_util::sync::CancellationToken;

use crate::channel_events::{ChannelEvent, ChannelEvents, NoChannelEvents};
use crate::domain::now_millis;
use crate::pusher::presence::{PresenceMember, member_added};
use crate::pusher::service::{ConnectionQuota, JoinRefusal, PresenceService};
use crate::pusher::{ChannelName, Halt, Hub, SocketId};
use crate::store::Broadcast;
use crate::store::presence::{JoinOutcome, Joining, NodeRegistry, PresenceStore};

/// Leaves waiting for the store to come back; past this, the oldest are
/// dropped (and logged): their connections stay recorded until this node's
/// lease lapses (never: it is alive) — bounded memory wins over exactness
/// after an outage this long.
const MAX_PENDING_LEAVES: usize = 100_000;

/// Records other than presence that a dead node leaves in the store; run
/// by whichever node reaps it, possibly more than once (so idempotent).
#[async_trait]
pub trait NodeCleanup: Send + Sync + 'static {
    async fn node_dead(&self, node: &str) -> Result<(), crate::store::StoreError>;
}

pub struct Presence {
    store: Arc<dyn PresenceStore>,
    registry: Arc<dyn NodeRegistry>,
    /// This process's id in the registry and in every connection it records.
    node: Arc<str>,
    max_members: usize,
    events: Arc<dyn ChannelEvents>,
    /// What else a dead node leaves behind (the app webhooks' occupancy).
    cleanup: Option<Arc<dyn NodeCleanup>>,
    /// (channel, socket) leaves the store refused, retried every tick.
    pending: Mutex<VecDeque<(ChannelName, SocketId)>>,
}

impl Presence {
    /// Presence for node `node` (unique per process: a restarted node is a
    /// new one).
    pub fn new(
        store: Arc<dyn PresenceStore>,
        registry: Arc<dyn NodeRegistry>,
        node: Arc<str>,
        max_members: usize,
    ) -> Self {
        Self {
            store,
            registry,
            node,
            max_members,
            events: Arc::new(NoChannelEvents),
            cleanup: None,
            pending: Mutex::new(VecDeque::new()),
        }
    }

    /// A node process's own id: its pid and a random part.
    pub fn random_node_id() -> Arc<str> {
        Arc::from(format!(
            "{}-{:08x}",
            std::process::id(),
            rand::random::<u32>()
        ))
    }

    /// Dead nodes' other records are cleaned up by `cleanup` too.
    pub fn with_cleanup(mut self, cleanup: Arc<dyn NodeCleanup>) -> Self {
        self.cleanup = Some(cleanup);
        self
    }

    /// Member webhooks go to `events`.
    pub fn with_events(mut self, events: Arc<dyn ChannelEvents>) -> Self {
        self.events = events;
        self
    }

    pub fn node(&self) -> &str {
        &self.node
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, VecDeque<(ChannelName, SocketId)>> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    async fn removed(&self, removed: Vec<(String, String)>) {
        if removed.is_empty() {
            return;
        }
        let events = removed
            .into_iter()
            .map(|(channel, user_id)| ChannelEvent::MemberRemoved { channel, user_id })
            .collect();
        self.events.emit(events).await;
    }

    /// One leave in the store, and its `member_removed` webhook if it was
    /// the user's last connection.
    async fn try_leave(
        &self,
        channel: &ChannelName,
        socket: &SocketId,
    ) -> Result<(), crate::store::StoreError> {
        let gone = self
            .store
            .leave(channel.as_str(), &self.node, socket.as_str())
            .await?;
        let gone = gone.map(|u| (channel.as_str().to_owned(), u));
        self.removed(gone.into_iter().collect()).await;
        Ok(())
    }

    /// Retries leaves the store refused; stops at the first failure.
    async fn retry_pending(&self) {
        loop {
            let Some((channel, socket)) = self.pending().pop_front() else {
                return;
            };
            if self.try_leave(&channel, &socket).await.is_err() {
                self.pending().push_front((channel, socket));
                return;
            }
        }
    }

    /// Renews this node's lease and removes dead nodes' members, every
    /// `ttl / 4` until shutdown. `hub` is this node's sockets: their count
    /// is reported, and they are closed if the lease was lost.
    /// `quota` learns the other nodes' connections.
    pub async fn run(
        self: Arc<Self>,
        hub: Hub,
        quota: Arc<ConnectionQuota>,
        ttl: Duration,
        shutdown: CancellationToken,
    ) {
        let mut tick = tokio::time::interval(ttl / 4);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut registered = false;
        let mut recovering = false;
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            self.retry_pending().await;
            let now = now_millis();
            let local = hub.socket_count() as u64;
            let renewal = match self.registry.renew_node(&self.node, ttl, now, local).await {
                Ok(renewal) => renewal,
                Err(e) => {
                    tracing::warn!(error = %e, "cannot renew this node's lease");
                    continue;
                }
            };
            if renewal.lapsed {
                // Other nodes may be removing this node's members now: stop
                // taking connections, close every socket (clients join
                // again, here or elsewhere), clean up after ourselves, and
                // register afresh at a later tick.
                if !recovering {
                    tracing::warn!(
                        node = %self.node,
                        "this node's lease lapsed (paused or cut off); closing every socket, removing its presence members, then registering again"
                    );
                    recovering = true;
                    quota.recovering.store(true, Ordering::Relaxed);
                    hub.halt_all(Halt::Shutdown);
                }
                if let Err(e) = self.reap_one(&self.node, now).await {
                    tracing::warn!(error = %e, "cannot clean up after this node's lapsed lease");
                }
                continue;
            }
            if registered && !renewal.was_registered && !recovering {
                tracing::warn!(
                    node = %self.node,
                    "this node was declared dead and its presence members removed; closing every socket so clients join again"
                );
                hub.halt_all(Halt::Shutdown);
            }
            if recovering {
                tracing::info!(node = %self.node, "registered again after a lapsed lease");
                recovering = false;
                quota.recovering.store(false, Ordering::Relaxed);
            }
            registered = true;
            quota.elsewhere.store(
                renewal.cluster_connections.saturating_sub(local),
                Ordering::Relaxed,
            );
            if let Err(e) = self.reap(now).await {
                tracing::warn!(error = %e, "cannot remove dead nodes' presence members");
            }
        }
    }

    /// Removes what `dead` left (its presence members, and through
    /// `cleanup` its channels' occupancy), then forgets it if its lease is
    /// still lapsed. Forgotten only once everything is cleaned up: a failure
    /// is retried at the next tick.
    async fn reap_one(
        &self,
        dead: &str,
        now: crate::domain::UnixMillis,
    ) -> Result<(), crate::store::StoreError> {
        let removed = self.store.remove_node(dead).await?;
        tracing::info!(node = %dead, members_removed = removed.len(), "removed a dead node's presence members");
        self.removed(removed).await;
        if let Some(cleanup) = &self.cleanup {
            cleanup.node_dead(dead).await?;
        }
        self.registry.forget_node(dead, now).await
    }

    /// Removes the members of every node whose lease lapsed before `now`.
    /// Safe on several nodes at once: each connection is removed, and each
    /// `member_removed` published, exactly once.
    pub async fn reap(
        &self,
        now: crate::domain::UnixMillis,
    ) -> Result<(), crate::store::StoreError> {
        for dead in self.registry.expired_nodes(now).await? {
            // This node's own lapsed lease is handled by `run`, after it
            // has stopped taking connections.
            if *dead != *self.node {
                self.reap_one(&dead, now).await?;
            }
        }
        Ok(())
    }
}

#[async_trait]
impl PresenceService for Presence {
    async fn join(
        &self,
        channel: &ChannelName,
        socket: &SocketId,
        member: &PresenceMember,
    ) -> Result<Vec<(String, String)>, JoinRefusal> {
        let added = Broadcast {
            channel: channel.as_str().to_owned(),
            frame: member_added(channel.as_str(), member),
            except: Some(socket.clone()),
            halt: None,
        };
        let joining = Joining {
            channel: channel.as_str(),
            node: &self.node,
            socket: socket.as_str(),
            user_id: &member.user_id,
            user_info: &member.user_info,
        };
        match self.store.join(joining, self.max_members, &added).await {
            Ok(JoinOutcome::Joined { members, added }) => {
                if added {
                    let event = ChannelEvent::MemberAdded {
                        channel: channel.as_str().to_owned(),
                        user_id: member.user_id.clone(),
                    };
                    self.events.emit(vec![event]).await;
                }
                Ok(members)
            }
            Ok(JoinOutcome::Full) => Err(JoinRefusal::Full {
                max_members: self.max_members,
            }),
            Err(e) => {
                tracing::warn!(channel = channel.as_str(), error = %e, "presence join failed");
                Err(JoinRefusal::Unavailable)
            }
        }
    }

    async fn leave(&self, channel: &ChannelName, socket: &SocketId) {
        if let Err(e) = self.try_leave(channel, socket).await {
            tracing::warn!(channel = channel.as_str(), error = %e, "presence leave failed; will retry");
            let mut pending = self.pending();
            if pending.len() >= MAX_PENDING_LEAVES {
                pending.pop_front();
                tracing::error!(
                    "too many presence leaves waiting for the store; dropped the oldest"
                );
            }
            pending.push_back((channel.clone(), socket.clone()));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreError;
    use crate::store::presence::{Member, Renewal};

    /// A store that is down: every call fails.
    struct Down;

    fn down<T>() -> Result<T, StoreError> {
        Err(StoreError::Unavailable("down".into()))
    }

    #[async_trait]
    impl PresenceStore for Down {
        async fn join(
            &self,
            _: Joining<'_>,
            _: usize,
            _: &Broadcast,
        ) -> Result<JoinOutcome, StoreError> {
            down()
        }
        async fn leave(&self, _: &str, _: &str, _: &str) -> Result<Option<String>, StoreError> {
            down()
        }
        async fn members(&self, _: &str) -> Result<Vec<Member>, StoreError> {
            down()
        }
        async fn user_counts(&self, _: &[String]) -> Result<Vec<usize>, StoreError> {
            down()
        }
        async fn remove_node(&self, _: &str) -> Result<Vec<(String, String)>, StoreError> {
            down()
        }
    }

    #[async_trait]
    impl NodeRegistry for Down {
        async fn renew_node(
            &self,
            _: &str,
            _: Duration,
            _: crate::domain::UnixMillis,
            _: u64,
        ) -> Result<Renewal, StoreError> {
            down()
        }
        async fn expired_nodes(
            &self,
            _: crate::domain::UnixMillis,
        ) -> Result<Vec<String>, StoreError> {
            down()
        }
        async fn forget_node(
            &self,
            _: &str,
            _: crate::domain::UnixMillis,
        ) -> Result<(), StoreError> {
            down()
        }
    }

    #[tokio::test]
    async fn leaves_the_store_refuses_wait_in_a_bounded_queue_oldest_dropped_first() {
        let presence = Presence::new(Arc::new(Down), Arc::new(Down), Arc::from("n"), 100);
        let channel = ChannelName::parse("presence-x").unwrap();
        let extra = 5;
        for i in 0..MAX_PENDING_LEAVES + extra {
            let socket = SocketId::parse(&format!("{i}.1")).unwrap();
            presence.leave(&channel, &socket).await;
        }
        {
            let pending = presence.pending();
            assert_eq!(pending.len(), MAX_PENDING_LEAVES);
            assert_eq!(pending.front().unwrap().1.as_str(), format!("{extra}.1"));
        }
        // A retry while the store is still down keeps them all, in order.
        presence.retry_pending().await;
        assert_eq!(presence.pending().len(), MAX_PENDING_LEAVES);
    }
}
