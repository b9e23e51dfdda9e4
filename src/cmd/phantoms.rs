//! `voxplan phantoms` (being implemented).

#[derive(clap::Args)]
pub struct Args {}

pub fn run(_args: Args) -> anyhow::Result<()> {
    anyhow::bail!("`voxplan phantoms` is not implemented yet")
}
