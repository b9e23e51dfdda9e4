//! The planner-accuracy zoo: network/step configurations that are planned and then run for real, to measure
//! how far the prediction is from the measured peak (`voxplan bench planner`), and whose calibration half
//! feeds `voxplan calibrate`. Files: `configs/zoo/cpu.toml`, `configs/zoo/cuda.toml`.

use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::PlanError;
use crate::plan::Precision;
use crate::settings::OptimizerKind;
use crate::spec::{ActivationKind, BlockKind, NetworkSpec, NormKind};

/// Which half of the zoo a configuration belongs to. Calibration never sees the hold-out half, so the
/// accuracy reported on it is the accuracy a user of a calibrated profile can expect.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ZooHalf {
    Calibration,
    Holdout,
}

/// One zoo entry: the network (built from a few knobs) and the step to run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ZooConfig {
    pub name: String,
    pub half: ZooHalf,
    /// Patch `(x, y, z)`.
    pub patch: [usize; 3],
    pub batch: usize,
    pub precision: Precision,
    #[serde(default)]
    pub checkpointing: bool,
    pub optimizer: OptimizerKind,
    /// Channels per stage, full resolution first (its length is the depth).
    pub features: Vec<usize>,
    /// Per-stage strides `(x, y, z)`; default: 1 for stage 0, 2 elsewhere.
    #[serde(default)]
    pub strides: Option<Vec<[usize; 3]>>,
    /// Per-stage kernels `(x, y, z)`; default 3×3×3.
    #[serde(default)]
    pub kernels: Option<Vec<[usize; 3]>>,
    /// Per-stage encoder convs (plain) or residual blocks (residual); default 2 each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoder_convs: Option<Vec<usize>>,
    /// Per-stage decoder convs (the deepest stage's entry is unused); default 2 each.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoder_convs: Option<Vec<usize>>,
    pub norm: NormKind,
    #[serde(default = "default_block")]
    pub block: BlockKind,
    #[serde(default)]
    pub deep_supervision: bool,
    #[serde(default = "default_relu")]
    pub relu: bool,
    #[serde(default = "default_in_channels")]
    pub in_channels: usize,
    #[serde(default = "default_classes")]
    pub classes: usize,
}

fn default_block() -> BlockKind {
    BlockKind::Plain
}
fn default_relu() -> bool {
    false
}
fn default_in_channels() -> usize {
    1
}
fn default_classes() -> usize {
    3
}

#[derive(Deserialize)]
struct ZooFile {
    config: Vec<ZooConfig>,
}

impl ZooConfig {
    /// The network this entry trains, checked together with its patch.
    pub fn network(&self) -> Result<NetworkSpec, PlanError> {
        let mut net = NetworkSpec::plain_unet(self.in_channels, self.classes, &self.features, self.norm);
        let depth = self.features.len();
        let field = |f: &str| format!("zoo.{}.{f}", self.name);
        let lengths = [
            (self.strides.as_ref().map(Vec::len), "strides"),
            (self.kernels.as_ref().map(Vec::len), "kernels"),
            (self.encoder_convs.as_ref().map(Vec::len), "encoder_convs"),
            (self.decoder_convs.as_ref().map(Vec::len), "decoder_convs"),
        ];
        for (len, name) in lengths {
            if let Some(len) = len
                && len != depth
            {
                return Err(PlanError::InvalidSpec {
                    field: field(name),
                    problem: format!("{len} entries for {depth} stages"),
                });
            }
        }
        for (s, st) in net.stages.iter_mut().enumerate() {
            if let Some(strides) = &self.strides {
                st.stride = strides[s];
            }
            if let Some(kernels) = &self.kernels {
                st.kernel = kernels[s];
            }
            if let Some(convs) = &self.encoder_convs {
                st.encoder_convs = convs[s];
            }
            if let Some(convs) = &self.decoder_convs {
                st.decoder_convs = convs[s];
            }
        }
        net.block = self.block;
        net.deep_supervision = self.deep_supervision;
        if self.relu {
            net.activation = ActivationKind::Relu;
        }
        if self.batch == 0 {
            return Err(PlanError::InvalidSpec { field: field("batch"), problem: "must be at least 1".into() });
        }
        net.validate()?;
        net.validate_patch(self.patch)?;
        Ok(net)
    }

    /// A short description for tables: depth, base features, norm and the switches that are on.
    pub fn summary(&self) -> String {
        let norm = match self.norm {
            NormKind::Batch => "BN".to_string(),
            NormKind::Group { groups } => format!("GN{groups}"),
            NormKind::Instance => "IN".to_string(),
        };
        let mut s = format!(
            "d{} f{} {} {}",
            self.features.len(),
            self.features.first().copied().unwrap_or(0),
            norm,
            match self.precision {
                Precision::F32 => "f32",
                Precision::Bf16Mixed => "bf16",
                Precision::F16Mixed => "f16",
            }
        );
        for (convs, tag) in [(&self.encoder_convs, "enc"), (&self.decoder_convs, "dec")] {
            if let Some(c) = convs {
                let list: Vec<String> = c.iter().map(usize::to_string).collect();
                s.push_str(&format!(" {tag}{}", list.join("/")));
            }
        }
        for (on, tag) in [
            (self.checkpointing, "ckpt"),
            (self.deep_supervision, "DS"),
            (self.block == BlockKind::Residual, "res"),
            (self.relu, "relu"),
        ] {
            if on {
                s.push(' ');
                s.push_str(tag);
            }
        }
        s.push_str(match self.optimizer {
            OptimizerKind::Sgd => " SGD",
            OptimizerKind::Adamw => " AdamW",
        });
        s
    }
}

/// The CPU zoo shipped in `configs/zoo/`, compiled in so `voxplan bench planner` works from any folder.
pub const CPU_ZOO_TOML: &str = include_str!("../../configs/zoo/cpu.toml");
/// The CUDA zoo shipped in `configs/zoo/`.
pub const CUDA_ZOO_TOML: &str = include_str!("../../configs/zoo/cuda.toml");

/// Reads and checks a zoo file: every entry's network must be valid and names unique.
pub fn load_zoo(path: &Path) -> Result<Vec<ZooConfig>, PlanError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| PlanError::File { path: path.display().to_string(), problem: e.to_string() })?;
    parse_zoo(&text, &path.display().to_string())
}

/// [`load_zoo`] on text; `origin` names the file in errors.
pub fn parse_zoo(text: &str, origin: &str) -> Result<Vec<ZooConfig>, PlanError> {
    let file: ZooFile =
        toml::from_str(text).map_err(|e| PlanError::File { path: origin.into(), problem: e.to_string() })?;
    let mut seen = std::collections::HashSet::new();
    for c in &file.config {
        if !seen.insert(c.name.clone()) {
            return Err(PlanError::File { path: origin.into(), problem: format!("duplicate name {}", c.name) });
        }
        c.network()?;
    }
    Ok(file.config)
}

/// Keeps the entries named in `only` (all when empty); an unknown name is an error.
pub fn select(zoo: Vec<ZooConfig>, only: &[String]) -> Result<Vec<ZooConfig>, PlanError> {
    if only.is_empty() {
        return Ok(zoo);
    }
    for name in only {
        if !zoo.iter().any(|c| &c.name == name) {
            let known = zoo.iter().map(|c| c.name.as_str()).collect::<Vec<_>>().join(", ");
            return Err(PlanError::InvalidSpec {
                field: "--only".into(),
                problem: format!("no zoo entry named {name} (known: {known})"),
            });
        }
    }
    Ok(zoo.into_iter().filter(|c| only.contains(&c.name)).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    const ONE: &str = r#"
        [[config]]
        name = "a"
        half = "holdout"
        patch = [64, 64, 16]
        batch = 2
        precision = "bf16_mixed"
        optimizer = "adamw"
        features = [8, 16, 32]
        strides = [[1, 1, 1], [2, 2, 1], [2, 2, 2]]
        kernels = [[3, 3, 1], [3, 3, 3], [3, 3, 3]]
        norm = { kind = "instance" }
        deep_supervision = true
    "#;

    #[test]
    fn builds_an_anisotropic_network_from_a_zoo_entry() {
        let zoo = parse_zoo(ONE, "test").unwrap();
        let net = zoo[0].network().unwrap();
        assert_eq!(net.total_stride(), [4, 4, 2]);
        assert_eq!(net.stages[0].kernel, [3, 3, 1]);
        assert!(net.deep_supervision);
        assert_eq!(zoo[0].summary(), "d3 f8 IN bf16 DS AdamW");
    }

    #[test]
    fn per_stage_conv_counts_reach_the_network_and_must_cover_every_stage() {
        let two = ONE.replace("deep_supervision = true", "encoder_convs = [1, 3, 2]\ndecoder_convs = [3, 1, 2]");
        let zoo = parse_zoo(&two, "test").unwrap();
        let net = zoo[0].network().unwrap();
        let convs: Vec<(usize, usize)> = net.stages.iter().map(|s| (s.encoder_convs, s.decoder_convs)).collect();
        assert_eq!(convs, [(1, 3), (3, 1), (2, 2)]);
        assert_eq!(zoo[0].summary(), "d3 f8 IN bf16 enc1/3/2 dec3/1/2 AdamW");
        let short = two.replace("encoder_convs = [1, 3, 2]", "encoder_convs = [1, 3]");
        let e = parse_zoo(&short, "test").unwrap_err().to_string();
        assert!(e.contains("zoo.a.encoder_convs") && e.contains("2 entries for 3 stages"), "{e}");
        let zero = two.replace("encoder_convs = [1, 3, 2]", "encoder_convs = [1, 0, 2]");
        let e = parse_zoo(&zero, "test").unwrap_err().to_string();
        assert!(e.contains("network.stages[1].encoder_convs"), "{e}");
    }

    #[test]
    fn a_patch_that_does_not_divide_is_rejected_with_the_field() {
        let bad = ONE.replace("[64, 64, 16]", "[64, 64, 15]");
        let e = parse_zoo(&bad, "test").unwrap_err().to_string();
        assert!(e.contains("patch_size"), "{e}");
    }

    #[test]
    fn select_rejects_unknown_names() {
        let zoo = parse_zoo(ONE, "test").unwrap();
        assert_eq!(select(zoo.clone(), &["a".into()]).unwrap().len(), 1);
        assert!(select(zoo, &["b".into()]).unwrap_err().to_string().contains("no zoo entry named b"));
    }
}
