//! The in-flight gauge of a request's provider, kept per thread. Taking it by label values
//! hashes them and takes the gauge family's read lock, one lock that every request on every
//! core would share; the few providers a thread serves are found here without it.

use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus::{IntGauge, IntGaugeVec};

/// Gauges kept per thread. A proxy has a handful of providers.
const SLOTS: usize = 8;

/// A number for each family, never reused: the cache is per thread, not per family, and the
/// address of a dropped family could come back (tests make many).
static NEXT_FAMILY: AtomicU64 = AtomicU64::new(0);

/// `tokentap_active_requests`, by provider.
pub struct ActiveGauges {
    family: IntGaugeVec,
    id: u64,
}

#[derive(Default)]
struct Recent {
    slots: [Option<(u64, Box<str>, IntGauge)>; SLOTS],
    next: usize,
}

thread_local! {
    static RECENT: RefCell<Recent> = RefCell::default();
}

impl ActiveGauges {
    pub fn new(family: IntGaugeVec) -> ActiveGauges {
        ActiveGauges {
            family,
            id: NEXT_FAMILY.fetch_add(1, Ordering::Relaxed),
        }
    }

    /// The gauge of `provider`'s requests in flight.
    pub fn of(&self, provider: &str) -> IntGauge {
        RECENT
            .try_with(|recent| recent.borrow_mut().gauge(self, provider))
            // The thread is ending: its cache is gone.
            .unwrap_or_else(|_| self.family.with_label_values(&[provider]))
    }
}

impl Recent {
    fn gauge(&mut self, gauges: &ActiveGauges, provider: &str) -> IntGauge {
        let kept = self
            .slots
            .iter()
            .flatten()
            .find(|(id, name, _)| *id == gauges.id && **name == *provider);
        if let Some((_, _, gauge)) = kept {
            return gauge.clone();
        }
        let gauge = gauges.family.with_label_values(&[provider]);
        self.slots[self.next] = Some((gauges.id, provider.into(), gauge.clone()));
        self.next = (self.next + 1) % SLOTS;
        gauge
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus::Opts;

    fn family() -> IntGaugeVec {
        IntGaugeVec::new(Opts::new("active", "Requests in flight."), &["provider"]).unwrap()
    }

    #[test]
    fn each_provider_and_each_family_has_its_own_gauge() {
        let (one, two) = (ActiveGauges::new(family()), ActiveGauges::new(family()));
        for _ in 0..3 {
            one.of("openai").inc();
        }
        one.of("groq").inc();
        two.of("openai").inc();
        assert_eq!(one.family.with_label_values(&["openai"]).get(), 3);
        assert_eq!(one.family.with_label_values(&["groq"]).get(), 1);
        assert_eq!(two.family.with_label_values(&["openai"]).get(), 1);
        // More providers than slots: each still finds its own series.
        for i in 0..2 * SLOTS {
            one.of(&format!("p{i}")).inc();
            one.of(&format!("p{i}")).inc();
        }
        for i in 0..2 * SLOTS {
            assert_eq!(one.family.with_label_values(&[&format!("p{i}")]).get(), 2);
        }
    }
}
