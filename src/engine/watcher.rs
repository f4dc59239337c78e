//! Watching `queries/`: which query files were added, changed or removed
//! since the last look. Files are compared by content, so Kubernetes
//! ConfigMap updates (an atomic symlink swap) are seen like any edit.
//!
//! A look that cannot read everything changes nothing it could not read: a
//! directory that cannot be listed, a query or view file that cannot be read
//! (a ConfigMap's `..data` link being swapped, a file being written) keep
//! what was seen before. A query file counts as removed only when it has
//! been absent on two looks in a row, so that a file that disappears for a
//! moment does not stop its job and delete its state.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use crate::query::{list_query_files, views};

/// A change to the queries directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryChange {
    /// A new query file.
    Added(PathBuf),
    /// A query file whose content changed.
    Changed(PathBuf),
    /// A query file that is gone (absent on two looks in a row).
    Removed(PathBuf),
}

/// The query files and contents seen last.
#[derive(Debug, Default)]
pub struct QueryWatcher {
    dir: PathBuf,
    views_dir: PathBuf,
    seen: BTreeMap<PathBuf, String>,
    /// Files seen before and absent on the last look: removed if they are
    /// still absent on the next.
    absent: BTreeSet<PathBuf>,
    /// Files seen before that could not be read, already logged.
    unreadable: BTreeSet<PathBuf>,
    /// Query files that do not plan (or whose job was refused): no job
    /// runs them until they change.
    invalid: BTreeSet<PathBuf>,
}

/// What one look found.
struct Look {
    /// Each readable query file's text, with the views it reads.
    texts: BTreeMap<PathBuf, String>,
    /// Query files listed but not read this time.
    unreadable: BTreeSet<PathBuf>,
}

impl QueryWatcher {
    /// A watcher that has seen the current contents of `dir` (and of the
    /// views in `views_dir`).
    pub fn new(dir: &Path, views_dir: &Path) -> Self {
        let mut watcher = Self {
            dir: dir.to_path_buf(),
            views_dir: views_dir.to_path_buf(),
            seen: BTreeMap::new(),
            absent: BTreeSet::new(),
            unreadable: BTreeSet::new(),
            invalid: BTreeSet::new(),
        };
        if let Some(look) = watcher.look() {
            watcher.seen = look.texts;
        }
        watcher
    }

    /// The files and their texts now; `None` when the directory cannot be
    /// listed (briefly missing during a swap: not "every query removed").
    fn look(&self) -> Option<Look> {
        let files = list_query_files(&self.dir).ok()?;
        // A job reading a view changes when the view does: its text is
        // compared with the views it reads. A view file that cannot be read
        // now makes every query unreadable for this look.
        let views_readable = list_query_files(&self.views_dir)
            .map(|views| views.iter().all(|v| std::fs::read(v).is_ok()))
            .unwrap_or(true);
        let (views, _) = views::load(&self.views_dir);
        let mut look = Look {
            texts: BTreeMap::new(),
            unreadable: BTreeSet::new(),
        };
        for path in files {
            match std::fs::read_to_string(&path) {
                Ok(mut text) if views_readable => {
                    for view in views::used(&text, &views).unwrap_or_default() {
                        text.push_str(&view.text);
                    }
                    look.texts.insert(path, text);
                }
                _ => {
                    look.unreadable.insert(path);
                }
            }
        }
        Some(look)
    }

    /// Marks the query file `path` invalid: it does not plan, or its job
    /// was refused.
    pub fn mark_invalid(&mut self, path: &Path) {
        self.invalid.insert(path.to_path_buf());
    }

    /// Marks the query file `path` valid again: its job runs.
    pub fn mark_valid(&mut self, path: &Path) {
        self.invalid.remove(path);
    }

    /// How many query files are invalid now.
    pub fn invalid_count(&self) -> usize {
        self.invalid.len()
    }

    /// The changes since the last call, in file name order.
    pub fn changes(&mut self) -> Vec<QueryChange> {
        let Some(look) = self.look() else {
            tracing::warn!(dir = %self.dir.display(), "the queries directory cannot be listed now; nothing changes until it can");
            return Vec::new();
        };
        let mut changes = Vec::new();
        for (path, text) in &look.texts {
            match self.seen.get(path) {
                None => changes.push(QueryChange::Added(path.clone())),
                Some(old) if old != text => changes.push(QueryChange::Changed(path.clone())),
                Some(_) => {}
            }
        }
        self.unreadable.retain(|p| look.unreadable.contains(p));
        let mut now = look.texts;
        let mut absent = BTreeSet::new();
        for (path, text) in std::mem::take(&mut self.seen) {
            if now.contains_key(&path) {
                continue;
            }
            if look.unreadable.contains(&path) {
                if self.unreadable.insert(path.clone()) {
                    tracing::warn!(path = %path.display(), "a query file cannot be read now; its job is unchanged until it can");
                }
                now.insert(path, text);
            } else if self.absent.contains(&path) {
                changes.push(QueryChange::Removed(path));
            } else {
                // Absent once: kept as it was until the next look.
                tracing::info!(path = %path.display(), "a query file is absent; its job stops if it is still absent at the next look");
                absent.insert(path.clone());
                now.insert(path, text);
            }
        }
        self.seen = now;
        self.absent = absent;
        changes
    }

    /// Makes the next look report `path` as changed if it is there (or,
    /// if it is absent, count that look as its first absence): its job runs
    /// a query the file may no longer hold.
    pub fn look_again(&mut self, path: &Path) {
        self.seen.insert(path.to_path_buf(), String::new());
    }

    /// Whether a file was absent on the last look: the next look decides
    /// whether it was removed.
    pub fn removal_pending(&self) -> bool {
        !self.absent.is_empty()
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
        let mut watcher = QueryWatcher::new(dir.path(), &views::views_dir(dir.path()));
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
        assert_eq!(watcher.changes(), vec![], "absent once: not removed yet");
        assert!(watcher.removal_pending());
        assert_eq!(watcher.changes(), vec![QueryChange::Removed(a)]);
        assert!(!watcher.removal_pending());
        assert_eq!(watcher.changes(), vec![]);
    }

    #[test]
    fn a_file_absent_for_one_look_or_unreadable_is_not_removed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = dir.path().join("a.sql");
        std::fs::write(&a, "SELECT 1").expect("write");
        let mut watcher = QueryWatcher::new(dir.path(), &views::views_dir(dir.path()));
        std::fs::remove_file(&a).expect("remove");
        assert_eq!(watcher.changes(), vec![]);
        std::fs::write(&a, "SELECT 1").expect("back");
        assert_eq!(
            watcher.changes(),
            vec![],
            "back unchanged: nothing happened"
        );
        assert!(!watcher.removal_pending());
        // A file that cannot be read (here: not UTF-8 text, as a file being
        // written can be) keeps its job as it was, however many looks it
        // lasts; once readable, it is compared as usual.
        std::fs::write(&a, [0xff, 0xfe, 0x00]).expect("write");
        for _ in 0..3 {
            assert_eq!(watcher.changes(), vec![]);
        }
        std::fs::write(&a, "SELECT 2").expect("write");
        assert_eq!(watcher.changes(), vec![QueryChange::Changed(a)]);
    }

    /// Writes `files` the way the kubelet writes a ConfigMap volume: into a
    /// timestamped folder, `..data` linked to it, each file a link through
    /// `..data`; a new version swaps the `..data` link at once.
    fn configmap_version(dir: &Path, version: &str, files: &[(&str, &str)]) {
        let folder = dir.join(version);
        std::fs::create_dir(&folder).expect("mkdir");
        for (name, text) in files {
            std::fs::write(folder.join(name), text).expect("write");
            let link = dir.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                std::os::unix::fs::symlink(Path::new("..data").join(name), &link).expect("link");
            }
        }
        let tmp = dir.join("..data_tmp");
        std::os::unix::fs::symlink(version, &tmp).expect("link");
        std::fs::rename(&tmp, dir.join("..data")).expect("swap");
    }

    #[test]
    fn a_configmap_update_is_seen_like_an_edit() {
        let dir = tempfile::tempdir().expect("tempdir");
        configmap_version(dir.path(), "..2026_12_01_v1", &[("a.sql", "SELECT 1")]);
        let mut watcher = QueryWatcher::new(dir.path(), &views::views_dir(dir.path()));
        assert_eq!(watcher.changes(), vec![]);
        configmap_version(dir.path(), "..2026_12_01_v2", &[("a.sql", "SELECT 2")]);
        assert_eq!(
            watcher.changes(),
            vec![QueryChange::Changed(dir.path().join("a.sql"))]
        );
        assert_eq!(watcher.changes(), vec![]);
    }

    #[test]
    fn a_changed_view_changes_the_queries_that_read_it_and_no_other() {
        let dir = tempfile::tempdir().expect("tempdir");
        let views = dir.path().join("views");
        std::fs::create_dir(&views).expect("mkdir");
        let view = views.join("big_tx.sql");
        std::fs::write(&view, "CREATE VIEW big_tx AS SELECT * FROM transactions").expect("write");
        let reads = dir.path().join("reads.sql");
        let other = dir.path().join("other.sql");
        std::fs::write(&reads, "SELECT * FROM big_tx").expect("write");
        std::fs::write(&other, "SELECT * FROM transactions").expect("write");
        let mut watcher = QueryWatcher::new(dir.path(), &views::views_dir(dir.path()));
        assert_eq!(watcher.changes(), vec![]);
        std::fs::write(
            &view,
            "CREATE VIEW big_tx AS SELECT * FROM transactions WHERE amount > 10",
        )
        .expect("write");
        assert_eq!(watcher.changes(), vec![QueryChange::Changed(reads)]);
        assert_eq!(watcher.changes(), vec![]);
    }
}
