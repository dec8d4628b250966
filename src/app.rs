//! The running application: validated settings, one pooled HTTP client per provider, the
//! tracker, and the lifecycle flags. A cheap-clone handle shared by every connection.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio_util::task::TaskTracker;

use crate::cli::DisconnectPolicy;
use crate::config::{ProviderConfig, Settings};
use crate::cost::PriceTable;
use crate::metering::Drainer;
use crate::metrics::Metrics;
use crate::proxy::KeyNames;
use crate::tracker::Tracker;
use crate::tracker::TrackerParts;
use crate::upstream::Upstream;

#[derive(Clone)]
pub struct App(Arc<Inner>);

struct Inner {
    settings: Settings,
    provider_configs: Vec<ProviderConfig>,
    upstreams: Vec<Upstream>,
    tracker: Tracker,
    drainer: Option<Drainer>,
    key_names: KeyNames,
    draining: AtomicBool,
    tasks: TaskTracker,
}

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error("provider `{provider}`: base_url: {message}")]
    BaseUrl { provider: String, message: String },
    #[error("no provider configured")]
    NoProvider,
    #[error("prices: {0}")]
    Prices(String),
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
            let upstream =
                Upstream::new(config.clone(), settings.timeouts.connect).map_err(|message| {
                    StartError::BaseUrl {
                        provider: config.name.clone(),
                        message,
                    }
                })?;
            upstreams.push(upstream);
        }
        if upstreams.is_empty() {
            return Err(StartError::NoProvider);
        }
        let tasks = TaskTracker::new();
        let drainer = (settings.on_client_disconnect == DisconnectPolicy::Drain)
            .then(|| Drainer::new(settings.max_drains, settings.drain_max, tasks.clone()));
        Ok(App(Arc::new(Inner {
            provider_configs: settings.providers.clone(),
            tracker: Tracker::start(TrackerParts {
                max_records: settings.max_records,
                max_models: settings.max_models,
                max_subscribers: settings.max_subscribers,
                metrics: Arc::new(Metrics::with_labels(
                    registry,
                    settings.max_models,
                    &settings.buckets,
                    &settings.metrics_labels,
                    settings.max_label_values,
                )?),
                prices: Arc::new(load_prices(&settings)?),
            })
            .map_err(StartError::Recorder)?,
            key_names: settings
                .keys
                .iter()
                .map(|(digest, name)| (*digest, Arc::from(name.as_str())))
                .collect(),
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

    pub fn key_names(&self) -> &KeyNames {
        &self.0.key_names
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

fn load_prices(settings: &Settings) -> Result<PriceTable, StartError> {
    let text = match &settings.prices {
        Some(path) => Some((
            path.display().to_string(),
            std::fs::read_to_string(path)
                .map_err(|e| StartError::Prices(format!("cannot read {}: {e}", path.display())))?,
        )),
        None => None,
    };
    PriceTable::load(
        text.as_ref()
            .map(|(name, text)| (name.as_str(), text.as_str())),
    )
    .map_err(|e| StartError::Prices(e.to_string()))
}
