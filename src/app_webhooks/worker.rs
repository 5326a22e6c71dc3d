//! The delivery worker, one per node: claims due events from the shared
//! queue, posts them in Pusher's format, acknowledges what the receiver
//! took (2xx) and schedules the rest for a retry with backoff, until they
//! are delivered or expire.
//!
//! **Guarantees.** An event is claimed by one worker at a time (the claim's
//! visibility timeout outlasts a request's timeout), so in the normal case
//! it is delivered once. It can be delivered twice only if the worker dies
//! (or loses the store) after the receiver took it and before the
//! acknowledgement landed: then it is claimed again after the visibility
//! timeout — at least once, never lost while the store keeps it. Order is
//! the queue's (due time, then queue order) within a request and between
//! requests that succeed; a batch being retried can arrive after later
//! events, so each body's `time_ms` is when its newest event happened
//! (unchanged by retries), for receivers that need to order.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::backoff::Backoff;
use super::body::{self, Batch};
use super::queue::{Claimed, WebhookQueue};
use crate::domain::now_millis;
use crate::metrics::Metrics;

/// How the worker claims, batches and gives up.
#[derive(Debug, Clone)]
pub struct DeliveryOptions {
    /// Most events claimed (and so posted) at once.
    pub batch_max: usize,
    /// Largest request body; a claim is split into several requests.
    pub max_body_bytes: usize,
    /// A claimed event's claim lasts this long: longer than every request
    /// of one claim takes, so a live worker never loses its claim.
    pub visibility: Duration,
    /// An event not delivered this long after it happened is dropped.
    pub expiry: Duration,
    pub backoff: Backoff,
    /// The longest sleep with nothing due: other nodes' new events are
    /// seen within this (this node's own wake the worker at once).
    pub idle_poll: Duration,
}

pub struct Worker {
    pub url: reqwest::Url,
    pub app_key: String,
    pub app_secret: String,
    /// From `outbound::client`, with the request timeout.
    pub client: reqwest::Client,
    pub queue: Arc<dyn WebhookQueue>,
    pub metrics: Arc<Metrics>,
    pub options: DeliveryOptions,
    /// Notified when this node queues events.
    pub wake: Arc<Notify>,
}

/// Pause after the store failed (it answers within its command timeout).
const STORE_RETRY: Duration = Duration::from_secs(1);

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Worker {
    pub async fn run(self, shutdown: CancellationToken) {
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let now = now_millis();
            let until = now + ms(self.options.visibility);
            let pause = match self.queue.claim(self.options.batch_max, now, until).await {
                Err(e) => {
                    tracing::warn!(error = %e, "app webhooks: cannot claim pending events");
                    STORE_RETRY
                }
                Ok(claim) if claim.events.is_empty() => {
                    let idle = self.options.idle_poll;
                    claim.next_due.map_or(idle, |due| {
                        Duration::from_millis((due - now).max(0) as u64).min(idle)
                    })
                }
                Ok(claim) => {
                    self.deliver(claim.events).await;
                    continue;
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(pause) => {}
            }
        }
    }

    async fn deliver(&self, events: Vec<Claimed>) {
        let now = now_millis();
        let expiry = ms(self.options.expiry);
        let (expired, live): (Vec<Claimed>, Vec<Claimed>) =
            events.into_iter().partition(|e| now - e.queued_at > expiry);
        if !expired.is_empty() {
            tracing::warn!(
                events = expired.len(),
                "app webhooks: dropping events not delivered within {:?}",
                self.options.expiry
            );
            let ids: Vec<String> = expired.iter().map(|e| e.id.clone()).collect();
            self.ack(&ids).await;
            Metrics::add(&self.metrics.app_webhooks_expired, ids.len() as u64);
        }
        let time_ms = live.iter().map(|e| e.queued_at).max().unwrap_or(now);
        let tries = live.iter().map(|e| e.tries).max().unwrap_or(0);
        let batches = body::batches(&live, time_ms, self.options.max_body_bytes);
        let mut rest = batches.into_iter();
        while let Some(batch) = rest.next() {
            // Never post past half the claim's visibility timeout: a claim
            // split into many slow requests hands its remainder back (due
            // now) rather than let another node claim it while we post.
            if now_millis() - now > ms(self.options.visibility) / 2 {
                let mut ids = batch.ids;
                ids.extend(rest.flat_map(|b| b.ids));
                if let Err(e) = self.queue.retry(&ids, now_millis()).await {
                    tracing::warn!(error = %e, "app webhooks: events not handed back; the claim's timeout will");
                }
                return;
            }
            match self.post(&batch).await {
                Ok(()) => {
                    self.ack(&batch.ids).await;
                    Metrics::add(&self.metrics.app_webhooks_delivered, batch.ids.len() as u64);
                }
                Err(e) => {
                    // The receiver is failing: the rest of this claim waits
                    // with this batch rather than failing one by one.
                    let mut ids = batch.ids;
                    ids.extend(rest.flat_map(|b| b.ids));
                    let delay = self.options.backoff.delay(tries + 1, &mut rand::rng());
                    tracing::warn!(error = format!("{e:#}"), events = ids.len(), retry_in = ?delay, "app webhook not delivered");
                    Metrics::add(&self.metrics.app_webhooks_retried, ids.len() as u64);
                    if let Err(e) = self.queue.retry(&ids, now_millis() + ms(delay)).await {
                        // Still claimed: due again when the claim runs out.
                        tracing::warn!(error = %e, "app webhooks: retry not scheduled; the claim's timeout will");
                    }
                    return;
                }
            }
        }
    }

    async fn ack(&self, ids: &[String]) {
        if let Err(e) = self.queue.ack(ids).await {
            // Delivered but still claimed: another delivery after the
            // visibility timeout (at least once).
            tracing::warn!(error = %e, events = ids.len(), "app webhooks: delivered events not acknowledged");
        }
    }

    async fn post(&self, batch: &Batch) -> anyhow::Result<()> {
        let response = self
            .client
            .post(self.url.clone())
            .header("Content-Type", "application/json")
            .header(body::KEY_HEADER, &self.app_key)
            .header(
                body::SIGNATURE_HEADER,
                body::sign(&self.app_secret, &batch.body),
            )
            .body(batch.body.clone())
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "receiver answered {}",
            response.status()
        );
        Ok(())
    }
}
