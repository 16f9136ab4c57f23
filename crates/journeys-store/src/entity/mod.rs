//! sea-orm entities, one module per table. Private to the crate: callers see the plain record
//! types of the repositories instead.

pub(crate) mod audience;
pub(crate) mod audience_member;
pub(crate) mod catalog_event;
pub(crate) mod dedupe;
pub(crate) mod destination;
pub(crate) mod enter_once;
pub(crate) mod identity;
pub(crate) mod identity_refusal;
pub(crate) mod instance;
pub(crate) mod journey;
pub(crate) mod outbox;
pub(crate) mod profile;
pub(crate) mod source;
pub(crate) mod timeline;
pub(crate) mod timer;
pub(crate) mod watermark;
