//! [`CatalogApi`]: the event names seen (or registered), which journeys may use.

use journeys_store::{CatalogEventRecord, MAX_KEY_CHARS, Store};

use crate::error::{Result, ServiceError};

/// Catalog rules over the store's `Catalog` repository.
#[derive(Clone)]
pub struct CatalogApi {
    store: Store,
}

impl CatalogApi {
    pub fn new(store: Store) -> Self {
        Self { store }
    }

    /// Every known event.
    pub async fn list(&self) -> Result<Vec<CatalogEventRecord>> {
        Ok(self.store.catalog().list().await?)
    }

    /// Registers an event name before it is first sent.
    pub async fn register(&self, name: &str) -> Result<CatalogEventRecord> {
        check_event_name(name)?;
        Ok(self.store.catalog().register(name).await?)
    }
}

/// A non-blank name the store can index (it is a key in the catalog and in journey context).
fn check_event_name(name: &str) -> Result<()> {
    if name.trim().is_empty() {
        return Err(ServiceError::invalid_field("name", "required"));
    }
    if name.chars().count() > MAX_KEY_CHARS {
        return Err(ServiceError::invalid_field(
            "name",
            format!("at most {MAX_KEY_CHARS} characters"),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_names_are_non_blank_and_indexable() {
        assert!(check_event_name("Order Completed").is_ok());
        assert!(check_event_name(&"é".repeat(MAX_KEY_CHARS)).is_ok());
        for bad in ["", "  ", &"x".repeat(MAX_KEY_CHARS + 1)] {
            assert!(
                matches!(check_event_name(bad), Err(ServiceError::Invalid { .. })),
                "{bad:?}"
            );
        }
    }
}
