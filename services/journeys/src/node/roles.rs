//! [`Role`] and [`Roles`]: which parts of Journeys one process runs.

use std::fmt;

use journeys_runtime::config::Service;

/// One part of Journeys that a node can run. Any set of roles runs over one store; a role that
/// is not run here runs in another process over the same store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, clap::ValueEnum)]
pub enum Role {
    /// Journey CRUD, validation and publishing, destinations, audiences, sources, catalog,
    /// profiles and instances over gRPC.
    ControlPlane,
    /// Event ingestion over gRPC and the Segment-compatible HTTP API, evaluated by the engine.
    DataPlane,
    /// Durable timers (delays, hold-until timeouts) and the housekeeping jobs.
    Scheduler,
    /// The outbox dispatcher: delivers the sends that committed transitions queued.
    Delivery,
}

impl Role {
    /// Every role, in the order they are listed.
    pub const ALL: [Role; 4] = [
        Role::ControlPlane,
        Role::DataPlane,
        Role::Scheduler,
        Role::Delivery,
    ];

    /// The name used on the command line (`--roles control-plane,…`).
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            Role::ControlPlane => "control-plane",
            Role::DataPlane => "data-plane",
            Role::Scheduler => "scheduler",
            Role::Delivery => "delivery",
        }
    }

    fn bit(self) -> u8 {
        match self {
            Role::ControlPlane => 1,
            Role::DataPlane => 2,
            Role::Scheduler => 4,
            Role::Delivery => 8,
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Role`]s. `Copy`, so the node can ask "does it run X" anywhere without borrowing.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Roles(u8);

impl Roles {
    /// Every role: `journeys dev`, and `journeys serve` without `--roles`.
    pub const ALL: Roles = Roles(1 | 2 | 4 | 8);

    /// What the process `service` runs: `journeys-control-plane` the control plane;
    /// `journeys-data-plane` the data plane with delivery (sends go out from where they are
    /// committed); `journeys-scheduler` the scheduler with delivery (sends produced by timers
    /// go out at once); `journeys dev` and `journeys serve` every role.
    #[must_use]
    pub fn of_service(service: Service) -> Roles {
        match service {
            Service::ControlPlane => Roles::of(&[Role::ControlPlane]),
            Service::DataPlane => Roles::of(&[Role::DataPlane, Role::Delivery]),
            Service::Scheduler => Roles::of(&[Role::Scheduler, Role::Delivery]),
            Service::Dev | Service::Node => Roles::ALL,
        }
    }

    /// The roles in `roles` (duplicates are harmless).
    #[must_use]
    pub fn of(roles: &[Role]) -> Roles {
        Roles(roles.iter().fold(0, |bits, role| bits | role.bit()))
    }

    /// Whether `role` is in the set.
    #[must_use]
    pub fn contains(self, role: Role) -> bool {
        self.0 & role.bit() != 0
    }

    /// The roles in the set, in [`Role::ALL`] order.
    pub fn iter(self) -> impl Iterator<Item = Role> {
        Role::ALL
            .into_iter()
            .filter(move |role| self.contains(*role))
    }

    /// Whether the set is empty.
    #[must_use]
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }
}

impl FromIterator<Role> for Roles {
    fn from_iter<I: IntoIterator<Item = Role>>(iter: I) -> Roles {
        Roles(iter.into_iter().fold(0, |bits, role| bits | role.bit()))
    }
}

/// `control-plane,data-plane`: the form `--roles` takes.
impl fmt::Display for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, role) in self.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            f.write_str(role.name())?;
        }
        Ok(())
    }
}

impl fmt::Debug for Roles {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

#[cfg(test)]
mod tests {
    use clap::ValueEnum as _;

    use super::*;

    #[test]
    fn a_set_holds_what_it_was_built_from() {
        let roles = Roles::of(&[Role::Scheduler, Role::Delivery, Role::Scheduler]);
        assert!(roles.contains(Role::Scheduler) && roles.contains(Role::Delivery));
        assert!(!roles.contains(Role::DataPlane) && !roles.contains(Role::ControlPlane));
        assert_eq!(roles.to_string(), "scheduler,delivery");
        assert_eq!(Roles::ALL, Role::ALL.into_iter().collect());
        assert!(Roles::default().is_empty());
    }

    #[test]
    fn command_line_names_match_the_display_names() {
        for role in Role::ALL {
            let parsed = Role::from_str(role.name(), false).expect("parses");
            assert_eq!(parsed, role);
        }
    }
}
