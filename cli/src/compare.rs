//! `exatrkx compare` (placeholder until its implementation lands).

#[derive(clap::Args)]
pub struct Args {}

pub fn main(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`exatrkx compare` is not implemented yet")
}
