//! A standalone fast upstream for `bench/run.sh`: tokentap's own demo upstream
//! (`tokentap::demo`), unpaced, on an address of your choice, so that every benchmark target
//! (the load tool directly, tokentap `--upstream`, nginx `proxy_pass`, LiteLLM `api_base`) talks
//! to the very same server.
//!
//! ```sh
//! cargo run --release --example bench_upstream -- --listen 127.0.0.1:18901
//! ```
//!
//! It prints `bench_upstream listening on http://ADDR` on stdout once it accepts connections
//! (with `--listen 127.0.0.1:0` that line tells the port) and stops on SIGINT or SIGTERM.
//! The demo's per-request headers still work, e.g. `x-demo-chunk-delay-ms: 10` paces one stream
//! (see `src/demo.rs`).

use std::io::Write as _;
use std::net::SocketAddr;

use clap::Parser;
use tokentap::demo::{DemoOptions, serve};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// tokentap's demo upstream, unpaced, as a standalone server for benchmarks.
#[derive(Debug, Parser)]
#[command(name = "bench_upstream")]
struct Args {
    /// Address to listen on (port 0 picks a free one; the chosen address is printed).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:18901")]
    listen: SocketAddr,

    /// Tokio worker threads [default: the CPUs this process may run on, see `taskset`].
    #[arg(long, value_name = "N")]
    threads: Option<usize>,
}

fn main() -> std::io::Result<()> {
    let args = Args::parse();
    let mut builder = tokio::runtime::Builder::new_multi_thread();
    builder.enable_all();
    if let Some(threads) = args.threads {
        builder.worker_threads(threads.max(1));
    }
    builder.build()?.block_on(run(args))
}

async fn run(args: Args) -> std::io::Result<()> {
    // The proxy opens its upstream connections in bursts: a deep queue, as the proxy has.
    let listener = tokentap::server::listen::bind(args.listen)?;
    let local = listener.local_addr()?;
    let shutdown = CancellationToken::new();

    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    let stop = shutdown.clone();
    tokio::spawn(async move {
        tokio::select! {
            _ = terminate.recv() => {}
            _ = interrupt.recv() => {}
        }
        stop.cancel();
    });

    {
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "bench_upstream listening on http://{local}")?;
        stdout.flush()?;
    }
    serve(listener, DemoOptions::unpaced(), shutdown).await
}
