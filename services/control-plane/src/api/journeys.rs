//! [`JourneyApi`]: journey definitions and their lifecycle.
//!
//! Drafts are stored only when their definition is structurally valid (every problem is
//! reported at once, with paths); references to the catalog, destinations and audiences are
//! checked by validation and enforced by publishing. Published journeys are immutable: to
//! change one, duplicate it. Archiving is final, and in exit mode ends every active instance.

use std::collections::HashSet;

use chrono::Utc;
use journeys_core::Problem;
use journeys_core::machine::Journey;
use journeys_core::model::JourneyDefinition;
use journeys_core::validate::{ValidationOptions, validate};
use journeys_engine::Engine;
use journeys_store::{
    JourneyChanges, JourneyRecord, JourneyState, JourneyStats, Page, StatsRange, Store, StoreError,
};

use crate::error::{Result, ServiceError, joined};
use crate::{fields, references};

/// A definition as read from a request: the definition (with placeholders where its shape was
/// wrong) and the shape problems found reading it.
#[derive(Debug, Clone)]
pub struct Authored {
    pub definition: JourneyDefinition,
    pub problems: Vec<Problem>,
}

/// A stored journey with its decoded definition.
#[derive(Debug, Clone)]
pub struct StoredJourney {
    pub record: JourneyRecord,
    pub definition: JourneyDefinition,
}

impl StoredJourney {
    fn decode(record: JourneyRecord) -> Result<Self> {
        let definition = record.definition()?;
        Ok(Self { record, definition })
    }

    /// The runnable journey (for previews, test sends and simulations).
    #[must_use]
    pub fn journey(&self) -> Journey {
        Journey::new(self.record.meta(), self.definition.clone())
    }
}

/// How to archive: keep active instances running to their end, or exit them now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ArchiveMode {
    Drain,
    Exit,
}

/// Journey lifecycle rules over the store's `Journeys` repository.
#[derive(Clone)]
pub struct JourneyApi {
    store: Store,
    /// Told about publishes and archives so an engine in this process sees them at once, and
    /// applies exit-mode archives.
    engine: Engine,
    validation: ValidationOptions,
}

impl JourneyApi {
    pub fn new(store: Store, engine: Engine, validation: ValidationOptions) -> Self {
        Self {
            store,
            engine,
            validation,
        }
    }

    /// The definition, or every problem found: the shape's and validation's.
    pub fn checked(&self, authored: Authored) -> Result<JourneyDefinition, Vec<Problem>> {
        let Authored {
            definition,
            mut problems,
        } = authored;
        problems.extend(validate(&definition, &self.validation));
        dedupe(&mut problems);
        if problems.is_empty() {
            Ok(definition)
        } else {
            Err(problems)
        }
    }

    /// The journey `id` (`id` names the request field when it is empty).
    pub async fn get(&self, id: &str) -> Result<StoredJourney> {
        if id.is_empty() {
            return Err(ServiceError::invalid_field("id", "required"));
        }
        StoredJourney::decode(self.store.journeys().get(id).await?)
    }

    /// Stores a new draft; `id` may be empty (a fresh id is chosen).
    pub async fn create(&self, id: &str, authored: Authored) -> Result<StoredJourney> {
        let mut problems = Vec::new();
        if !id.is_empty() {
            fields::check_id("id", id, &mut problems);
        }
        let definition = match self.checked(authored) {
            Ok(def) => Some(def),
            Err(p) => {
                problems.extend(p);
                None
            }
        };
        ServiceError::check("journey", problems)?;
        let definition = definition
            .ok_or_else(|| ServiceError::Internal("definition missing after validation".into()))?;
        let mut record = new_draft(&definition);
        if !id.is_empty() {
            id.clone_into(&mut record.id);
        }
        self.insert(record, definition).await
    }

    /// Inserts a new journey, telling apart a taken name from a taken id.
    async fn insert(
        &self,
        record: JourneyRecord,
        definition: JourneyDefinition,
    ) -> Result<StoredJourney> {
        match self.store.journeys().insert(&record).await {
            Ok(record) => Ok(StoredJourney { record, definition }),
            Err(StoreError::AlreadyExists { .. }) => {
                Err(self.taken(&record.id, &record.name).await)
            }
            Err(e) => Err(e.into()),
        }
    }

    async fn taken(&self, id: &str, name: &str) -> ServiceError {
        match self.store.journeys().get_by_name(name).await {
            Ok(_) => {
                ServiceError::AlreadyExists(format!("a journey named '{name}' already exists"))
            }
            Err(_) => {
                ServiceError::AlreadyExists(format!("a journey with id '{id}' already exists"))
            }
        }
    }

    /// Replaces a draft's definition; `revision` 0 skips the concurrency check.
    pub async fn update(
        &self,
        id: &str,
        revision: i64,
        authored: Authored,
    ) -> Result<StoredJourney> {
        let current = self
            .get(id)
            .await
            .map_err(|e| e.renaming_field("journey.id"))?
            .record;
        require_draft(&current, "edited")?;
        if revision != 0 && revision != current.revision {
            return Err(ServiceError::FailedPrecondition(format!(
                "journey '{}' is at revision {}, not {revision}: read it again and retry",
                current.id, current.revision
            )));
        }
        let definition = self
            .checked(authored)
            .map_err(|p| ServiceError::invalid("journey", p))?;
        let changes = JourneyChanges {
            name: definition.name.clone(),
            description: definition.description.clone(),
            definition: JourneyRecord::encode(&definition),
        };
        match self
            .store
            .journeys()
            .update(&current.id, current.revision, changes, Utc::now())
            .await
        {
            Ok(record) => Ok(StoredJourney { record, definition }),
            Err(StoreError::AlreadyExists { .. }) => Err(ServiceError::AlreadyExists(format!(
                "a journey named '{}' already exists",
                definition.name
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// Definition problems plus unresolved references.
    pub async fn problems(&self, definition: &JourneyDefinition) -> Result<Vec<Problem>> {
        let mut problems = validate(definition, &self.validation);
        problems.extend(references::check(&self.store, definition).await?);
        dedupe(&mut problems);
        Ok(problems)
    }

    /// Every problem of a definition from a request: its shape, then validation and
    /// references once it has a usable shape.
    pub async fn problems_of(&self, authored: Authored) -> Result<Vec<Problem>> {
        match self.checked(authored) {
            Ok(definition) => self.problems(&definition).await,
            Err(problems) => Ok(problems),
        }
    }

    /// Publishes a valid draft whose references all resolve.
    pub async fn publish(&self, id: &str) -> Result<StoredJourney> {
        let journey = self.publishable(id).await?;
        let record = self
            .store
            .journeys()
            .set_state(id, JourneyState::Published, Utc::now())
            .await?;
        self.refresh_engine().await;
        Ok(StoredJourney {
            record,
            definition: journey.definition,
        })
    }

    /// The draft `id`, when it can be published: valid, with every reference resolved.
    async fn publishable(&self, id: &str) -> Result<StoredJourney> {
        let journey = self.get(id).await?;
        check_publishable(&journey.record)?;
        let problems = self.problems(&journey.definition).await?;
        if !problems.is_empty() {
            return Err(ServiceError::FailedPrecondition(format!(
                "journey '{id}' cannot be published: {}",
                joined(&problems)
            )));
        }
        Ok(journey)
    }

    /// Publishes draft `id` in place of published journey `replaced`: in one step `id` takes
    /// the entries from then on and `replaced` is archived in `mode` (its instances drain, or
    /// exit at once). With `exclude_active` (drain mode only), a profile with an instance
    /// still active in `replaced` does not enter `id` until that instance ends.
    pub async fn publish_replacing(
        &self,
        id: &str,
        replaced: &str,
        mode: ArchiveMode,
        exclude_active: bool,
    ) -> Result<StoredJourney> {
        if replaced == id {
            return Err(ServiceError::invalid_field(
                "replaces",
                "a journey cannot replace itself",
            ));
        }
        if exclude_active && mode == ArchiveMode::Exit {
            return Err(ServiceError::invalid_field(
                "exclude_active",
                "applies to DRAIN mode only: in EXIT mode the replaced journey's instances end \
                 at once, so none stays active to exclude",
            ));
        }
        let journey = self.publishable(id).await?;
        let old = self
            .get(replaced)
            .await
            .map_err(|e| e.renaming_field("replaces"))?;
        if old.record.state != JourneyState::Published {
            return Err(ServiceError::FailedPrecondition(format!(
                "journey '{replaced}' is {}; only a published journey can be replaced",
                old.record.state.as_str().to_ascii_lowercase()
            )));
        }
        let (record, _) = match self
            .store
            .journeys()
            .replace(id, replaced, exclude_active, Utc::now())
            .await
        {
            Ok(records) => records,
            Err(StoreError::Conflict(message)) => {
                return Err(ServiceError::FailedPrecondition(format!(
                    "nothing changed: {message} (published or archived meanwhile)"
                )));
            }
            Err(e) => return Err(e.into()),
        };
        self.refresh_engine().await;
        if mode == ArchiveMode::Exit {
            let exited = self.engine.terminate_journey_instances(replaced).await?;
            tracing::info!(
                journey_id = replaced,
                replaced_by = id,
                exited,
                "replaced in exit mode"
            );
        } else {
            tracing::info!(
                journey_id = replaced,
                replaced_by = id,
                exclude_active,
                "replaced in drain mode"
            );
        }
        Ok(StoredJourney {
            record,
            definition: journey.definition,
        })
    }

    /// Makes an engine in this process see a publish or archive at once (`journeys dev`);
    /// engines in other processes see it at their next poll (within a second). The change has
    /// committed either way, so a failed refresh is only logged.
    async fn refresh_engine(&self) {
        if let Err(error) = self.engine.refresh_now().await {
            tracing::warn!(%error, "journey cache refresh failed; the next poll will retry");
        }
    }

    /// Archives a published journey (archiving an archived one is a no-op).
    pub async fn archive(&self, id: &str, mode: ArchiveMode) -> Result<StoredJourney> {
        let journey = self.get(id).await?;
        if !check_archivable(&journey.record)? {
            return Ok(journey);
        }
        let record = self
            .store
            .journeys()
            .set_state(id, JourneyState::Archived, Utc::now())
            .await?;
        self.refresh_engine().await;
        if mode == ArchiveMode::Exit {
            let exited = self.engine.terminate_journey_instances(id).await?;
            tracing::info!(journey_id = id, exited, "archived in exit mode");
        }
        Ok(StoredJourney {
            record,
            definition: journey.definition,
        })
    }

    /// A new draft with the definition of journey `id`, named `name` or "`<name> (copy)`".
    pub async fn duplicate(&self, id: &str, name: &str) -> Result<StoredJourney> {
        let mut definition = self.get(id).await?.definition;
        if name.is_empty() {
            definition.name = self.copy_name(&definition.name).await?;
        } else {
            let mut problems = Vec::new();
            fields::check_name("name", name, &mut problems);
            ServiceError::check("duplicate request", problems)?;
            name.clone_into(&mut definition.name);
        }
        self.insert(new_draft(&definition), definition).await
    }

    /// `<name> (copy)`, `<name> (copy 2)`, … — the first free one, within the name limit.
    async fn copy_name(&self, original: &str) -> Result<String> {
        for n in 1..100 {
            let candidate = copy_name_candidate(original, n);
            match self.store.journeys().get_by_name(&candidate).await {
                Err(StoreError::NotFound { .. }) => return Ok(candidate),
                Err(e) => return Err(e.into()),
                Ok(_) => {}
            }
        }
        Err(ServiceError::AlreadyExists(
            "no free copy name; pass `name`".to_owned(),
        ))
    }

    /// One page of journeys, optionally in one state.
    pub async fn list(
        &self,
        state: Option<JourneyState>,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<StoredJourney>> {
        let page = self
            .store
            .journeys()
            .list(state, page_size, Some(page_token))
            .await?;
        Ok(Page {
            items: page
                .items
                .into_iter()
                .map(StoredJourney::decode)
                .collect::<Result<_>>()?,
            next_token: page.next_token,
        })
    }

    /// Deletes a draft.
    pub async fn delete(&self, id: &str) -> Result<()> {
        let journey = self.get(id).await?;
        require_draft(&journey.record, "deleted")?;
        Ok(self.store.journeys().delete(id).await?)
    }

    /// The journey and the store's counts for it over `range`, by the hour when `hourly`.
    pub async fn stats(
        &self,
        id: &str,
        range: &StatsRange,
        hourly: bool,
    ) -> Result<(StoredJourney, JourneyStats)> {
        let journey = self.get(id).await?;
        let counts = self
            .store
            .batches()
            .journey_stats_in(&journey.record.id, range, hourly)
            .await?;
        Ok((journey, counts))
    }
}

fn new_draft(definition: &JourneyDefinition) -> JourneyRecord {
    JourneyRecord::new_draft(
        definition.name.clone(),
        definition.description.clone(),
        JourneyRecord::encode(definition),
        Utc::now(),
    )
}

fn require_draft(record: &JourneyRecord, verb: &str) -> Result<()> {
    match record.state {
        JourneyState::Draft => Ok(()),
        state => Err(ServiceError::FailedPrecondition(format!(
            "journey '{}' is {}; only drafts can be {verb} (duplicate it to make changes)",
            record.id,
            state.as_str().to_ascii_lowercase()
        ))),
    }
}

/// Only drafts are published.
fn check_publishable(record: &JourneyRecord) -> Result<()> {
    let id = &record.id;
    match record.state {
        JourneyState::Draft => Ok(()),
        JourneyState::Published => Err(ServiceError::FailedPrecondition(format!(
            "journey '{id}' is already published"
        ))),
        JourneyState::Archived => Err(ServiceError::FailedPrecondition(format!(
            "journey '{id}' is archived; duplicate it to publish a new version"
        ))),
    }
}

/// Whether archiving has anything to do: published journeys are archived, archived ones are
/// left as they are, drafts are refused.
fn check_archivable(record: &JourneyRecord) -> Result<bool> {
    match record.state {
        JourneyState::Draft => Err(ServiceError::FailedPrecondition(format!(
            "journey '{}' is a draft; only published journeys can be archived (delete the \
             draft instead)",
            record.id
        ))),
        JourneyState::Archived => Ok(false),
        JourneyState::Published => Ok(true),
    }
}

/// The `n`th copy name of `original`, shortened to fit the name limit.
fn copy_name_candidate(original: &str, n: u32) -> String {
    let suffix = if n == 1 {
        " (copy)".to_owned()
    } else {
        format!(" (copy {n})")
    };
    let keep = fields::MAX_NAME_CHARS.saturating_sub(suffix.chars().count());
    original.chars().take(keep).chain(suffix.chars()).collect()
}

/// Keeps the first problem reported for each path: conversion and validation may both notice
/// one fault, and a user needs it once.
fn dedupe(problems: &mut Vec<Problem>) {
    let mut seen = HashSet::new();
    problems.retain(|p| seen.insert(p.path.clone()));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(state: JourneyState) -> JourneyRecord {
        let mut record = JourneyRecord::new_draft("Welcome", "", serde_json::json!({}), Utc::now());
        record.id = "j1".to_owned();
        record.state = state;
        record
    }

    fn precondition(result: Result<impl std::fmt::Debug>) -> String {
        match result {
            Err(ServiceError::FailedPrecondition(message)) => message,
            other => panic!("expected FAILED_PRECONDITION, got {other:?}"),
        }
    }

    #[test]
    fn only_drafts_publish() {
        assert!(check_publishable(&record(JourneyState::Draft)).is_ok());
        assert_eq!(
            precondition(check_publishable(&record(JourneyState::Published))),
            "journey 'j1' is already published"
        );
        assert_eq!(
            precondition(check_publishable(&record(JourneyState::Archived))),
            "journey 'j1' is archived; duplicate it to publish a new version"
        );
    }

    #[test]
    fn only_published_journeys_archive_and_archiving_twice_is_a_no_op() {
        assert!(check_archivable(&record(JourneyState::Published)).unwrap());
        assert!(!check_archivable(&record(JourneyState::Archived)).unwrap());
        assert!(
            precondition(check_archivable(&record(JourneyState::Draft)))
                .contains("only published journeys can be archived")
        );
    }

    #[test]
    fn only_drafts_change() {
        assert!(require_draft(&record(JourneyState::Draft), "edited").is_ok());
        assert_eq!(
            precondition(require_draft(&record(JourneyState::Published), "edited")),
            "journey 'j1' is published; only drafts can be edited (duplicate it to make changes)"
        );
        assert!(
            precondition(require_draft(&record(JourneyState::Archived), "deleted"))
                .contains("is archived; only drafts can be deleted")
        );
    }

    #[test]
    fn copy_names_fit_the_limit() {
        assert_eq!(copy_name_candidate("Welcome", 1), "Welcome (copy)");
        assert_eq!(copy_name_candidate("Welcome", 3), "Welcome (copy 3)");
        let long = "x".repeat(fields::MAX_NAME_CHARS);
        let copy = copy_name_candidate(&long, 12);
        assert_eq!(copy.chars().count(), fields::MAX_NAME_CHARS);
        assert!(copy.ends_with(" (copy 12)"));
    }

    #[test]
    fn each_path_is_reported_once() {
        let mut problems = vec![
            Problem::new("steps[0].delay", "required"),
            Problem::new("name", "required"),
            Problem::new("steps[0].delay", "must be positive"),
        ];
        dedupe(&mut problems);
        assert_eq!(problems.len(), 2);
        assert_eq!(problems[0].message, "required");
    }
}
