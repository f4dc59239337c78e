//! The instances of a cluster as the changelog records them: instance 0
//! fences the transactional ids of instances a rescale removed, and the
//! changelog must be wide enough for every partition's state to stay with
//! its owner.

use super::EngineError;
use crate::cluster::Cluster;
use crate::config::Config;
use crate::sink::OutRecord;
use crate::state::key::StateKey;
use crate::state::writer::ChangelogWriter;

/// Fences every transactional id of `previous` (the instances last
/// started) that the instances now configured do not use, so that no open
/// transaction of a removed instance holds the topics back, and returns the
/// records that make the changelog name the instances now configured.
/// Instance 0 does this: it owns changelog partition 0, where they live.
pub(super) async fn fence_departed(
    config: &Config,
    changelog: &mut ChangelogWriter,
    previous: &[String],
) -> Result<Vec<OutRecord>, EngineError> {
    let instances = config.cluster().instances();
    let current: Vec<String> = (0..instances)
        .map(|i| config.transactional_id_of(Cluster::new(instances, i)))
        .collect();
    let mut records = Vec::new();
    for id in previous.iter().filter(|id| !current.contains(id)) {
        crate::sink::transaction::fence(&config.client_config(), id)
            .await
            .map_err(EngineError::kafka(
                "fencing the transactional id of a removed instance",
            ))?;
        tracing::info!(transactional_id = %id, "fenced the transactional id of an instance the configuration no longer has");
        records.extend(changelog.delete(&StateKey::Member {
            transactional_id: id.clone(),
        }));
    }
    for id in current {
        let key = StateKey::Member {
            transactional_id: id,
        };
        records.extend(changelog.put_int(key, i64::from(instances)));
    }
    Ok(records)
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
