//! The L2 cache size per core, read the way flex's matrix multiply reads it.
//!
//! burn flex multiplies matrices with the `gemm` crate, which keeps one packing buffer per thread for the
//! life of the process (gemm-common 0.19 `gemm.rs`: `thread_local! L2_SLAB`, sized to the L2 cache of one
//! core). Every thread that runs a convolution or matmul of a step therefore holds that much heap, and how
//! much it is depends on the CPU: 1 MiB on the AMD EPYC machines this project first measured on, 2 MiB on
//! the Intel Xeon ones it runs on now. The planner reads the same figure gemm does so that the prediction
//! follows the machine instead of a constant measured on another one.

use std::path::Path;
use std::sync::OnceLock;

/// gemm's own fallback when the cache hierarchy cannot be read (gemm-common's `CACHE_INFO_DEFAULT[1]`).
pub const GEMM_DEFAULT_L2_BYTES: u64 = 512 * 1024;

/// Where Linux describes the caches of each logical CPU.
const SYSFS_CPU_ROOT: &str = "/sys/devices/system/cpu";

/// The L2 bytes gemm gives each thread on this machine: the L2 size divided by the logical CPUs that share
/// it, as gemm computes it; the largest over all CPUs where they differ (hybrid cores: gemm takes whichever
/// CPU it reads last, so the largest is the safe side). gemm's default where sysfs has no answer.
/// Read once per process, as gemm does: the hierarchy does not change while it runs, and a many-core
/// machine has thousands of sysfs files to walk for every plan otherwise.
pub fn l2_cache_bytes_per_core() -> u64 {
    static L2: OnceLock<u64> = OnceLock::new();
    *L2.get_or_init(|| l2_bytes_per_core_under(Path::new(SYSFS_CPU_ROOT)).unwrap_or(GEMM_DEFAULT_L2_BYTES))
}

/// [`l2_cache_bytes_per_core`] for a sysfs tree rooted at `root` (`cpuN/cache/indexM/{level,type,size,
/// shared_cpu_list}`); `None` when no CPU there describes an L2 data or unified cache.
pub fn l2_bytes_per_core_under(root: &Path) -> Option<u64> {
    let mut largest: Option<u64> = None;
    for cpu in std::fs::read_dir(root).ok()?.flatten() {
        let name = cpu.file_name();
        let is_cpu = name.to_str().is_some_and(|n| n.strip_prefix("cpu").is_some_and(is_number));
        if !is_cpu {
            continue;
        }
        let Ok(indices) = std::fs::read_dir(cpu.path().join("cache")) else { continue };
        for index in indices.flatten() {
            if let Some(bytes) = l2_share(&index.path()) {
                largest = Some(largest.map_or(bytes, |l| l.max(bytes)));
            }
        }
    }
    largest
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

/// One `indexM` folder's share per CPU, if it is an L2 cache that holds data.
fn l2_share(index: &Path) -> Option<u64> {
    let read = |file: &str| std::fs::read_to_string(index.join(file)).ok().map(|s| s.trim().to_string());
    if read("level")?.parse::<u32>().ok()? != 2 {
        return None;
    }
    if !matches!(read("type")?.as_str(), "Data" | "Unified") {
        return None;
    }
    let size = parse_cache_size(&read("size")?)?;
    let sharing = read("shared_cpu_list").and_then(|l| count_cpu_list(&l)).unwrap_or(1).max(1);
    Some(size / sharing)
}

/// sysfs cache sizes (`2048K`, `1M`, `1G` or plain bytes, binary units) are sizes as `--budget` reads them.
fn parse_cache_size(text: &str) -> Option<u64> {
    crate::units::parse_budget(text).ok()
}

/// How many CPUs a list such as `0-3,8,10-11` names.
fn count_cpu_list(list: &str) -> Option<u64> {
    let mut count = 0u64;
    for item in list.split(',').filter(|s| !s.is_empty()) {
        count += match item.split_once('-') {
            Some((a, b)) => b.parse::<u64>().ok()?.checked_sub(a.parse::<u64>().ok()?)? + 1,
            None => {
                item.parse::<u64>().ok()?;
                1
            }
        };
    }
    Some(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cache_index(root: &Path, cpu: usize, index: usize, level: &str, kind: &str, size: &str, shared: &str) {
        let dir = root.join(format!("cpu{cpu}/cache/index{index}"));
        std::fs::create_dir_all(&dir).unwrap();
        for (file, text) in [("level", level), ("type", kind), ("size", size), ("shared_cpu_list", shared)] {
            std::fs::write(dir.join(file), format!("{text}\n")).unwrap();
        }
    }

    #[test]
    fn reads_the_private_l2_of_each_core() {
        let root = tempfile::tempdir().unwrap();
        for cpu in 0..2 {
            cache_index(root.path(), cpu, 0, "1", "Data", "48K", &cpu.to_string());
            cache_index(root.path(), cpu, 1, "1", "Instruction", "32K", &cpu.to_string());
            cache_index(root.path(), cpu, 2, "2", "Unified", "2048K", &cpu.to_string());
            cache_index(root.path(), cpu, 3, "3", "Unified", "307200K", "0-1");
        }
        // Not a CPU: sysfs puts `cpufreq`, `cpuidle` and friends beside the cpuN folders.
        std::fs::create_dir_all(root.path().join("cpuidle/cache")).unwrap();
        assert_eq!(l2_bytes_per_core_under(root.path()), Some(2 << 20));
    }

    #[test]
    fn a_shared_l2_is_divided_among_its_cpus_and_the_largest_share_wins() {
        let root = tempfile::tempdir().unwrap();
        // Two SMT siblings share 1 MiB; a third core (a hybrid CPU's other kind) has 2 MiB shared by four.
        cache_index(root.path(), 0, 2, "2", "Unified", "1M", "0-1");
        cache_index(root.path(), 1, 2, "2", "Unified", "1M", "0,1");
        cache_index(root.path(), 2, 2, "2", "Unified", "2M", "2-5");
        assert_eq!(l2_bytes_per_core_under(root.path()), Some(512 << 10));
        cache_index(root.path(), 6, 2, "2", "Data", "1048576", "6");
        assert_eq!(l2_bytes_per_core_under(root.path()), Some(1 << 20));
    }

    #[test]
    fn no_readable_l2_gives_none() {
        let root = tempfile::tempdir().unwrap();
        assert_eq!(l2_bytes_per_core_under(&root.path().join("missing")), None);
        cache_index(root.path(), 0, 0, "1", "Data", "48K", "0");
        cache_index(root.path(), 0, 2, "2", "Instruction", "1M", "0");
        cache_index(root.path(), 1, 2, "2", "Unified", "lots", "1");
        assert_eq!(l2_bytes_per_core_under(root.path()), None);
    }

    #[test]
    fn sizes_and_cpu_lists_parse() {
        assert_eq!(parse_cache_size("2048K"), Some(2 << 20));
        assert_eq!(parse_cache_size("1G"), Some(1 << 30));
        assert_eq!(parse_cache_size("K"), None);
        assert_eq!(count_cpu_list("0-3,8,10-11"), Some(7));
        assert_eq!(count_cpu_list("3-1"), None);
    }

    #[test]
    fn this_machine_has_an_answer() {
        let l2 = l2_cache_bytes_per_core();
        assert!((64 << 10..=64 << 20).contains(&l2), "{l2}");
    }
}
