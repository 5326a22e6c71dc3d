//! Presence on one node, in memory (the embedded store's companion). The
//! registry is trivial: the only node is this one, and it is alive.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use tokio_tungstenite::tungstenite::Utf8Bytes;

use super::{
    JoinOutcome, Joining, Member, NodeRegistry, PresenceStore, Renewal, member_removed_frame,
};
use crate::domain::UnixMillis;
use crate::store::{Broadcast, LocalDelivery, StoreError};

#[derive(Default)]
struct Channel {
    /// Connection (`"<node> <socket>"`) → user id.
    connections: HashMap<String, String>,
    /// User id → (user_info JSON, connections).
    users: BTreeMap<String, (String, usize)>,
}

pub struct MemoryPresence {
    /// One lock for all channels: held only for a map update and the
    /// (non-blocking) delivery that must happen in the same step.
    channels: Mutex<HashMap<String, Channel>>,
    delivery: Arc<dyn LocalDelivery>,
}

impl MemoryPresence {
    pub fn new(delivery: Arc<dyn LocalDelivery>) -> Self {
        Self {
            channels: Mutex::new(HashMap::new()),
            delivery,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Channel>> {
        self.channels.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Removes one connection under the lock; the user if it was their last.
    fn remove(
        &self,
        channels: &mut HashMap<String, Channel>,
        channel: &str,
        conn: &str,
    ) -> Option<String> {
        let entry = channels.get_mut(channel)?;
        let user = entry.connections.remove(conn)?;
        let last = match entry.users.get_mut(&user) {
            Some((_, n)) if *n > 1 => {
                *n -= 1;
                false
            }
            _ => {
                entry.users.remove(&user);
                true
            }
        };
        if entry.connections.is_empty() {
            channels.remove(channel);
        }
        if !last {
            return None;
        }
        let frame = Utf8Bytes::from(member_removed_frame(channel, &user));
        self.delivery.deliver(channel, frame, None);
        Some(user)
    }
}

fn connection(node: &str, socket: &str) -> String {
    format!("{node} {socket}")
}

#[async_trait]
impl PresenceStore for MemoryPresence {
    async fn join(
        &self,
        joining: Joining<'_>,
        max_members: usize,
        added: &Broadcast,
    ) -> Result<JoinOutcome, StoreError> {
        let mut channels = self.lock();
        let entry = channels.entry(joining.channel.to_owned()).or_default();
        let conn = connection(joining.node, joining.socket);
        let mut new_member = false;
        if !entry.connections.contains_key(&conn) {
            let known = entry.users.contains_key(joining.user_id);
            if !known && entry.users.len() >= max_members {
                if entry.connections.is_empty() {
                    channels.remove(joining.channel);
                }
                return Ok(JoinOutcome::Full);
            }
            entry.connections.insert(conn, joining.user_id.to_owned());
            entry
                .users
                .entry(joining.user_id.to_owned())
                .or_insert_with(|| (joining.user_info.to_owned(), 0))
                .1 += 1;
            if !known {
                new_member = true;
                self.delivery
                    .deliver(&added.channel, added.frame.clone(), added.except.as_ref());
            }
        }
        let members = entry
            .users
            .iter()
            .map(|(id, (info, _))| (id.clone(), info.clone()))
            .collect();
        Ok(JoinOutcome::Joined {
            members,
            added: new_member,
        })
    }

    async fn leave(
        &self,
        channel: &str,
        node: &str,
        socket: &str,
    ) -> Result<Option<String>, StoreError> {
        let mut channels = self.lock();
        Ok(self.remove(&mut channels, channel, &connection(node, socket)))
    }

    async fn members(&self, channel: &str) -> Result<Vec<Member>, StoreError> {
        Ok(self
            .lock()
            .get(channel)
            .map(|c| {
                c.users
                    .iter()
                    .map(|(id, (info, _))| (id.clone(), info.clone()))
                    .collect()
            })
            .unwrap_or_default())
    }

    async fn user_counts(&self, channels: &[String]) -> Result<Vec<usize>, StoreError> {
        let all = self.lock();
        Ok(channels
            .iter()
            .map(|c| all.get(c).map_or(0, |c| c.users.len()))
            .collect())
    }

    async fn remove_node(&self, node: &str) -> Result<Vec<(String, String)>, StoreError> {
        let prefix = format!("{node} ");
        let mut channels = self.lock();
        let doomed: Vec<(String, String)> = channels
            .iter()
            .flat_map(|(name, c)| {
                c.connections
                    .keys()
                    .filter(|k| k.starts_with(&prefix))
                    .map(move |k| (name.clone(), k.clone()))
            })
            .collect();
        let mut removed = Vec::new();
        for (channel, conn) in doomed {
            if let Some(user) = self.remove(&mut channels, &channel, &conn) {
                removed.push((channel, user));
            }
        }
        Ok(removed)
    }
}

/// One node, always alive: it is the whole cluster.
#[async_trait]
impl NodeRegistry for MemoryPresence {
    async fn renew_node(
        &self,
        _node: &str,
        _ttl: Duration,
        _now: UnixMillis,
        connections: u64,
    ) -> Result<Renewal, StoreError> {
        Ok(Renewal {
            was_registered: true,
            lapsed: false,
            cluster_connections: connections,
        })
    }

    async fn expired_nodes(&self, _now: UnixMillis) -> Result<Vec<String>, StoreError> {
        Ok(Vec::new())
    }

    async fn forget_node(&self, _node: &str, _now: UnixMillis) -> Result<(), StoreError> {
        Ok(())
    }
}
