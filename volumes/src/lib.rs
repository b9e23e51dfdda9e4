//! voxplan's data side: NIfTI I/O, datasets, phantoms and the streaming patch loader. It knows nothing of burn.

pub mod config;
pub mod error;
pub mod volume;

pub use config::{AugmentConfig, DataConfig, DataSource, LoaderConfig, Modality};
pub use error::{Result, VolumeError};
pub use volume::{Affine, IDENTITY_AFFINE, Labels, Volume};

pub mod phantom;
pub mod seed;
