//! Scale-out by static ownership: instance `i` of `N` owns the partitions
//! `p` with `p mod N = i`, of every event topic and of the changelog, and
//! reads them with `assign()`, never through consumer-group rebalances.
//!
//! `cluster.instances` (N) and `cluster.index` (i) say who this instance
//! is; the index defaults to the trailing number of the host name, as a
//! Kubernetes StatefulSet names its pods (`cxpulse-2` → 2). One instance
//! (N = 1) owns every partition and runs the same code.

/// This instance's place among the instances sharing the partitions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cluster {
    instances: i32,
    index: i32,
}

impl Cluster {
    /// Instance `index` of `instances` (`index` must be in `0..instances`).
    pub fn new(instances: i32, index: i32) -> Self {
        debug_assert!((0..instances).contains(&index));
        Self {
            instances: instances.max(1),
            index,
        }
    }

    /// The only instance: it owns every partition.
    pub fn single() -> Self {
        Self::new(1, 0)
    }

    /// How many instances share the partitions (N).
    pub fn instances(&self) -> i32 {
        self.instances
    }

    /// This instance's index (i).
    pub fn index(&self) -> i32 {
        self.index
    }

    /// Whether this is the only instance.
    pub fn is_single(&self) -> bool {
        self.instances == 1
    }

    /// Whether this instance owns partition `partition` (of an event topic,
    /// a repartition topic or the changelog).
    pub fn owns(&self, partition: i32) -> bool {
        partition.rem_euclid(self.instances) == self.index
    }

    /// The partitions this instance owns among `0..partitions`.
    pub fn owned(&self, partitions: i32) -> Vec<i32> {
        (0..partitions).filter(|p| self.owns(*p)).collect()
    }
}

/// The trailing number of a host name (`cxpulse-2` → 2, `worker7` → 7),
/// if it has one.
pub fn index_in_host_name(host: &str) -> Option<i64> {
    let digits = host.len() - host.trim_end_matches(|c: char| c.is_ascii_digit()).len();
    host[host.len() - digits..].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_instance_owns_every_nth_partition_from_its_index() {
        let owned: Vec<Vec<i32>> = (0..3).map(|i| Cluster::new(3, i).owned(8)).collect();
        assert_eq!(owned, vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5]]);
        assert_eq!(Cluster::single().owned(4), vec![0, 1, 2, 3]);
        assert!(Cluster::new(2, 1).owns(5) && !Cluster::new(2, 1).owns(4));
    }

    #[test]
    fn the_index_is_the_host_names_trailing_number() {
        assert_eq!(index_in_host_name("cxpulse-2"), Some(2));
        assert_eq!(index_in_host_name("prod-cxpulse-12"), Some(12));
        assert_eq!(index_in_host_name("cxpulse"), None);
        assert_eq!(index_in_host_name("a1b"), None);
        assert_eq!(index_in_host_name(""), None);
    }
}
