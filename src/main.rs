use std::net::SocketAddr;
use std::process::ExitCode;

use clap::Parser;
use tokio_util::sync::CancellationToken;

use tokentap::cli::{Cli, DemoPacing};
use tokentap::config::{Settings, process_env};
use tokentap::server::listen;
use tokentap::{App, Listeners, demo, run, shutdown, telemetry};

// Many small allocations per request (headers, records, JSON values): mimalloc measured 15%
// more requests/s than glibc malloc here. Built without transparent huge pages, it holds the
// same memory per stream as glibc (43.8 vs 43.0 KiB at 9,900 streams; 68.5 with them).
//
// It replaces the C allocator (`malloc`, `free`: mimalloc's `override` feature), and Rust's
// default allocator calls those. The crate's `GlobalAlloc` would ask for every block through
// `mi_malloc_aligned`, which mimalloc serves from its fast path only up to 1 KiB and otherwise
// over-allocates unless the size is a power of two: a boxed future or a read buffer took that
// path, about 1.4k instructions of a short request. The default allocator asks for a plain
// `malloc` whenever the alignment allows. Named here so that the binary links it; the library
// does not, so tests and the fuzz targets keep the C library's allocator.
use mimalloc as _;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let mut settings = match Settings::load(&cli, &process_env) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("tokentap: config error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = telemetry::init(&settings.log_level, settings.log_format) {
        eprintln!("tokentap: config error: {err}");
        return ExitCode::from(2);
    }
    let runtime = match runtime_builder(cpus()).enable_all().build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("tokentap: cannot start the runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(serve(&mut settings)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("tokentap: {err}");
            ExitCode::FAILURE
        }
    }
}

/// CPUs this process may run on (its affinity mask and cgroup quota count).
fn cpus() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// A worker per CPU; on a single CPU (a pinned process, a one-CPU container) the
/// single-threaded runtime instead: the same work without the multi-threaded scheduler's
/// cross-thread wake-ups and queue synchronisation, which nothing else could use there (5% more
/// requests per second and 5% less CPU per request in the pinned bench).
fn runtime_builder(cpus: usize) -> tokio::runtime::Builder {
    if cpus == 1 {
        tokio::runtime::Builder::new_current_thread()
    } else {
        tokio::runtime::Builder::new_multi_thread()
    }
}

async fn serve(settings: &mut Settings) -> anyhow::Result<()> {
    let demo_stop = CancellationToken::new();
    if settings.demo {
        let listener = listen::bind(SocketAddr::from(([127, 0, 0, 1], 0)))?;
        let url = format!("http://{}", listener.local_addr()?);
        settings.point_default_provider_at(&url)?;
        let options = match settings.demo_pacing {
            DemoPacing::Realistic => demo::DemoOptions::paced(),
            DemoPacing::Off => demo::DemoOptions::unpaced(),
        };
        tokio::spawn(demo::serve(listener, options, demo_stop.clone()));
        tracing::info!(%url, "demo upstream started");
    }
    let proxy = listen::bind(settings.listen)
        .map_err(|err| anyhow::anyhow!("cannot bind --listen {}: {err}", settings.listen))?;
    let admin = listen::bind(settings.admin_listen).map_err(|err| {
        anyhow::anyhow!(
            "cannot bind --admin-listen {}: {err}",
            settings.admin_listen
        )
    })?;
    let shutdown = shutdown::signal();
    tracing::info!(
        listen = %proxy.local_addr()?,
        admin = %admin.local_addr()?,
        providers = ?settings.providers.iter().map(|p| p.name.as_str()).collect::<Vec<_>>(),
        workers = cpus(),
        "tokentap serving"
    );
    let app = App::new(settings.clone())?;
    run(Listeners { proxy, admin }, app, shutdown).await;
    demo_stop.cancel();
    tracing::info!("stopped");
    Ok(())
}
