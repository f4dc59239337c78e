//! Watching `queries/`: which query files were added, changed or removed
//! since the last look. Files are compared by content, so Kubernetes
//! ConfigMap updates (an atomic symlink swap) are seen like any edit.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::query::list_query_files;

/// A change to the queries directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryChange {
    /// A new query file.
    Added(PathBuf),
    /// A query file whose content changed.
    Changed(PathBuf),
    /// A query file that is gone.
    Removed(PathBuf),
}

/// The query files and contents seen last.
#[derive(Debug, Default)]
pub struct QueryWatcher {
    dir: PathBuf,
    seen: BTreeMap<PathBuf, String>,
}

impl QueryWatcher {
    /// A watcher that has seen the current contents of `dir`.
    pub fn new(dir: &Path) -> Self {
        let mut watcher = Self {
            dir: dir.to_path_buf(),
            seen: BTreeMap::new(),
        };
        watcher.seen = watcher.snapshot();
        watcher
    }

    fn snapshot(&self) -> BTreeMap<PathBuf, String> {
        let Ok(files) = list_query_files(&self.dir) else {
            // A directory that is briefly missing (during a swap) is not
            // "every query removed": keep what was seen.
            return self.seen.clone();
        };
        files
            .into_iter()
            .filter_map(|path| std::fs::read_to_string(&path).ok().map(|text| (path, text)))
            .collect()
    }

    /// The changes since the last call, in file name order.
    pub fn changes(&mut self) -> Vec<QueryChange> {
        let now = self.snapshot();
        let mut changes = Vec::new();
        for (path, text) in &now {
            match self.seen.get(path) {
                None => changes.push(QueryChange::Added(path.clone())),
                Some(old) if old != text => changes.push(QueryChange::Changed(path.clone())),
                Some(_) => {}
            }
        }
        for path in self.seen.keys() {
            if !now.contains_key(path) {
                changes.push(QueryChange::Removed(path.clone()));
            }
        }
        self.seen = now;
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reports_added_changed_and_removed_files() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.sql");
        let b = dir.path().join("b.sql");
        std::fs::write(&a, "SELECT 1").expect("write");
        let mut watcher = QueryWatcher::new(dir.path());
        assert_eq!(watcher.changes(), vec![]);
        std::fs::write(&b, "SELECT 2").expect("write");
        std::fs::write(&a, "SELECT 3").expect("write");
        std::fs::write(dir.path().join("notes.txt"), "not a query").expect("write");
        assert_eq!(
            watcher.changes(),
            vec![
                QueryChange::Changed(a.clone()),
                QueryChange::Added(b.clone())
            ]
        );
        std::fs::remove_file(&a).expect("remove");
        assert_eq!(watcher.changes(), vec![QueryChange::Removed(a)]);
        assert_eq!(watcher.changes(), vec![]);
    }
}
