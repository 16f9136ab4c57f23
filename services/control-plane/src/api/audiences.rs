//! [`AudienceApi`]: named, keyed sets of profiles.

use chrono::Utc;
use journeys_core::Problem;
use journeys_engine::Engine;
use journeys_store::{AudienceRecord, Page, Store, StoreError};

use crate::error::{Result, ServiceError};
use crate::fields;

/// Most user ids accepted by one AddMembers / RemoveMembers call.
pub const MAX_MEMBERS_PER_CALL: usize = 10_000;

/// Audience rules over the store's `Audiences` repository.
#[derive(Clone)]
pub struct AudienceApi {
    store: Store,
    /// Told which profiles' memberships changed, so an owner reads them again.
    engine: Engine,
}

impl AudienceApi {
    pub fn new(store: Store, engine: Engine) -> Self {
        Self { store, engine }
    }

    /// Creates an audience.
    pub async fn create(&self, key: &str, name: &str) -> Result<AudienceRecord> {
        let mut problems = Vec::new();
        check_key(key, &mut problems);
        fields::check_name("name", name, &mut problems);
        ServiceError::check("audience", problems)?;
        match self.store.audiences().insert(key, name, Utc::now()).await {
            Ok(a) => Ok(a),
            Err(StoreError::AlreadyExists { .. }) => Err(ServiceError::AlreadyExists(format!(
                "an audience with key '{key}' already exists"
            ))),
            Err(e) => Err(e.into()),
        }
    }

    /// The audience `key`.
    pub async fn get(&self, key: &str) -> Result<AudienceRecord> {
        if key.is_empty() {
            return Err(ServiceError::invalid_field("key", "required"));
        }
        Ok(self.store.audiences().get(key).await?)
    }

    /// The audience `key`, refused when archived.
    async fn active(&self, key: &str) -> Result<AudienceRecord> {
        let audience = self.get(key).await?;
        if !audience.active {
            return Err(ServiceError::FailedPrecondition(format!(
                "audience '{key}' is archived"
            )));
        }
        Ok(audience)
    }

    /// One page of audiences.
    pub async fn list(&self, page_size: u32, page_token: &str) -> Result<Page<AudienceRecord>> {
        Ok(self
            .store
            .audiences()
            .list(page_size, Some(page_token))
            .await?)
    }

    /// Archives an audience: it keeps its members but takes no new ones.
    pub async fn archive(&self, key: &str) -> Result<AudienceRecord> {
        self.get(key).await?;
        Ok(self.store.audiences().archive(key, Utc::now()).await?)
    }

    /// Adds members to an active audience; returns how many were new.
    pub async fn add_members(&self, key: &str, user_ids: &[String]) -> Result<u64> {
        self.active(key).await?;
        check_user_ids(user_ids)?;
        let added = self
            .store
            .audiences()
            .add_members(key, user_ids, Utc::now())
            .await?;
        self.engine.forget_profiles(user_ids).await;
        Ok(added)
    }

    /// Removes members; returns how many were members.
    pub async fn remove_members(&self, key: &str, user_ids: &[String]) -> Result<u64> {
        self.get(key).await?;
        check_user_ids(user_ids)?;
        let removed = self.store.audiences().remove_members(key, user_ids).await?;
        self.engine.forget_profiles(user_ids).await;
        Ok(removed)
    }

    /// One page of member user ids; the audience is checked before the page size.
    pub async fn members(
        &self,
        key: &str,
        page_size: i32,
        page_token: &str,
    ) -> Result<Page<String>> {
        self.get(key).await?;
        let page_size = fields::page_size(page_size)?;
        Ok(self
            .store
            .audiences()
            .list_members(key, page_size, Some(page_token))
            .await?)
    }

    /// Whether `user_id` is a member of `key`.
    pub async fn is_member(&self, key: &str, user_id: &str) -> Result<bool> {
        self.get(key).await?;
        if user_id.is_empty() {
            return Err(ServiceError::invalid_field("user_id", "required"));
        }
        Ok(self.store.audiences().is_member(key, user_id).await?)
    }
}

/// Audience keys double as boolean trait names, so they follow the step-key alphabet.
fn check_key(key: &str, problems: &mut Vec<Problem>) {
    if !journeys_core::validate::is_valid_step_key(key) {
        problems.push(Problem::new(
            "key",
            format!("'{key}' is not a valid audience key: use 1-64 of a-z, 0-9 and '_'"),
        ));
    }
}

/// How many member-id problems one answer lists.
const MAX_LISTED_PROBLEMS: usize = 20;

fn check_user_ids(user_ids: &[String]) -> Result<()> {
    let mut problems = Vec::new();
    if user_ids.is_empty() {
        problems.push(Problem::new("user_ids", "at least one user id is required"));
    }
    if user_ids.len() > MAX_MEMBERS_PER_CALL {
        problems.push(Problem::new(
            "user_ids",
            format!("at most {MAX_MEMBERS_PER_CALL} per call"),
        ));
    }
    // Each id is checked; the first few problems are listed.
    for (i, id) in user_ids.iter().enumerate() {
        if problems.len() >= MAX_LISTED_PROBLEMS {
            break;
        }
        if id.is_empty() {
            problems.push(Problem::new(format!("user_ids[{i}]"), "must not be empty"));
        }
        let chars = id.chars().count();
        if chars > journeys_store::MAX_KEY_CHARS {
            // Ingestion refuses such a user id: the member could never match a profile.
            problems.push(Problem::new(
                format!("user_ids[{i}]"),
                format!(
                    "is {chars} characters long, at most {} allowed",
                    journeys_store::MAX_KEY_CHARS
                ),
            ));
        }
    }
    ServiceError::check("request", problems)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn member_lists_are_bounded_and_non_empty() {
        assert!(check_user_ids(&["u1".to_owned()]).is_ok());
        let long = "m".repeat(journeys_store::MAX_KEY_CHARS + 1);
        let err = check_user_ids(&["u1".to_owned(), long]).expect_err("too long");
        assert!(
            err.to_string()
                .contains("user_ids[1]: is 192 characters long, at most 191"),
            "{err}"
        );
        let Err(ServiceError::Invalid { problems, .. }) = check_user_ids(&[]) else {
            panic!("an empty list must be refused");
        };
        assert_eq!(problems[0].path, "user_ids");
        let Err(ServiceError::Invalid { problems, .. }) =
            check_user_ids(&["u1".to_owned(), String::new()])
        else {
            panic!("an empty id must be refused");
        };
        assert_eq!(problems[0].path, "user_ids[1]");
        assert!(check_user_ids(&vec!["u".to_owned(); MAX_MEMBERS_PER_CALL + 1]).is_err());
    }
}
