//! `voxplan inspect` (being implemented).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`voxplan inspect` is not implemented yet")
}
