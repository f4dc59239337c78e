//! Who owned which partition: each instance writes, into every changelog
//! partition it owns, a record naming itself and how many instances it is
//! one of. The next owner of a partition (the same instance restarted, or
//! another after a rescale) fences the previous owners, and an instance of
//! an older set of instances (still running while a rescale replaces the
//! pods one by one) that finds a newer set's record stops instead of
//! processing the same partitions.

use super::EngineError;
use super::restore::Member;
use crate::config::Config;
use crate::sink::Sink;
use crate::state::key::StateKey;
use crate::state::writer::ChangelogWriter;

/// Takes over this instance's changelog partitions from `previous`, their
/// owners as restored: refuses to run if an instance of another count took
/// them after this one last did (a newer set of instances runs), records
/// this instance as their owner in a transaction of its own, then fences
/// every previous owner but itself, so that none can commit for these
/// partitions any more. `started_at`: this start (ms).
pub(super) async fn take_over(
    config: &Config,
    sink: &Sink,
    changelog: &mut ChangelogWriter,
    previous: &[Member],
    started_at: i64,
) -> Result<(), EngineError> {
    let me = config.transactional_id();
    let instances = config.cluster().instances();
    if let Some(newer) = newer_owner(previous, &me, instances) {
        return Err(EngineError::Cluster(format!(
            "{} (one of {} instances) took partitions of this instance at {}, after this one last started: a newer set of instances runs, so this one (configured with cluster.instances = {instances}) stops; set cluster.instances to {} to join it",
            newer.transactional_id,
            newer.instances,
            crate::sink::format_timestamp_millis(newer.started_at),
            newer.instances
        )));
    }
    let mut records = Vec::new();
    for member in previous {
        records.extend(changelog.delete(&member.key));
    }
    for partition in changelog.owned().to_vec() {
        let key = StateKey::Member {
            transactional_id: me.clone(),
            instances,
            partition,
        };
        records.extend(changelog.put_int(key, started_at));
    }
    sink.begin().await?;
    sink.send_all(records).await?;
    sink.commit_records().await?;
    let mut fenced = std::collections::BTreeSet::new();
    for member in previous.iter().filter(|m| m.transactional_id != me) {
        if !fenced.insert(member.transactional_id.as_str()) {
            continue;
        }
        crate::sink::transaction::fence(&config.client_config(), &member.transactional_id)
            .await
            .map_err(EngineError::kafka("fencing a previous owner of this instance's partitions"))?;
        tracing::info!(
            transactional_id = %member.transactional_id,
            of = member.instances,
            "fenced a previous owner of this instance's partitions"
        );
    }
    Ok(())
}

/// The owner among `previous` that makes instance `me` (one of
/// `instances`) stale: one of another count that took a partition after
/// `me` last started. An instance that never owned these partitions (or
/// whose records a newer owner deleted) takes them over.
fn newer_owner<'a>(previous: &'a [Member], me: &str, instances: i32) -> Option<&'a Member> {
    let since = previous
        .iter()
        .filter(|m| m.transactional_id == me)
        .map(|m| m.started_at)
        .max()?;
    previous
        .iter()
        .find(|m| m.instances != instances && m.started_at > since)
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
        .map_err(EngineError::kafka("reading the event topics' partition counts"))?;
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

    fn member(id: &str, instances: i32, started_at: i64) -> Member {
        Member {
            transactional_id: id.to_owned(),
            instances,
            started_at,
            key: StateKey::Member {
                transactional_id: id.to_owned(),
                instances,
                partition: 3,
            },
        }
    }

    #[test]
    fn an_instance_of_the_old_count_stops_once_the_new_count_took_its_partitions() {
        // 3 → 2: instance 1 of 2 took partition 3 (of instance 0 of 3) at
        // 20; instance 0 of 3, which started at 10, starts again.
        let found = [member("g-0-of-3", 3, 10), member("g-1-of-2", 2, 20)];
        assert_eq!(
            newer_owner(&found, "g-0-of-3", 3).map(|m| m.transactional_id.as_str()),
            Some("g-1-of-2")
        );
        // The new instance itself, restarted, is not stale.
        assert_eq!(newer_owner(&found[1..], "g-1-of-2", 2), None);
        // A new instance that never owned these partitions takes them over,
        // whatever their owners' start times.
        assert_eq!(newer_owner(&[member("g-0-of-2", 2, 50)], "g-0-of-3", 3), None);
        // Owners of the same count (a zombie's restarts) never stop it.
        let same = [member("g-0-of-3", 3, 10), member("g-1-of-3", 3, 20)];
        assert_eq!(newer_owner(&same, "g-0-of-3", 3), None);
        // Owners of another count that took over before it last started
        // are older: it takes over from them.
        let older = [member("g-0-of-2", 2, 5), member("g-0-of-3", 3, 10)];
        assert_eq!(newer_owner(&older, "g-0-of-3", 3), None);
    }
}
