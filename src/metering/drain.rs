//! `--on-client-disconnect drain`: when a client leaves mid-stream, keep reading the upstream in
//! the background so the provider's own final usage is recorded. Bounded in time and in how
//! many run at once; past either bound the call is cancelled like under `cancel`.

use std::sync::Arc;
use std::time::Duration;

use http_body_util::BodyExt;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::task::TaskTracker;

use super::body::{UpstreamBody, error_chain};
use super::meter::Meter;
use crate::tracker::{BodyEnd, InFlight};

#[derive(Clone)]
pub struct Drainer {
    permits: Arc<Semaphore>,
    tasks: TaskTracker,
    max: Duration,
}

impl Drainer {
    pub fn new(max_concurrent: usize, max: Duration, tasks: TaskTracker) -> Drainer {
        Drainer {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            tasks,
            max,
        }
    }

    pub fn try_permit(&self) -> Option<OwnedSemaphorePermit> {
        self.permits.clone().try_acquire_owned().ok()
    }

    pub fn spawn(
        self,
        permit: OwnedSemaphorePermit,
        mut body: UpstreamBody,
        mut meter: Option<Meter>,
        in_flight: InFlight,
        mut bytes: u64,
    ) {
        let max = self.max;
        self.tasks.spawn(async move {
            let _permit = permit;
            let deadline = Instant::now() + max;
            let ending = loop {
                match tokio::time::timeout_at(deadline, body.frame()).await {
                    Err(_) => break BodyEnd::ClientGone,
                    Ok(None) => break BodyEnd::ClientGoneDrained,
                    Ok(Some(Err(err))) => break BodyEnd::ClientGoneDrainFailed(error_chain(&err)),
                    Ok(Some(Ok(frame))) => {
                        if let Ok(data) = frame.into_data() {
                            bytes += data.len() as u64;
                            if let Some(meter) = meter.as_mut() {
                                meter.feed(&data, Instant::now());
                            }
                        }
                    }
                }
            };
            let now = Instant::now();
            in_flight.finish(ending, meter.map(|m| m.finish(now)), bytes, now);
        });
    }
}
