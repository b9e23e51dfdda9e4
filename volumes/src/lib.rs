//! voxplan's data side: NIfTI I/O, datasets, phantoms and the streaming patch loader. It knows nothing of burn.

pub mod config;
pub mod error;
pub mod nifti;
pub mod volume;

pub use config::{AugmentConfig, DataConfig, DataSource, LoaderConfig, Modality, OrientationPolicy};
pub use error::{Result, VolumeError};
pub use volume::{Affine, IDENTITY_AFFINE, Labels, Volume};

pub mod augment;
pub mod bench_decode;
pub mod bench_loader;
pub mod case_view;
pub mod crop;
pub mod dataset;
pub mod dataset_check;
pub mod fingerprint;
pub mod grid;
pub mod label_space;
pub mod loader;
pub mod phantom;
pub mod phantom_msd;
pub mod preprocess;
pub mod resample;
pub mod sampler;
pub mod seed;
pub mod source;
pub mod split;
pub mod stored_case;
pub mod streamed;

pub use fingerprint::{Fingerprint, IntensityStats, fingerprint};
pub use grid::{Aggregator, Blend, GridSampler, patch_origins};
pub use label_space::{LabelClass, LabelSource, LabelSpace};
pub use loader::{PatchBatch, PatchLoader, Shard};
pub use source::{CaseGeometry, CaseSource, median_shape, open_geometry_source, open_source};
pub use split::{Split, split};
