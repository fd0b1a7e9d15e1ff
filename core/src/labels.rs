//! Labels: validation and containerd's field-mask update rules.

use std::collections::BTreeMap;

use crate::{Error, Result};

/// The largest key plus value containerd accepts for one label.
pub const MAX_LABEL_SIZE: usize = 4096;

/// A label map; ordered so listings and stored bytes are deterministic.
pub type Labels = BTreeMap<String, String>;

/// Checks every label's size and that keys are non-empty.
pub fn validate(labels: &Labels) -> Result<()> {
    for (k, v) in labels {
        if k.is_empty() {
            return Err(Error::invalid_argument("label key must not be empty"));
        }
        if k.len() + v.len() > MAX_LABEL_SIZE {
            return Err(Error::invalid_argument(format!(
                "label key and value greater than maximum size ({MAX_LABEL_SIZE} bytes), key: {:.64}",
                k
            )));
        }
    }
    Ok(())
}

/// Applies a label update under a field mask, as containerd does:
/// - no paths: replace all labels;
/// - `labels`: replace all labels;
/// - `labels.<key>`: set that key from `update`, or delete it when absent or empty there.
///
/// Paths other than labels are returned for the caller to handle; an unknown path is the caller's
/// InvalidArgument.
pub fn apply_mask<'p>(current: &mut Labels, update: &Labels, paths: &'p [String]) -> Vec<&'p str> {
    let mut others = Vec::new();
    if paths.is_empty() {
        *current = update.clone();
        return others;
    }
    for path in paths {
        if path == "labels" {
            *current = update.clone();
        } else if let Some(key) = path.strip_prefix("labels.") {
            match update.get(key) {
                Some(v) if !v.is_empty() => {
                    current.insert(key.to_owned(), v.clone());
                }
                _ => {
                    current.remove(key);
                }
            }
        } else {
            others.push(path.as_str());
        }
    }
    others
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn mask_rules() {
        let mut cur = l(&[("a", "1"), ("b", "2")]);
        let paths = ["labels.a".into(), "labels.b".into(), "size".into()];
        let others = apply_mask(&mut cur, &l(&[("a", "9"), ("c", "3")]), &paths);
        assert_eq!(cur, l(&[("a", "9")]));
        assert_eq!(others, vec!["size"]);

        let mut cur = l(&[("a", "1")]);
        apply_mask(&mut cur, &l(&[("z", "1")]), &[]);
        assert_eq!(cur, l(&[("z", "1")]));
    }

    #[test]
    fn size_limit() {
        assert!(validate(&l(&[("k", &"v".repeat(4095))])).is_ok());
        assert!(validate(&l(&[("k", &"v".repeat(4096))])).is_err());
        assert!(validate(&l(&[("", "v")])).is_err());
    }
}
