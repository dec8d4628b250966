//! The live feed behind `/api/active/stream`: started, progress and finished events, each
//! serialised once and shared by every subscriber. A broadcast ring bounds memory: a subscriber
//! that falls behind skips ahead (and is told how much it missed), never slowing the proxy.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use bytes::Bytes;
use tokio::sync::{Notify, broadcast};

use crate::record::Record;

/// Events kept for slow subscribers before they must skip ahead.
const RING: usize = 1024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FeedEvent {
    Started,
    Progress,
    Finished,
}

impl FeedEvent {
    pub fn name(self) -> &'static str {
        match self {
            FeedEvent::Started => "started",
            FeedEvent::Progress => "progress",
            FeedEvent::Finished => "finished",
        }
    }
}

/// One event as it goes on the wire: `event: <name>\ndata: <json>\n\n`.
pub type FeedMessage = Arc<Bytes>;

pub struct Feed {
    sender: broadcast::Sender<FeedMessage>,
    subscribers: Arc<AtomicUsize>,
    max_subscribers: usize,
    /// Told of each new subscription, so that progress is looked for only while watched.
    subscribed: Notify,
}

/// A subscription; dropping it frees its slot.
pub struct Subscription {
    pub receiver: broadcast::Receiver<FeedMessage>,
    _slot: SubscriberSlot,
}

struct SubscriberSlot(Arc<AtomicUsize>);

impl Drop for SubscriberSlot {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Feed {
    pub fn new(max_subscribers: usize) -> Feed {
        let (sender, _) = broadcast::channel(RING);
        Feed {
            sender,
            subscribers: Arc::new(AtomicUsize::new(0)),
            max_subscribers,
            subscribed: Notify::new(),
        }
    }

    /// Whether anyone is listening: nothing is serialised for an empty room.
    pub fn watched(&self) -> bool {
        self.subscribers.load(Ordering::Relaxed) > 0
    }

    /// A new subscription, or `None` when the cap is reached.
    pub fn subscribe(&self) -> Option<Subscription> {
        let slot = self.subscribers.fetch_add(1, Ordering::AcqRel);
        let guard = SubscriberSlot(Arc::clone(&self.subscribers));
        if slot >= self.max_subscribers {
            return None;
        }
        let receiver = self.sender.subscribe();
        self.subscribed.notify_one();
        Some(Subscription {
            receiver,
            _slot: guard,
        })
    }

    /// Resolves once someone has subscribed since the last call (at once if someone did).
    async fn subscribed(&self) {
        self.subscribed.notified().await;
    }

    pub fn publish(&self, event: FeedEvent, record: &Record) {
        if let Ok(json) = serde_json::to_vec(record) {
            let _ = self.sender.send(Arc::new(frame(event.name(), &json)));
        }
    }
}

/// An SSE frame: `event: <name>\ndata: <json>\n\n` (JSON has no raw newlines).
pub fn frame(event: &str, json: &[u8]) -> Bytes {
    let mut out = Vec::with_capacity(json.len() + event.len() + 16);
    out.extend_from_slice(b"event: ");
    out.extend_from_slice(event.as_bytes());
    out.extend_from_slice(b"\ndata: ");
    out.extend_from_slice(json);
    out.extend_from_slice(b"\n\n");
    Bytes::from(out)
}

/// Publishes a `progress` event for each streaming request that moved, at most every 500 ms
/// per request, while anyone is watching. Runs until `stop`.
pub async fn publish_progress(tracker: super::Tracker, stop: tokio_util::sync::CancellationToken) {
    let mut last_seen: std::collections::HashMap<u64, u64> = std::collections::HashMap::new();
    let mut tick = tokio::time::interval(std::time::Duration::from_millis(500));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        if !tracker.feed().watched() {
            last_seen.clear();
            // Nobody watching: wait for a subscriber instead of ticking, so that an idle proxy,
            // or one serving a slow stream now and then, is not woken twice a second.
            tokio::select! {
                () = stop.cancelled() => return,
                () = tracker.feed().subscribed() => {}
            }
            tick.reset();
            continue;
        }
        let entries = tracker.active_entries();
        let mut live = std::collections::HashMap::with_capacity(entries.len());
        for entry in entries.iter().filter(|e| e.stream()) {
            let chunks = entry.chunks();
            if last_seen.get(&entry.seq()) != Some(&chunks) && chunks > 0 {
                tracker
                    .feed()
                    .publish(FeedEvent::Progress, &entry.snapshot());
            }
            live.insert(entry.seq(), chunks);
        }
        last_seen = live;
    }
}
