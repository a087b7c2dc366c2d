//! `exatrkx run` (placeholder until its implementation lands).

#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`exatrkx run` is not implemented yet")
}
