//! Where a source's columns are in a JSON object: at top-level keys, or at
//! paths into nested objects (`$.device.os`).

/// What one key of an object holds.
#[derive(Debug, Clone, PartialEq)]
pub enum Slot {
    /// The value of column `i`.
    Column(usize),
    /// An object holding more columns.
    Object(Layout),
}

/// The keys of one JSON object that hold columns, in column order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Layout(Vec<(String, Slot)>);

impl Layout {
    /// No keys at all.
    pub const EMPTY: Layout = Layout(Vec::new());

    /// The layout of columns found at `paths` (column `i` at `paths[i]`,
    /// each path a list of keys, outermost first). Where two paths
    /// disagree (one column at `a`, another at `a.b`), the first wins.
    pub fn new(paths: &[Vec<String>]) -> Layout {
        let mut layout = Layout::default();
        for (column, path) in paths.iter().enumerate() {
            layout.insert(path, column);
        }
        layout
    }

    fn insert(&mut self, path: &[String], column: usize) {
        let Some((key, rest)) = path.split_first() else {
            return;
        };
        let existing = self.0.iter_mut().find(|(k, _)| k == key);
        match (existing, rest.is_empty()) {
            (None, true) => self.0.push((key.clone(), Slot::Column(column))),
            (None, false) => {
                let mut inner = Layout::default();
                inner.insert(rest, column);
                self.0.push((key.clone(), Slot::Object(inner)));
            }
            (Some((_, Slot::Object(inner))), false) => inner.insert(rest, column),
            (Some(_), _) => {}
        }
    }

    /// What `key` holds, if anything.
    #[inline]
    pub fn get(&self, key: &str) -> Option<&Slot> {
        self.find_from(key, 0).map(|(_, slot)| slot)
    }

    /// Where `key` is and what it holds, looking from position `hint` on
    /// (then from the start): objects of one source mostly list their keys
    /// in the same order, so the key after the last one found is tried
    /// first.
    #[inline]
    pub fn find_from(&self, key: &str, hint: usize) -> Option<(usize, &Slot)> {
        let start = hint.min(self.0.len());
        (start..self.0.len())
            .chain(0..start)
            .find(|&i| self.0[i].0 == key)
            .map(|i| (i, &self.0[i].1))
    }
}

/// The keys of a column's `path` (`$.device.os` → `device`, `os`), or
/// its name alone.
pub fn path_keys(name: &str, path: Option<&str>) -> Vec<String> {
    match path.and_then(|p| p.strip_prefix("$.")) {
        Some(keys) => keys.split('.').map(str::to_owned).collect(),
        None => vec![name.to_owned()],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nested_paths_share_their_objects() {
        let paths = vec![
            path_keys("id", None),
            path_keys("os", Some("$.device.os")),
            path_keys("model", Some("$.device.model")),
        ];
        let layout = Layout::new(&paths);
        assert_eq!(layout.get("id"), Some(&Slot::Column(0)));
        let Some(Slot::Object(device)) = layout.get("device") else {
            panic!("device is an object: {layout:?}")
        };
        assert_eq!(
            (device.get("os"), device.get("model")),
            (Some(&Slot::Column(1)), Some(&Slot::Column(2)))
        );
        assert_eq!(layout.get("os"), None);
        assert_eq!(layout.find_from("id", 1), Some((0, &Slot::Column(0))));
        assert_eq!(layout.find_from("device", 1).map(|(i, _)| i), Some(1));
        assert_eq!(layout.find_from("device", 7).map(|(i, _)| i), Some(1));
    }
}
