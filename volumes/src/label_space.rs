//! A dataset's label space: which values its label maps hold, what each is called, and which class index it
//! trains as.
//!
//! Label maps from the field are rarely `0..K−1`: BraTS ships 0/1/2/4, spine and organ atlases use anatomical
//! codes (21–23), many masks are 0/255. The network's output channels are class indices, so every label map is
//! encoded (value → index, in the order of the values) where it is read, and every prediction decoded
//! (index → value) where it is written. A voxel whose value is not declared is an error naming the file,
//! the value and how many voxels hold it: training on it would index past the network's last channel.
//!
//! Class index 0 (the smallest declared value, 0 in every convention in use) is the background: the
//! foreground sampler and the mean Dice skip it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::error::{Result, VolumeError};

/// Largest number of classes: one index is kept free as the encoder's "not declared" mark.
pub const MAX_CLASSES: usize = u16::MAX as usize;
/// Undeclared values an error lists before it says "and N more".
const LISTED_UNDECLARED: usize = 8;
/// The encoder's mark for a value that is not declared.
const UNDECLARED: u16 = u16::MAX;

/// One class: the voxel value that marks it in label maps, and its name.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelClass {
    pub value: u16,
    pub name: String,
}

/// Where a label space was declared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LabelSource {
    /// The dataset's `dataset.json` (`labels`, MSD's value → name or nnU-Net's name → value).
    DatasetJson,
    /// The experiment's `[data] labels` table.
    Experiment,
    /// The values found in the label maps (a folder dataset that declares none).
    FoundInData,
    /// The phantom generator's classes.
    Phantom,
    /// `0..K−1` assumed: a checkpoint written before label spaces were recorded.
    Assumed,
}

impl LabelSource {
    fn describe(self) -> &'static str {
        match self {
            LabelSource::DatasetJson => "declared in dataset.json",
            LabelSource::Experiment => "declared in [data] labels",
            LabelSource::FoundInData => "found in the label maps",
            LabelSource::Phantom => "the phantom generator's classes",
            LabelSource::Assumed => "assumed 0..K-1",
        }
    }
}

/// The classes a dataset declares, in the order of their values: class index `i` is `classes[i]`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LabelSpace {
    pub classes: Vec<LabelClass>,
    pub source: LabelSource,
}

impl LabelSpace {
    /// Classes from value → name pairs (any order); `origin` names the file or field errors point at. At
    /// least two classes, at most [`MAX_CLASSES`], and no name used twice (metrics are keyed by name).
    pub fn new(pairs: impl IntoIterator<Item = (u16, String)>, source: LabelSource, origin: &Path) -> Result<Self> {
        let by_value: BTreeMap<u16, String> = pairs.into_iter().collect();
        let bad = |problem: String| VolumeError::Dataset { path: origin.to_path_buf(), problem };
        if by_value.len() < 2 {
            return Err(bad(format!(
                "labels: {} class(es) declared; segmentation needs a background and at least one class",
                by_value.len()
            )));
        }
        if by_value.len() > MAX_CLASSES {
            return Err(bad(format!(
                "labels: {} classes declared, at most {MAX_CLASSES} are supported",
                by_value.len()
            )));
        }
        let mut seen: BTreeMap<&str, u16> = BTreeMap::new();
        for (&value, name) in &by_value {
            if let Some(first) = seen.insert(name.as_str(), value) {
                return Err(bad(format!("labels: the name {name:?} is given to both {first} and {value}")));
            }
        }
        let classes = by_value.into_iter().map(|(value, name)| LabelClass { value, name }).collect();
        Ok(Self { classes, source })
    }

    /// `0..classes` named `background`, `class_1`, …: what a checkpoint without a recorded label space
    /// trained on.
    pub fn consecutive(classes: usize, source: LabelSource) -> Self {
        let classes =
            (0..classes.min(MAX_CLASSES)).map(|i| LabelClass { value: i as u16, name: default_name(i) }).collect();
        Self { classes, source }
    }

    pub fn len(&self) -> usize {
        self.classes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.classes.is_empty()
    }

    /// Whether values are already class indices (`0..K−1`): encoding then only checks them.
    pub fn is_consecutive(&self) -> bool {
        self.classes.iter().enumerate().all(|(i, c)| usize::from(c.value) == i)
    }

    /// The value that marks class `index` in label maps.
    pub fn value_of(&self, index: usize) -> Option<u16> {
        self.classes.get(index).map(|c| c.value)
    }

    /// The name of class `index` (its index as text when out of range).
    pub fn name_of(&self, index: usize) -> String {
        self.classes.get(index).map_or_else(|| index.to_string(), |c| c.name.clone())
    }

    /// The largest declared value: what a written label map must be able to hold.
    pub fn max_value(&self) -> u16 {
        self.classes.last().map_or(0, |c| c.value)
    }

    /// Checks that the network's output channels are the declared classes.
    pub fn check_class_count(&self, num_classes: usize) -> Result<()> {
        if num_classes == self.len() {
            return Ok(());
        }
        Err(VolumeError::Config {
            field: "network.num_classes".into(),
            problem: format!(
                "is {num_classes}, but the dataset has {} classes ({}: {}); set num_classes = {}",
                self.len(),
                self.source.describe(),
                self.summary(),
                self.len()
            ),
        })
    }

    /// `0 background, 21 L1, 22 L2, 23 L3`.
    pub fn summary(&self) -> String {
        self.classes.iter().map(|c| format!("{} {}", c.value, c.name)).collect::<Vec<_>>().join(", ")
    }

    /// One line for reports and logs: the classes, where they were declared, and the mapping when there is
    /// one.
    pub fn describe(&self) -> String {
        let mapping = if self.is_consecutive() {
            "values are the class indices".to_string()
        } else {
            let pairs: Vec<String> = self.classes.iter().enumerate().map(|(i, c)| format!("{}→{i}", c.value)).collect();
            format!("values mapped to class indices in value order: {}", pairs.join(", "))
        };
        format!("{} classes ({}) {}; {mapping}", self.len(), self.summary(), self.source.describe())
    }

    /// The value → class index table for encoding label maps.
    pub fn encoder(&self) -> LabelEncoder {
        let mut table = vec![UNDECLARED; usize::from(self.max_value()) + 1];
        for (i, c) in self.classes.iter().enumerate() {
            table[usize::from(c.value)] = i as u16;
        }
        LabelEncoder { table }
    }

    /// Turns class indices back into the declared values, in place (a prediction about to be written).
    /// Indices beyond the classes cannot come from a network with this many channels; they are left as they
    /// are.
    pub fn decode_in_place(&self, indices: &mut [u16]) {
        if self.is_consecutive() {
            return;
        }
        let values: Vec<u16> = self.classes.iter().map(|c| c.value).collect();
        for v in indices {
            if let Some(&value) = values.get(usize::from(*v)) {
                *v = value;
            }
        }
    }
}

impl fmt::Display for LabelSpace {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe())
    }
}

/// `background` for class 0, `class_<i>` otherwise.
pub fn default_name(index: usize) -> String {
    if index == 0 { "background".into() } else { format!("class_{index}") }
}

/// A value → class index table ([`LabelSpace::encoder`]): one lookup per voxel.
#[derive(Debug, Clone)]
pub struct LabelEncoder {
    table: Vec<u16>,
}

impl LabelEncoder {
    /// Replaces every value of a label map read from `path` by its class index, in place. Any value that is
    /// not declared is an error naming the file, each such value and how many voxels hold it.
    pub fn encode_in_place(&self, data: &mut [u16], path: &Path) -> Result<()> {
        // Counted per value only once an undeclared voxel turns up: a clean map costs one lookup per voxel.
        let mut undeclared: Option<Vec<u64>> = None;
        for v in data.iter_mut() {
            match self.table.get(usize::from(*v)).copied().unwrap_or(UNDECLARED) {
                UNDECLARED => {
                    undeclared.get_or_insert_with(|| vec![0; usize::from(u16::MAX) + 1])[usize::from(*v)] += 1
                }
                class => *v = class,
            }
        }
        match undeclared {
            None => Ok(()),
            Some(counts) => Err(self.undeclared_error(&counts, path)),
        }
    }

    fn undeclared_error(&self, counts: &[u64], path: &Path) -> VolumeError {
        let found: Vec<(usize, u64)> =
            counts.iter().enumerate().filter(|(_, n)| **n > 0).map(|(v, n)| (v, *n)).collect();
        let mut listed: Vec<String> =
            found.iter().take(LISTED_UNDECLARED).map(|(v, n)| format!("value {v} in {n} voxels")).collect();
        if found.len() > LISTED_UNDECLARED {
            listed.push(format!("and {} more values", found.len() - LISTED_UNDECLARED));
        }
        let declared: Vec<String> =
            self.table.iter().enumerate().filter(|(_, c)| **c != UNDECLARED).map(|(v, _)| v.to_string()).collect();
        VolumeError::NotLabels {
            path: path.to_path_buf(),
            problem: format!(
                "{} not among the declared labels ({}); declare them (dataset.json `labels` or [data] labels) or \
                 fix the label map",
                listed.join(", "),
                declared.join(", ")
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spine() -> LabelSpace {
        let pairs = [(23, "L3"), (0, "background"), (21, "L1"), (22, "L2")].map(|(v, n)| (v, n.to_string()));
        LabelSpace::new(pairs, LabelSource::DatasetJson, Path::new("dataset.json")).unwrap()
    }

    #[test]
    fn classes_are_indexed_in_value_order_and_decode_back() {
        let s = spine();
        assert_eq!(s.len(), 4);
        assert!(!s.is_consecutive());
        assert_eq!((s.value_of(1), s.name_of(3), s.max_value()), (Some(21), "L3".to_string(), 23));
        let mut map = vec![0, 21, 22, 23, 23, 0];
        s.encoder().encode_in_place(&mut map, Path::new("a.nii.gz")).unwrap();
        assert_eq!(map, [0, 1, 2, 3, 3, 0]);
        s.decode_in_place(&mut map);
        assert_eq!(map, [0, 21, 22, 23, 23, 0]);
        assert!(s.describe().contains("21→1") && s.describe().contains("dataset.json"), "{}", s.describe());
    }

    #[test]
    fn an_undeclared_value_names_the_file_the_value_and_its_voxels() {
        let s = spine();
        // 255 beyond the table, 5 inside it but undeclared, 22 declared.
        let mut map = vec![0, 255, 5, 5, 22, 255, 255];
        let e = s.encoder().encode_in_place(&mut map, Path::new("case_7.nii.gz")).unwrap_err().to_string();
        assert!(e.contains("case_7.nii.gz"), "{e}");
        assert!(e.contains("value 5 in 2 voxels") && e.contains("value 255 in 3 voxels"), "{e}");
        assert!(e.contains("0, 21, 22, 23"), "{e}");
        let many: Vec<u16> = (100..120).collect();
        let e = s.encoder().encode_in_place(&mut many.clone(), Path::new("m.nii")).unwrap_err().to_string();
        assert!(e.contains("and 12 more values"), "{e}");
    }

    #[test]
    fn consecutive_labels_are_only_checked() {
        let s = LabelSpace::consecutive(3, LabelSource::Phantom);
        assert!(s.is_consecutive());
        assert_eq!(s.summary(), "0 background, 1 class_1, 2 class_2");
        let mut map = vec![0, 1, 2, 1];
        s.encoder().encode_in_place(&mut map, Path::new("p")).unwrap();
        assert_eq!(map, [0, 1, 2, 1]);
        assert!(s.encoder().encode_in_place(&mut [3], Path::new("p")).is_err());
    }

    #[test]
    fn the_class_count_must_match_the_network() {
        let e = spine().check_class_count(3).unwrap_err().to_string();
        assert!(e.contains("network.num_classes") && e.contains("is 3") && e.contains("4 classes"), "{e}");
        assert!(e.contains("21 L1"), "{e}");
        spine().check_class_count(4).unwrap();
    }

    #[test]
    fn a_label_space_needs_two_classes_and_unique_names() {
        let one = LabelSpace::new([(0, "bg".to_string())], LabelSource::Experiment, Path::new("x"));
        assert!(one.unwrap_err().to_string().contains("at least one class"));
        let twice = LabelSpace::new(
            [(0, "bg".into()), (1, "a".into()), (2, "a".into())],
            LabelSource::Experiment,
            Path::new("x"),
        );
        assert!(twice.unwrap_err().to_string().contains("\"a\" is given to both 1 and 2"));
    }
}
