//! Measuring the memory a training step really uses, to set beside what the planner predicted.
//!
//! CPU: a counting global allocator wraps the system allocator and keeps the live heap bytes and their
//! high-water mark. A step's figure is the high-water mark since the step began, minus the heap that was
//! already live before the model existed (the dataset, the binary's own state), so it counts what the planner
//! models: weights, gradients, optimizer state, activations and backend workspace.
//!
//! CUDA: cubecl keeps no peak counter (reference §8), so the trainer polls after forward, backward and the
//! optimizer step; each poll syncs the device and reads cubecl's `memory_usage` (bytes reserved by this
//! thread's stream pools) and the driver's free memory (`cuMemGetInfo`, device-wide).

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicU64, Ordering};

/// The system allocator, counting live bytes and their high-water mark.
///
/// Installed process-wide below: every binary and test linking the pipeline measures its heap. The cost is
/// two relaxed atomic operations per allocation, negligible beside a 3D convolution.
pub struct CountingAllocator;

static LIVE_BYTES: AtomicU64 = AtomicU64::new(0);
static PEAK_BYTES: AtomicU64 = AtomicU64::new(0);

fn grew(bytes: usize) {
    let now = LIVE_BYTES.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
    PEAK_BYTES.fetch_max(now, Ordering::Relaxed);
}

fn shrank(bytes: usize) {
    LIVE_BYTES.fetch_sub(bytes as u64, Ordering::Relaxed);
}

// SAFETY: every call is forwarded unchanged to `System`; the counters never influence allocation.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

#[global_allocator]
static GLOBAL: CountingAllocator = CountingAllocator;

/// Live heap bytes now.
pub fn heap_live_bytes() -> u64 {
    LIVE_BYTES.load(Ordering::Relaxed)
}

/// Highest live heap bytes since the last [`reset_heap_peak`].
pub fn heap_peak_bytes() -> u64 {
    PEAK_BYTES.load(Ordering::Relaxed)
}

/// Starts a new high-water mark at the current live bytes.
pub fn reset_heap_peak() {
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::Relaxed), Ordering::Relaxed);
}

/// What one step used, measured.
#[derive(Debug, Clone, Copy, PartialEq, Default, serde::Serialize)]
pub struct MemorySample {
    /// The step's peak, comparable with the plan's `predicted_peak_bytes`.
    pub measured_peak_bytes: u64,
    /// CUDA only: device memory the driver reports in use by everyone (total − free), at the step's peak poll.
    pub driver_used_bytes: Option<u64>,
    /// CUDA only: device memory total.
    pub driver_total_bytes: Option<u64>,
}

/// Where memory is read from; made once per run for the device in use.
pub enum MemoryMeter {
    /// Counting allocator; `baseline` is the heap live before the model was built.
    Heap { baseline: u64 },
    #[cfg(feature = "cuda")]
    Cuda(cuda::CudaMeter),
}

impl MemoryMeter {
    /// A heap meter whose baseline is the heap live now: call it before building the model.
    pub fn heap() -> Self {
        Self::Heap { baseline: heap_live_bytes() }
    }

    /// Whether the figure includes the patch loader's worker threads: the heap meter counts every
    /// thread's allocations (on the CPU the loader shares the device's memory); CUDA's pools do not.
    pub fn includes_loader(&self) -> bool {
        match self {
            Self::Heap { .. } => true,
            #[cfg(feature = "cuda")]
            Self::Cuda(_) => false,
        }
    }

    /// Marks the start of a step.
    pub fn begin_step(&mut self) {
        match self {
            Self::Heap { .. } => reset_heap_peak(),
            #[cfg(feature = "cuda")]
            Self::Cuda(m) => m.begin_step(),
        }
    }

    /// Records a poll point inside the step (after forward, after backward). Free on the heap meter.
    pub fn poll(&mut self) {
        match self {
            Self::Heap { .. } => {}
            #[cfg(feature = "cuda")]
            Self::Cuda(m) => m.poll(),
        }
    }

    /// Ends the step and returns what it used.
    pub fn end_step(&mut self) -> MemorySample {
        match self {
            Self::Heap { baseline } => MemorySample {
                measured_peak_bytes: heap_peak_bytes().saturating_sub(*baseline),
                driver_used_bytes: None,
                driver_total_bytes: None,
            },
            #[cfg(feature = "cuda")]
            Self::Cuda(m) => {
                m.poll();
                m.sample()
            }
        }
    }
}

#[cfg(feature = "cuda")]
pub mod cuda {
    //! The CUDA side of [`super::MemoryMeter`].

    use std::sync::Arc;

    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::cubecl::Runtime;
    use burn::cubecl::cuda::CudaRuntime;
    use burn::tensor::backend::Backend;

    use super::MemorySample;

    /// Polls cubecl's pools and the driver's free memory for one device.
    pub struct CudaMeter {
        device: CudaDevice,
        /// The driver context used only for `cuMemGetInfo`; `None` when it could not be had (then only
        /// cubecl's figure is reported).
        context: Option<Arc<cudarc::driver::CudaContext>>,
        step: MemorySample,
    }

    impl CudaMeter {
        pub fn new(device: CudaDevice) -> Self {
            let context = cudarc::driver::CudaContext::new(device.index).ok();
            Self { device, context, step: MemorySample::default() }
        }

        pub fn begin_step(&mut self) {
            self.step = MemorySample::default();
        }

        /// Syncs, then reads both sources and keeps the maxima.
        pub fn poll(&mut self) {
            // A failed sync means the stream is in error (e.g. after an OOM); the caller sees that on its
            // next read, so the poll keeps what it had.
            if <Cuda as Backend>::sync(&self.device).is_err() {
                return;
            }
            if let Ok(usage) = CudaRuntime::client(&self.device).memory_usage() {
                self.step.measured_peak_bytes = self.step.measured_peak_bytes.max(usage.bytes_reserved);
            }
            if let Some(ctx) = &self.context
                && let Ok((free, total)) = ctx.mem_get_info()
            {
                let used = (total - free.min(total)) as u64;
                self.step.driver_used_bytes = Some(self.step.driver_used_bytes.unwrap_or(0).max(used));
                self.step.driver_total_bytes = Some(total as u64);
            }
        }

        pub fn sample(&self) -> MemorySample {
            self.step
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The counters are process-wide and other test threads allocate, free and reset the peak at the same
    /// time, so one observation can be disturbed; a property that holds on any undisturbed attempt is
    /// checked over a few attempts (an allocator that does not count fails every one of them).
    const ATTEMPTS: usize = 8;

    #[test]
    fn heap_meter_sees_a_transient_allocation_after_it_is_freed() {
        const BYTES: usize = 8 << 20;
        let seen = (0..ATTEMPTS).any(|_| {
            let mut meter = MemoryMeter::heap();
            meter.begin_step();
            let block = vec![1u8; BYTES];
            std::hint::black_box(&block);
            drop(block);
            let s = meter.end_step();
            assert!(s.driver_used_bytes.is_none());
            s.measured_peak_bytes >= BYTES as u64
        });
        assert!(seen, "an 8 MiB block freed inside the step never showed in its peak over {ATTEMPTS} attempts");
    }

    #[test]
    fn reset_moves_the_peak_down_to_live() {
        let moved = (0..ATTEMPTS).any(|_| {
            // A 64 MiB high-water mark that a reset must forget (4 MiB of slack for other threads).
            let big = vec![1u8; 64 << 20];
            drop(std::hint::black_box(big));
            reset_heap_peak();
            heap_peak_bytes() <= heap_live_bytes() + (4 << 20)
        });
        assert!(moved, "the peak never came down to the live bytes over {ATTEMPTS} attempts");
    }
}
