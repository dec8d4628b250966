//! The running application: validated settings, one pooled HTTP client per provider, the
//! tracker, and the lifecycle flags. A cheap-clone handle shared by every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::task::TaskTracker;

use crate::cli::DisconnectPolicy;
use crate::config::{ProviderConfig, Settings};
use crate::metering::Drainer;
use crate::metrics::Metrics;
use crate::tracker::Tracker;

/// A provider and its connection pool.
pub struct Upstream {
    pub config: ProviderConfig,
    pub client: reqwest::Client,
}

#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    settings: Settings,
    provider_configs: Vec<ProviderConfig>,
    upstreams: Vec<Upstream>,
    tracker: Tracker,
    drainer: Option<Drainer>,
    draining: AtomicBool,
    tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("cannot build the HTTP client for provider `{provider}`: {source}")]
    Client {
        provider: String,
        source: reqwest::Error,
    },
    #[error("no provider configured")]
    NoProvider,
    #[error("cannot register metrics: {0}")]
    Metrics(#[from] prometheus::Error),
    #[error("cannot start the recorder thread: {0}")]
    Recorder(std::io::Error),
}

impl App {
    pub fn new(settings: Settings) -> Result<App, StartError> {
        App::with_registry(settings, prometheus::Registry::new())
    }

    /// Builds the app, registering its metrics in `registry` (tests may inject their own).
    pub fn with_registry(
        settings: Settings,
        registry: prometheus::Registry,
    ) -> Result<App, StartError> {
        let mut upstreams = Vec::with_capacity(settings.providers.len());
        for config in &settings.providers {
            let client = reqwest::Client::builder()
                .connect_timeout(settings.timeouts.connect)
                // Redirects are answered to the client, never followed to another host.
                .redirect(reqwest::redirect::Policy::none())
                .pool_idle_timeout(std::time::Duration::from_secs(90))
                .tcp_nodelay(true)
                .build()
                .map_err(|source| StartError::Client {
                    provider: config.name.clone(),
                    source,
                })?;
            upstreams.push(Upstream {
                config: config.clone(),
                client,
            });
        }
        if upstreams.is_empty() {
            return Err(StartError::NoProvider);
        }
        let tasks = TaskTracker::new();
        let drainer = (settings.on_client_disconnect == DisconnectPolicy::Drain)
            .then(|| Drainer::new(settings.max_drains, settings.drain_max, tasks.clone()));
        Ok(App(Arc::new(Inner {
            provider_configs: settings.providers.clone(),
            tracker: Tracker::start(
                settings.max_records,
                Arc::new(Metrics::new(
                    registry,
                    settings.max_models,
                    &settings.buckets,
                )?),
            )
            .map_err(StartError::Recorder)?,
            settings,
            upstreams,
            drainer,
            draining: AtomicBool::new(false),
            tasks,
        })))
    }

    pub fn settings(&self) -> &Settings {
        &self.0.settings
    }

    pub fn provider_configs(&self) -> &[ProviderConfig] {
        &self.0.provider_configs
    }

    /// The provider at `index`, as `route::choose` returned it (always in range).
    pub fn upstream(&self, index: usize) -> &Upstream {
        &self.0.upstreams[index.min(self.0.upstreams.len().saturating_sub(1))]
    }

    pub fn tracker(&self) -> &Tracker {
        &self.0.tracker
    }

    pub fn drainer(&self) -> Option<&Drainer> {
        self.0.drainer.as_ref()
    }

    /// Tasks that must finish before the process exits.
    pub fn tasks(&self) -> &TaskTracker {
        &self.0.tasks
    }

    pub fn is_draining(&self) -> bool {
        self.0.draining.load(Ordering::Relaxed)
    }

    pub fn start_draining(&self) {
        self.0.draining.store(true, Ordering::Relaxed);
    }
}
