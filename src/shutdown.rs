//! Shutdown signals: the first SIGINT or SIGTERM starts the graceful drain; a second one ends
//! the process at once.

use std::future::Future;

/// Installs the SIGINT and SIGTERM handlers now, and returns what resolves on the first of
/// them (arranging for a second to exit immediately). Installed before the process says it is
/// serving: a handler installed when the future is first polled left a moment after start-up
/// in which SIGTERM still killed the process outright, without its drain.
pub fn signal() -> impl Future<Output = ()> {
    let mut signals = Signals::install();
    async move {
        signals.next().await;
        tokio::spawn(async move {
            signals.next().await;
            tracing::warn!("second signal: exiting without waiting");
            std::process::exit(130);
        });
    }
}

#[cfg(unix)]
struct Signals {
    terminate: Option<tokio::signal::unix::Signal>,
    interrupt: Option<tokio::signal::unix::Signal>,
}

#[cfg(unix)]
impl Signals {
    fn install() -> Signals {
        use tokio::signal::unix::{SignalKind, signal};
        Signals {
            terminate: signal(SignalKind::terminate()).ok(),
            interrupt: signal(SignalKind::interrupt()).ok(),
        }
    }

    /// The next SIGINT or SIGTERM. A handler that could not be installed never fires.
    async fn next(&mut self) {
        async fn one(signal: &mut Option<tokio::signal::unix::Signal>) {
            if let Some(signal) = signal {
                if signal.recv().await.is_some() {
                    return;
                }
            }
            std::future::pending().await
        }
        tokio::select! {
            () = one(&mut self.terminate) => {}
            () = one(&mut self.interrupt) => {}
        }
    }
}

#[cfg(not(unix))]
struct Signals;

#[cfg(not(unix))]
impl Signals {
    fn install() -> Signals {
        Signals
    }

    async fn next(&mut self) {
        let _ = tokio::signal::ctrl_c().await;
    }
}
