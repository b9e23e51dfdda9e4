//! The dataset's classes as a decision of the plan report: the planner knows nothing of data, but a report
//! that says which voxel values train as which output channel lets a person catch a wrong `dataset.json`
//! (or a surprising value found in a folder dataset's masks) before hours of training.

use voxplan_planner::report::Decision;
use voxplan_volumes::LabelSpace;

/// The `labels` decision: the classes, where they were declared, and the value → class index mapping.
pub fn label_decision(labels: &LabelSpace) -> Decision {
    let reason = if labels.is_consecutive() {
        "the label values are the class indices 0..K-1; the network has one output channel per class".to_string()
    } else {
        let mapping: Vec<String> = labels.classes.iter().enumerate().map(|(i, c)| format!("{}→{i}", c.value)).collect();
        format!(
            "the network has one output channel per class, indexed in the order of the values ({}); label maps \
             are encoded as they are read and predictions written back in the declared values",
            mapping.join(", ")
        )
    };
    Decision { topic: "labels".into(), choice: format!("{} classes: {}", labels.len(), labels.summary()), reason }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;
    use voxplan_volumes::LabelSource;

    #[test]
    fn the_decision_names_the_classes_and_the_mapping() {
        let brats = [(0, "background"), (1, "necrosis"), (2, "edema"), (4, "enhancing")].map(|(v, n)| (v, n.into()));
        let d = label_decision(&LabelSpace::new(brats, LabelSource::DatasetJson, Path::new("dataset.json")).unwrap());
        assert_eq!(d.choice, "4 classes: 0 background, 1 necrosis, 2 edema, 4 enhancing");
        assert!(d.reason.contains("4→3"), "{}", d.reason);
        let plain = label_decision(&LabelSpace::consecutive(3, LabelSource::Phantom));
        assert!(plain.reason.contains("are the class indices"), "{}", plain.reason);
    }
}
