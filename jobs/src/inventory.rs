//! The box's GPUs: their kind, total and free memory, from NVML (no CUDA context is created, so listing
//! never takes memory from the jobs), or simulated from the planner's GPU table, which lets CI and a
//! laptop drive the same placement with the jobs running on the CPU.

use voxplan_planner::{DeviceProfile, DeviceSelector, device_profile};

use crate::error::{JobsError, Result};

/// Environment variable giving a simulated inventory when `--simulate-gpus` is not given.
pub const SIMULATE_ENV: &str = "VOXPLAN_SIMULATE_GPUS";

/// One card as the placement sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct Card {
    /// NVML index (with `CUDA_DEVICE_ORDER=PCI_BUS_ID`, the CUDA index too).
    pub index: usize,
    /// The device profile's name: jobs are planned per kind of card.
    pub kind: String,
    pub total_bytes: u64,
    /// Free now, by everyone's use (other users' processes included).
    pub free_bytes: u64,
    /// What the planner plans for on this card.
    pub profile: DeviceProfile,
}

/// Where the cards come from.
#[derive(Debug, Clone, PartialEq)]
pub enum Inventory {
    Nvml,
    /// Cards named as in `configs/devices/gpus.toml` (`A100-40GB`, `T4`, …), always wholly free; jobs then
    /// run on the CPU.
    Simulated(Vec<String>),
}

impl Inventory {
    /// `--simulate-gpus A100-40GB,T4` (or `$VOXPLAN_SIMULATE_GPUS`), else NVML.
    pub fn from_option(simulate: Option<&str>) -> Self {
        let listed = simulate.map(str::to_string).or_else(|| std::env::var(SIMULATE_ENV).ok());
        match listed {
            Some(list) if !list.trim().is_empty() => {
                Inventory::Simulated(list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect())
            }
            _ => Inventory::Nvml,
        }
    }

    pub fn is_simulated(&self) -> bool {
        matches!(self, Inventory::Simulated(_))
    }

    /// The cards now, restricted to `only` (indices) when given.
    pub fn cards(&self, only: Option<&[usize]>) -> Result<Vec<Card>> {
        let all = match self {
            Inventory::Simulated(names) => names
                .iter()
                .enumerate()
                .map(|(index, name)| {
                    let profile = device_profile(&DeviceSelector::Gpu(name.clone()))?;
                    Ok(Card {
                        index,
                        kind: profile.name.clone(),
                        total_bytes: profile.total_bytes,
                        free_bytes: profile.total_bytes,
                        profile,
                    })
                })
                .collect::<Result<Vec<_>>>()?,
            Inventory::Nvml => nvml_cards()?,
        };
        if let Some(only) = only
            && let Some(missing) = only.iter().find(|i| !all.iter().any(|c| c.index == **i))
        {
            return Err(JobsError::Option {
                field: "--gpus".into(),
                problem: format!("no card {missing}; this box has {}", all.len()),
            });
        }
        Ok(all.into_iter().filter(|c| only.is_none_or(|o| o.contains(&c.index))).collect())
    }
}

fn nvml_cards() -> Result<Vec<Card>> {
    let err = |e: nvml_wrapper::error::NvmlError| {
        JobsError::Inventory(format!(
            "NVML: {e} (no NVIDIA driver here? --simulate-gpus NAME,.. plans for cards from the built-in table)"
        ))
    };
    let nvml = nvml_wrapper::Nvml::init().map_err(err)?;
    let count = nvml.device_count().map_err(err)?;
    let mut cards = Vec::with_capacity(count as usize);
    for index in 0..count {
        let device = nvml.device_by_index(index).map_err(err)?;
        let memory = device.memory_info().map_err(err)?;
        let profile = device_profile(&DeviceSelector::Cuda(index as usize))?;
        cards.push(Card {
            index: index as usize,
            kind: profile.name.clone(),
            total_bytes: memory.total,
            free_bytes: memory.free,
            profile,
        });
    }
    Ok(cards)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_simulated_inventory_comes_from_the_gpu_table() {
        let inv = Inventory::from_option(Some("A100-40GB, T4"));
        assert!(inv.is_simulated());
        let cards = inv.cards(None).unwrap();
        assert_eq!(cards.len(), 2);
        assert!(cards[0].kind.contains("A100") && cards[0].total_bytes > 39 << 30, "{cards:?}");
        assert_eq!(cards[1].free_bytes, cards[1].total_bytes);
        assert_eq!(inv.cards(Some(&[1])).unwrap()[0].index, 1);
        assert!(inv.cards(Some(&[5])).unwrap_err().to_string().contains("no card 5"));
        assert!(Inventory::from_option(Some("GTX-480")).cards(None).is_err());
    }
}
