//! The CPU a plan is for: the two facts of the machine that flex's memory depends on, where each came from,
//! and how a user (or a test) states them for a CPU other than this one.
//!
//! A flex step's memory follows the machine in two places ([`crate::device::for_machine`]): gemm keeps one
//! L2-sized packing slab per compute thread, and the tiled conv kernels run one gather buffer per thread.
//! Both figures are read from this machine by default: the L2 share per core from sysfs, as gemm reads it
//! ([`crate::cpu_cache`]), and the thread count from rayon's rule. `voxplan plan` can be asked to plan for
//! another CPU (the cluster node a job will run on, or, in CI, a host with a different cache) by stating
//! either figure in the environment: [`L2_ENV`] and [`THREADS_ENV`].
//!
//! A run that measures what it planned (`train`, `predict`, the step probe, `calibrate`) plans for
//! [`CpuHost::this_machine`] whatever is stated, because gemm and rayon size their buffers from the real
//! machine, not from a statement; `train` says so in its log when a statement is set.

use serde::{Deserialize, Serialize};

use crate::cpu_cache::l2_cache_bytes_per_core;
use crate::error::PlanError;
use crate::units::{format_bytes, parse_budget};

/// Environment variable stating the L2 cache per core of the CPU to plan for (`1MiB`, `512K`, `2M`, bytes).
pub const L2_ENV: &str = "VOXPLAN_CPU_L2";
/// Environment variable stating the compute threads of the CPU to plan for (a positive integer).
pub const THREADS_ENV: &str = "VOXPLAN_CPU_THREADS";

/// Where one of a [`CpuHost`]'s figures came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FactSource {
    /// Read from this machine (sysfs for the L2 cache, `RAYON_NUM_THREADS` or the logical cores for threads).
    ThisMachine,
    /// Stated by [`L2_ENV`] or [`THREADS_ENV`].
    Stated,
}

/// The CPU facts a flex plan depends on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CpuHost {
    /// L2 bytes gemm gives each compute thread (the L2 size over the logical CPUs sharing it).
    pub l2_bytes_per_core: u64,
    pub l2_source: FactSource,
    /// Threads flex computes on (rayon's global pool).
    pub compute_threads: usize,
    pub threads_source: FactSource,
}

impl CpuHost {
    /// This machine as flex runs on it: gemm's L2 share and rayon's thread count.
    pub fn this_machine() -> Self {
        Self {
            l2_bytes_per_core: l2_cache_bytes_per_core(),
            l2_source: FactSource::ThisMachine,
            compute_threads: compute_threads(),
            threads_source: FactSource::ThisMachine,
        }
    }

    /// The CPU `voxplan plan` plans for: this machine, with each figure that [`L2_ENV`] or [`THREADS_ENV`]
    /// states replaced. A statement that does not parse is an error naming the variable, never ignored.
    pub fn planned_for() -> Result<Self, PlanError> {
        Self::stated(std::env::var(L2_ENV).ok().as_deref(), std::env::var(THREADS_ENV).ok().as_deref())
    }

    /// [`CpuHost::this_machine`] with the stated figures (the values of the two variables, if set) in place.
    pub fn stated(l2: Option<&str>, threads: Option<&str>) -> Result<Self, PlanError> {
        let mut host = Self::this_machine();
        if let Some(text) = l2 {
            host.l2_bytes_per_core = parse_budget(text).map_err(|_| PlanError::InvalidSize {
                field: L2_ENV.into(),
                value: text.into(),
                problem: "expected a cache size such as 1MiB, 512K or 2M".into(),
            })?;
            host.l2_source = FactSource::Stated;
        }
        if let Some(text) = threads {
            host.compute_threads =
                text.trim().parse::<usize>().ok().filter(|&n| n > 0).ok_or_else(|| PlanError::InvalidSize {
                    field: THREADS_ENV.into(),
                    value: text.into(),
                    problem: "expected a positive whole number of threads".into(),
                })?;
            host.threads_source = FactSource::Stated;
        }
        Ok(host)
    }

    /// Whether any figure is stated rather than read from this machine.
    pub fn is_stated(&self) -> bool {
        self.l2_source == FactSource::Stated || self.threads_source == FactSource::Stated
    }

    /// `2 compute threads, L2 1.0 MiB per core (L2 stated by VOXPLAN_CPU_L2)`, for reports and logs.
    pub fn describe(&self) -> String {
        let stated: Vec<&str> = [(self.threads_source, THREADS_ENV), (self.l2_source, L2_ENV)]
            .into_iter()
            .filter(|(s, _)| *s == FactSource::Stated)
            .map(|(_, var)| var)
            .collect();
        let plural = if self.compute_threads == 1 { "" } else { "s" };
        let base = format!(
            "{} compute thread{plural}, L2 {} per core",
            self.compute_threads,
            format_bytes(self.l2_bytes_per_core)
        );
        if stated.is_empty() { base } else { format!("{base}; stated by {}", stated.join(" and ")) }
    }
}

/// Threads the CPU backend computes on: burn flex runs on rayon's global pool, which takes
/// `RAYON_NUM_THREADS` when set to a positive number and the logical core count otherwise.
pub fn compute_threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|v| v.trim().parse::<usize>().ok())
        .filter(|&n| n > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_stated_is_this_machine() {
        let host = CpuHost::stated(None, None).unwrap();
        assert_eq!(host, CpuHost::this_machine());
        assert!(!host.is_stated());
        assert!(!host.describe().contains("stated"), "{}", host.describe());
    }

    #[test]
    fn stated_figures_replace_the_machine_s_and_say_so() {
        let host = CpuHost::stated(Some("2MiB"), Some(" 16 ")).unwrap();
        assert_eq!((host.l2_bytes_per_core, host.compute_threads), (2 << 20, 16));
        assert_eq!((host.l2_source, host.threads_source), (FactSource::Stated, FactSource::Stated));
        let text = host.describe();
        assert!(text.starts_with("16 compute threads, L2 2.0 MiB per core; stated by"), "{text}");
        assert!(text.contains(L2_ENV) && text.contains(THREADS_ENV), "{text}");
        let l2_only = CpuHost::stated(Some("512K"), None).unwrap();
        assert_eq!(l2_only.l2_bytes_per_core, 512 << 10);
        assert_eq!(l2_only.compute_threads, CpuHost::this_machine().compute_threads);
        assert_eq!(l2_only.threads_source, FactSource::ThisMachine);
    }

    #[test]
    fn a_statement_that_does_not_parse_is_an_error_naming_the_variable() {
        for (l2, threads, var) in
            [(Some("lots"), None, L2_ENV), (None, Some("0"), THREADS_ENV), (None, Some("two"), THREADS_ENV)]
        {
            let e = CpuHost::stated(l2, threads).unwrap_err().to_string();
            assert!(e.contains(var), "{e}");
        }
    }
}
