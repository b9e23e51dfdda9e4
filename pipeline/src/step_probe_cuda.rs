//! The CUDA side of the step probe. cubecl keeps no peak counter (burn-0.21 reference §8), but its pools
//! keep every page they reserve until cleanup, so `bytes_reserved` read after a sync at each step point is
//! the high-water mark of the pools so far: the figure the planner's cubecl allocator model predicts. The
//! driver's used memory (total − free, device-wide, context included) is recorded beside it.

use crate::error::PipelineError;
use crate::step_probe::ProbeRequest;
use voxplan_planner::accuracy::MeasuredStep;

#[cfg(feature = "cuda")]
mod reader {
    use std::sync::Arc;

    use burn::backend::Cuda;
    use burn::backend::cuda::CudaDevice;
    use burn::cubecl::Runtime;
    use burn::cubecl::cuda::CudaRuntime;
    use burn::tensor::backend::Backend;

    use crate::step_probe::MemoryReader;

    /// cubecl pool figures of the calling thread's stream, above the pools reserved before the model.
    pub struct CudaReader {
        device: CudaDevice,
        context: Option<Arc<cudarc::driver::CudaContext>>,
        baseline: u64,
    }

    impl CudaReader {
        pub fn new(device: CudaDevice) -> Self {
            let context = cudarc::driver::CudaContext::new(device.index).ok();
            let mut r = Self { device, context, baseline: 0 };
            r.baseline = r.reserved().0;
            r
        }

        /// `(reserved, in use)` after a sync; zeros when the stream is in error.
        fn reserved(&self) -> (u64, u64) {
            if <Cuda as Backend>::sync(&self.device).is_err() {
                return (0, 0);
            }
            CudaRuntime::client(&self.device).memory_usage().map_or((0, 0), |u| (u.bytes_reserved, u.bytes_in_use))
        }
    }

    impl MemoryReader for CudaReader {
        fn begin(&mut self) -> u64 {
            self.reserved().1.saturating_sub(self.baseline)
        }

        fn point(&mut self) -> (u64, u64) {
            let (reserved, in_use) = self.reserved();
            (in_use.saturating_sub(self.baseline), reserved.saturating_sub(self.baseline))
        }

        fn driver_used(&mut self) -> Option<u64> {
            let (free, total) = self.context.as_ref()?.mem_get_info().ok()?;
            Some((total - free.min(total)) as u64)
        }
    }
}

/// Measures `req` on CUDA device `index`.
#[cfg(feature = "cuda")]
pub fn probe_cuda(req: &ProbeRequest, index: usize) -> Result<MeasuredStep, PipelineError> {
    use burn::backend::autodiff::checkpoint::strategy::BalancedCheckpointing;
    use burn::backend::cuda::CudaDevice;
    use burn::backend::{Autodiff, Cuda};

    let device = CudaDevice::new(index);
    let mut reader = reader::CudaReader::new(device.clone());
    if req.config.checkpointing {
        crate::step_probe::run_steps::<Autodiff<Cuda, BalancedCheckpointing>>(req, &device, &mut reader)
    } else {
        crate::step_probe::run_steps::<Autodiff<Cuda>>(req, &device, &mut reader)
    }
}

/// Without the `cuda` feature a CUDA probe is an error naming the reason.
#[cfg(not(feature = "cuda"))]
pub fn probe_cuda(_req: &ProbeRequest, index: usize) -> Result<MeasuredStep, PipelineError> {
    Err(PipelineError::Device {
        requested: format!("cuda:{index}"),
        problem: "built without the `cuda` feature".into(),
    })
}
