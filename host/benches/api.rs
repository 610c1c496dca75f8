//! Latency and throughput of `POST /api/debates` and `POST /api/jobs` against a real
//! `jobhost serve` process on 127.0.0.1, at 1, 16 and 64 concurrent clients.
//!
//! Run: `cargo bench -p jobhost --bench api`. Settings come from environment variables:
//! - `API_BENCH_REQUESTS` (default 2000): requests per endpoint and client count, after
//!   `API_BENCH_WARMUP` (default 100) untimed ones.
//! - `API_BENCH_DIR` (default: a temporary directory): parent of the data directory. Use a
//!   directory on the disk you want to measure.
//!
//! No worker runs, so every request measures validation, the enqueue (job file, index entry and
//! `RunQueued` event, each synced to disk) and, for debates, the stored debate record. The
//! pending queue grows through the run. Each client sends its next request when the previous
//! reply arrived (a closed loop), so throughput is the server's rate at that concurrency.

use serde_json::{Value, json};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

const CONCURRENCY: [usize; 3] = [1, 16, 64];

fn main() -> anyhow::Result<()> {
    let requests = env_usize("API_BENCH_REQUESTS", 2000)?;
    let warmup = env_usize("API_BENCH_WARMUP", 100)?;
    let base_dir = match std::env::var_os("API_BENCH_DIR") {
        Some(dir) => tempfile::tempdir_in(dir)?,
        None => tempfile::tempdir()?,
    };

    let mut server = Server::start(&base_dir.path().join("data"))?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(run_all(&server.base_url, requests, warmup));
    server.stop();
    result
}

fn env_usize(name: &str, default: usize) -> anyhow::Result<usize> {
    match std::env::var(name) {
        Ok(text) => text
            .parse()
            .map_err(|_| anyhow::anyhow!("{name}={text:?} is not a whole number")),
        Err(_) => Ok(default),
    }
}

/// A `jobhost serve` child process.
struct Server {
    child: Child,
    base_url: String,
}

impl Server {
    /// Starts the server on a free port and reads the bound address from its first log line.
    fn start(data_dir: &Path) -> anyhow::Result<Self> {
        let mut child = Command::new(env!("CARGO_BIN_EXE_jobhost"))
            .arg("serve")
            .env("DATA_DIR", data_dir)
            .env("LISTEN_ADDR", "127.0.0.1:0")
            .env("LOG_FORMAT", "json")
            // Only the start-up line, because a log line per request adds its own cost.
            .env("RUST_LOG", "warn,jobhost::cli=info")
            .env_remove("API_TOKEN")
            .env_remove("MAX_BODY_BYTES")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| anyhow::anyhow!("no stderr pipe"))?;
        let mut lines = BufReader::new(stderr).lines();
        let address = loop {
            let Some(line) = lines.next() else {
                anyhow::bail!("jobhost serve exited before it listened");
            };
            let line: Value = serde_json::from_str(&line?).unwrap_or(Value::Null);
            if line["message"] == "api listening" {
                break line["addr"].as_str().unwrap_or_default().to_string();
            }
        };
        // Keep draining stderr so that the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        Ok(Server {
            child,
            base_url: format!("http://{address}"),
        })
    }

    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let _ = self.child.wait();
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if matches!(self.child.try_wait(), Ok(None)) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A request body for request number `index`.
type BodyFn = fn(usize) -> Value;

fn debate_body(index: usize) -> Value {
    json!({
        "topic": format!("Benchmark debate {index}: should cities ban cars downtown?"),
        "settings": { "rounds": 2 },
    })
}

fn job_body(index: usize) -> Value {
    json!({ "type": "BENCH_NOOP", "payload": { "index": index } })
}

async fn run_all(base_url: &str, requests: usize, warmup: usize) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .no_proxy()
        .pool_max_idle_per_host(128)
        .build()?;
    println!(
        "jobhost API benchmark: {requests} requests per row after {warmup} warm-up, {} CPUs",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    println!(
        "{:<18} {:>8} {:>10} {:>10} {:>10} {:>12}",
        "endpoint", "clients", "p50 ms", "p99 ms", "max ms", "requests/s"
    );

    let endpoints: [(&str, BodyFn); 2] = [("/api/debates", debate_body), ("/api/jobs", job_body)];
    for (path, body) in endpoints {
        let url = format!("{base_url}{path}");
        run_load(&client, &url, body, warmup.min(requests), 4).await?;
        for clients in CONCURRENCY {
            let stats = run_load(&client, &url, body, requests, clients).await?;
            println!(
                "{:<18} {:>8} {:>10.2} {:>10.2} {:>10.2} {:>12.0}",
                path,
                clients,
                stats.percentile(0.50),
                stats.percentile(0.99),
                stats.percentile(1.0),
                stats.throughput()
            );
        }
    }
    Ok(())
}

struct Stats {
    /// Request latencies in milliseconds, sorted.
    latencies_ms: Vec<f64>,
    elapsed: Duration,
}

impl Stats {
    /// Nearest-rank percentile of the latencies.
    fn percentile(&self, quantile: f64) -> f64 {
        if self.latencies_ms.is_empty() {
            return 0.0;
        }
        let rank = (quantile * self.latencies_ms.len() as f64).ceil() as usize;
        self.latencies_ms[rank.clamp(1, self.latencies_ms.len()) - 1]
    }

    fn throughput(&self) -> f64 {
        self.latencies_ms.len() as f64 / self.elapsed.as_secs_f64()
    }
}

/// Sends `total` POSTs from `clients` concurrent clients and returns their latencies. Any reply
/// other than 202 stops the benchmark, because the numbers would then measure errors.
async fn run_load(
    client: &reqwest::Client,
    url: &str,
    body: BodyFn,
    total: usize,
    clients: usize,
) -> anyhow::Result<Stats> {
    let next = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = client.clone();
        let url = url.to_string();
        let next = next.clone();
        tasks.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let index = next.fetch_add(1, Ordering::Relaxed);
                if index >= total {
                    return Ok::<_, anyhow::Error>(latencies);
                }
                let sent = Instant::now();
                let response = client.post(&url).json(&body(index)).send().await?;
                let status = response.status();
                let text = response.text().await?;
                if status != reqwest::StatusCode::ACCEPTED {
                    anyhow::bail!("POST {url} returned {status}: {text}");
                }
                latencies.push(sent.elapsed().as_secs_f64() * 1000.0);
            }
        }));
    }

    let mut latencies_ms = Vec::with_capacity(total);
    for task in tasks {
        latencies_ms.extend(task.await??);
    }
    let elapsed = started.elapsed();
    latencies_ms.sort_by(f64::total_cmp);
    Ok(Stats {
        latencies_ms,
        elapsed,
    })
}
