//! The `exatrkx` command: simulate TrackML-like events, run the pipeline in-process, evaluate.
use clap::{Parser, Subcommand};

mod compare;
mod evaluate;
mod run;
mod simulate;
mod tune;

#[derive(Parser)]
#[command(
    name = "exatrkx",
    version,
    about = "ExaTrkX track finding: simulation, pipeline, evaluation"
)]
struct Cli {
    /// Log filter (tracing env-filter syntax), e.g. `info` or `exatrkx_pipeline=debug`.
    #[arg(long, global = true, default_value = "info", env = "EXATRKX_LOG")]
    log: String,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Generate TrackML-format events with the TrackML detector geometry.
    Simulate(simulate::Args),
    /// Run the pipeline in-process on TrackML-format events and write labels.
    Run(run::Args),
    /// Score labels against truth: efficiency, fake rate, duplicate rate.
    Evaluate(evaluate::Args),
    /// Compare simulated events with real TrackML events.
    Compare(compare::Args),
    /// Choose track-building settings on events with truth (networks run once per event).
    Tune(tune::Args),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(&cli.log))
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Simulate(args) => simulate::main(args),
        Command::Run(args) => run::main(args),
        Command::Evaluate(args) => evaluate::main(args),
        Command::Compare(args) => compare::main(args),
        Command::Tune(args) => tune::main(args),
    }
}
