//! [`InstanceApi`]: journey instances, their timelines, and operator exits.

use journeys_core::machine::ExitReason;
use journeys_engine::{Engine, TerminateOutcome};
use journeys_store::{InstanceDetail, InstanceFilter, InstanceRecord, Page, Store};

use crate::error::{Result, ServiceError};

/// Instance reads over the store's `Instances` repository; exits through the engine, so they
/// take the same state machine and transaction shape as events and timers.
#[derive(Clone)]
pub struct InstanceApi {
    store: Store,
    engine: Engine,
}

impl InstanceApi {
    pub fn new(store: Store, engine: Engine) -> Self {
        Self { store, engine }
    }

    /// One page of instances matching `filter`.
    pub async fn list(
        &self,
        filter: &InstanceFilter,
        page_size: u32,
        page_token: &str,
    ) -> Result<Page<InstanceRecord>> {
        Ok(self
            .store
            .instances()
            .list(filter, page_size, Some(page_token))
            .await?)
    }

    /// The instance `id` with its timeline.
    pub async fn get(&self, id: &str) -> Result<InstanceDetail> {
        if id.is_empty() {
            return Err(ServiceError::invalid_field("id", "required"));
        }
        Ok(self.store.instances().get(id).await?)
    }

    /// Ends an active instance as an operator exit; returns it afterwards.
    pub async fn exit(&self, id: &str) -> Result<InstanceDetail> {
        if id.is_empty() {
            return Err(ServiceError::invalid_field("id", "required"));
        }
        match self
            .engine
            .terminate_instance(id, ExitReason::Operator)
            .await?
        {
            TerminateOutcome::Exited => self.get(id).await,
            // An instance that started and ended in one batch has no instance row, only its
            // timeline: it exists, and has ended. Otherwise the store's NOT_FOUND stands.
            TerminateOutcome::NotFound => {
                self.get(id).await?;
                Err(ended(id))
            }
            TerminateOutcome::NotActive => Err(ended(id)),
        }
    }
}

fn ended(id: &str) -> ServiceError {
    ServiceError::FailedPrecondition(format!("instance '{id}' has already ended"))
}
