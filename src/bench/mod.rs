//! `cachet bench`: hit rates measured through the stores and through a real proxy.

use clap::Args;

/// Flags of `cachet bench`.
#[derive(Debug, Clone, Args)]
pub struct BenchArgs {}

/// Runs the benchmark described by `args`.
pub async fn run(_args: BenchArgs) -> anyhow::Result<()> {
    anyhow::bail!("cachet bench is not built yet")
}
