//! Who owned which partition: each instance writes, into every changelog
//! partition it owns, a record naming itself, how many instances it is one
//! of and its `cluster.generation`. The next owner of a partition (the same
//! instance restarted, or another after a rescale) fences the previous
//! owners, so that a running instance of the old count stops at its next
//! commit; one of the old count that starts again while a rolling update
//! replaces the pods finds the new count's higher generation and stops,
//! instead of processing the same partitions.
//!
//! Every start takes a `transactional.id` of its own: the instance's
//! prefix and an incarnation one higher than the last recorded. A Kafka
//! transactional id keeps its producer id across restarts, and a broker
//! that hands a read_committed reader an aborted transaction again after
//! its abort marker (noida-db 0.2.3 does) makes the reader drop every later
//! record of that producer id. So a producer id whose open transaction was
//! aborted by a kill never writes again. Because the previous owners are
//! found in the restored changelog, they are fenced after the restore; one
//! that committed in the meantime is caught by reading the changelog on
//! from where the restore ended, and the restore starts again.

use std::collections::BTreeMap;

use super::EngineError;
use super::restore::Member;
use crate::config::Config;
use crate::sink::Sink;
use crate::state::key::StateKey;
use crate::state::writer::ChangelogWriter;

/// Refuses to run if instances of another count and a higher generation
/// own this instance's partitions among `previous`, their owners as
/// restored: this one is left over from before a rescale.
pub(super) fn check_not_superseded(
    config: &Config,
    previous: &[Member],
) -> Result<(), EngineError> {
    let instances = config.cluster().instances();
    let generation = config.cluster.generation;
    match newer_owner(previous, instances, generation) {
        Some(newer) => Err(EngineError::Cluster(format!(
            "{} (one of {} instances, cluster.generation {}) owns partitions of this instance, which is one of {instances} of generation {generation}: a newer deployment runs, so this one stops",
            newer.transactional_id, newer.instances, newer.generation
        ))),
        None => Ok(()),
    }
}

/// The `transactional.id` of this start: the instance's `prefix` and an
/// incarnation one higher than the highest among `previous` (1 when none).
pub(super) fn next_transactional_id(prefix: &str, previous: &[Member]) -> String {
    let last = previous
        .iter()
        .filter_map(|m| incarnation(prefix, &m.transactional_id))
        .max()
        .unwrap_or(0);
    format!("{prefix}-{}", last + 1)
}

/// The incarnation of `id` if it is one of `prefix`'s.
fn incarnation(prefix: &str, id: &str) -> Option<u64> {
    id.strip_prefix(prefix)?.strip_prefix('-')?.parse().ok()
}

/// Takes over this instance's changelog partitions from `previous`, their
/// owners as restored, for `sink` (initialised under `me`): fences every
/// previous owner but itself, so that none can commit for these partitions
/// any more; checks that none committed to them after the restore read
/// them to `restored_to`; then records this instance as their owner, in a
/// transaction of its own.
pub(super) async fn take_over(
    config: &Config,
    sink: &Sink,
    changelog: &mut ChangelogWriter,
    previous: &[Member],
    me: &str,
    restored_to: &BTreeMap<i32, i64>,
) -> Result<(), EngineError> {
    let others = previous
        .iter()
        .filter(|m| m.transactional_id != me)
        .map(|m| m.transactional_id.clone())
        .collect();
    let fenced = crate::sink::transaction::fence_all(&config.client_config(), others)
        .await
        .map_err(EngineError::kafka(
            "fencing a previous owner of this instance's partitions",
        ))?;
    for transactional_id in fenced {
        tracing::info!(
            %transactional_id,
            "fenced a previous owner of this instance's partitions"
        );
    }
    let since = {
        let (client, group) = (config.client_config(), config.kafka.group_id.clone());
        let (topic, ends) = (config.changelog_topic(), restored_to.clone());
        tokio::task::spawn_blocking(move || {
            crate::state::reader::committed_since(&client, &group, &topic, &ends)
        })
        .await
        .map_err(|_| {
            EngineError::kafka("reading the changelog")(rdkafka::error::KafkaError::Canceled)
        })??
    };
    if since > 0 {
        return Err(EngineError::Overtaken { records: since });
    }
    let mut records = Vec::new();
    for member in previous {
        records.extend(changelog.delete(&member.key));
    }
    let instances = config.cluster().instances();
    let key = |partition| StateKey::Member {
        transactional_id: me.to_owned(),
        instances,
        partition,
    };
    records.extend(changelog.put_int_in_owned(key, config.cluster.generation));
    sink.begin().await?;
    sink.send_all(records).await?;
    sink.commit_records().await?;
    Ok(())
}

/// The owner among `previous` that makes an instance of `instances` and
/// `generation` a leftover: one of another count and a higher generation.
fn newer_owner(previous: &[Member], instances: i32, generation: i64) -> Option<&Member> {
    previous
        .iter()
        .find(|m| m.instances != instances && m.generation > generation)
}

/// Refuses to run several instances over a changelog with fewer partitions
/// than an event topic: the state of event partition `p` lives in changelog
/// partition `p`, which must be owned by the instance owning `p`.
pub(super) async fn check_changelog_width(
    config: &Config,
    changelog_partitions: i32,
) -> Result<(), EngineError> {
    if config.cluster().is_single() {
        return Ok(());
    }
    let topics = config.topics.of(config.declared.streams());
    let counts = crate::admin::partition_counts(config, &topics)
        .await
        .map_err(EngineError::kafka(
            "reading the event topics' partition counts",
        ))?;
    match counts.iter().find(|(_, n)| **n > changelog_partitions) {
        Some((topic, n)) => Err(EngineError::Cluster(format!(
            "the changelog {} has {changelog_partitions} partitions but {topic} has {n}: with several instances, event partition p keeps its state in changelog partition p; add partitions to the changelog (kafka-topics --alter --partitions {n}) before scaling out",
            config.changelog_topic()
        ))),
        None => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(id: &str, instances: i32, generation: i64) -> Member {
        Member {
            transactional_id: id.to_owned(),
            instances,
            generation,
            key: StateKey::Member {
                transactional_id: id.to_owned(),
                instances,
                partition: 3,
            },
        }
    }

    #[test]
    fn each_start_takes_the_next_incarnation_of_its_own_prefix() {
        assert_eq!(next_transactional_id("g-0-of-3", &[]), "g-0-of-3-1");
        let found = [
            member("g-0-of-3-4", 3, 0),
            member("g-0-of-3-2", 3, 0),
            // Another instance, another count, a longer count, an earlier
            // release's id without an incarnation.
            member("g-1-of-3-9", 3, 0),
            member("g-0-of-2-7", 2, 0),
            member("g-0-of-30-8", 30, 0),
            member("g-0-of-3", 3, 0),
        ];
        assert_eq!(next_transactional_id("g-0-of-3", &found), "g-0-of-3-5");
    }

    #[test]
    fn an_instance_of_the_old_count_stops_once_a_newer_deployment_owns_its_partitions() {
        // 3 → 2 by a helm upgrade (revision 4 → 5): instance 0 of 3 starts
        // again while the rolling update is under way.
        let found = [member("g-1-of-2", 2, 5)];
        assert_eq!(
            newer_owner(&found, 3, 4).map(|m| m.transactional_id.as_str()),
            Some("g-1-of-2")
        );
        // The new count takes over from the old one, and from itself.
        assert_eq!(newer_owner(&[member("g-0-of-3", 3, 4)], 2, 5), None);
        assert_eq!(newer_owner(&found, 2, 5), None);
        // Of the same count (a config change that kept it), never.
        assert_eq!(newer_owner(&[member("g-0-of-3", 3, 6)], 3, 5), None);
        // Without generations (0 everywhere), the starting one takes over.
        assert_eq!(newer_owner(&[member("g-0-of-2", 2, 0)], 3, 0), None);
    }
}
