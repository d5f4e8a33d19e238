//! `meridian`: starts a node (or writes dev certificates with `meridian certs`).

use std::net::IpAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use geo::Topology;
use meridian_server::config::{read_config, ServerConfig};
use meridian_server::cpu::{self, CpuPolicy};
use meridian_server::keyspace::FsyncPolicy;
use meridian_server::node::Node;
use meridian_server::shutdown::Shutdown;

/// Meridian: a geo-distributed cache that speaks the Redis protocol.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Config / topology file (TOML).
    #[arg(long, global = true)]
    config: Option<PathBuf>,
    /// This node's name in the topology.
    #[arg(long)]
    node: Option<String>,
    /// RESP bind address.
    #[arg(long)]
    bind: Option<IpAddr>,
    /// RESP port.
    #[arg(long)]
    port: Option<u16>,
    /// Data directory.
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// WAL sync policy: always, everysec or no.
    #[arg(long, value_parser = parse_fsync)]
    appendfsync: Option<FsyncPolicy>,
    /// Password required by AUTH.
    #[arg(long)]
    requirepass: Option<String>,
    /// Prometheus exporter address, e.g. 127.0.0.1:9121.
    #[arg(long)]
    metrics_addr: Option<std::net::SocketAddr>,
    /// Hot cache bound in MiB.
    #[arg(long)]
    hot_cache_mb: Option<u64>,
    /// RocksDB block cache in MiB.
    #[arg(long)]
    block_cache_mb: Option<u64>,
    /// Connection cap.
    #[arg(long)]
    maxclients: Option<usize>,
    /// Worker threads (0 = one per core).
    #[arg(long)]
    io_threads: Option<usize>,
    /// Scheduling policy of the node's threads: batch (default) or normal.
    #[arg(long, value_parser = parse_cpu_policy)]
    cpu_policy: Option<CpuPolicy>,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prints one line per node of the topology: NAME REGION RESP-ADDRESS.
    Nodes,
    /// Writes a dev cluster CA and one certificate per node of the topology.
    Certs {
        /// Output directory.
        #[arg(long)]
        out: PathBuf,
    },
}

/// mimalloc: the write path allocates per request (arguments, batches, cache entries).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn parse_fsync(s: &str) -> Result<FsyncPolicy, String> {
    FsyncPolicy::parse(s).ok_or_else(|| format!("'{s}' is not one of always, everysec, no"))
}

fn parse_cpu_policy(s: &str) -> Result<CpuPolicy, String> {
    CpuPolicy::parse(s).ok_or_else(|| format!("'{s}' is not one of batch, normal"))
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| "meridian=info,meridian_server=info,geo=info,openraft=warn".into());
        tracing_subscriber::registry()
            .with(filter)
            .with(meridian_server::log_limit::RepeatLimit::new())
            .with(
                tracing_subscriber::fmt::layer()
                    .with_writer(std::io::stderr)
                    .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())),
            )
            .init();
    }

    let (mut server, topology) = match &cli.config {
        Some(path) => {
            let file =
                read_config(path).with_context(|| format!("reading config {}", path.display()))?;
            let topology = match file.topology {
                Some(table) => {
                    let text = toml::to_string(&table).context("re-serialising the topology")?;
                    let base = path.parent().map(|p| p.to_path_buf());
                    Some(
                        Topology::parse(&text, base.as_deref()).with_context(|| {
                            format!("reading the topology in {}", path.display())
                        })?,
                    )
                }
                None => None,
            };
            (file.server, topology)
        }
        None => (ServerConfig::default(), None),
    };

    if let Some(Command::Certs { out }) = &cli.command {
        let topology = topology.context("`meridian certs` needs --config with a topology")?;
        let done = geo::generate_certs(&topology, out)
            .with_context(|| format!("writing certificates to {}", out.display()))?;
        println!("{done} in {}", out.display());
        return Ok(());
    }

    if let Some(Command::Nodes) = &cli.command {
        let topology = topology.context("`meridian nodes` needs --config with a topology")?;
        for region in &topology.regions {
            for node in &region.nodes {
                println!("{} {} {}", node.name, region.name, node.resp);
            }
        }
        return Ok(());
    }

    // In a topology, this node's RESP address and data directory come from its name.
    let cluster = match topology {
        Some(topology) => {
            let name = match &cli.node {
                Some(n) => n.clone(),
                None if topology.all_nodes().count() == 1 => topology
                    .all_nodes()
                    .next()
                    .map(|n| n.name.clone())
                    .unwrap_or_default(),
                None => {
                    anyhow::bail!("the topology has several nodes: say which one with --node NAME")
                }
            };
            let node = topology
                .node(&name)
                .with_context(|| format!("node '{name}' is not in the topology"))?;
            server.bind = node.resp.ip();
            server.port = node.resp.port();
            if let Some(m) = node.metrics {
                server.metrics_addr = Some(m);
            }
            if server.data_dir == ServerConfig::default().data_dir {
                server.data_dir = server.data_dir.join(&name);
            }
            Some((topology, name))
        }
        None => None,
    };
    if let Some(v) = cli.bind {
        server.bind = v;
    }
    if let Some(v) = cli.port {
        server.port = v;
    }
    if let Some(v) = cli.data_dir {
        server.data_dir = v;
    }
    if let Some(v) = cli.appendfsync {
        server.appendfsync = v;
    }
    if let Some(v) = cli.requirepass {
        server.requirepass = Some(v);
    }
    if let Some(v) = cli.metrics_addr {
        server.metrics_addr = Some(v);
    }
    if let Some(v) = cli.hot_cache_mb {
        server.hot_cache_mb = v;
    }
    if let Some(v) = cli.block_cache_mb {
        server.block_cache_mb = v;
    }
    if let Some(v) = cli.maxclients {
        server.maxclients = v;
    }
    if let Some(v) = cli.io_threads {
        server.io_threads = v;
    }
    if let Some(v) = cli.cpu_policy {
        server.cpu_policy = v;
    }
    server.validate().map_err(|e| anyhow::anyhow!(e))?;
    // Before any other thread starts, so that every thread inherits it.
    if let Err(e) = cpu::apply(server.cpu_policy) {
        tracing::warn!(policy = server.cpu_policy.name(), error = %e, "cannot set the CPU policy; running with the default");
    }

    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if server.io_threads > 0 {
        runtime.worker_threads(server.io_threads);
    }
    let runtime = runtime
        .enable_all()
        .thread_name("meridian")
        .build()
        .context("starting the tokio runtime")?;
    runtime.block_on(async move {
        let shutdown = Shutdown::new();
        shutdown.listen_for_signals();
        let node = Node::start(server, cluster, shutdown).await?;
        node.run_until_shutdown().await
    })
}
