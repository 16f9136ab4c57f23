//! Deliveries in flight, counted per destination: no destination takes more than its fair
//! share of the dispatcher's slots, so one that hangs cannot stall the others.

use std::collections::HashMap;
use std::future::Future;

use tokio::task::JoinSet;

/// Deliveries in flight, counted per destination so that no destination takes more than its
/// fair share of the slots: one that hangs must not stall the others.
pub(crate) struct InFlight {
    max_in_flight: usize,
    pub(crate) tasks: JoinSet<()>,
    /// The destination of each task, to count it down when the task ends (even by a panic).
    destination_of: HashMap<tokio::task::Id, String>,
    per_destination: HashMap<String, usize>,
}

impl InFlight {
    pub(crate) fn new(max_in_flight: usize) -> Self {
        Self {
            max_in_flight,
            tasks: JoinSet::new(),
            destination_of: HashMap::new(),
            per_destination: HashMap::new(),
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.tasks.len()
    }

    pub(crate) fn spawn(
        &mut self,
        destination_id: String,
        delivery: impl Future<Output = ()> + Send + 'static,
    ) {
        *self
            .per_destination
            .entry(destination_id.clone())
            .or_default() += 1;
        let task = self.tasks.spawn(delivery);
        self.destination_of.insert(task.id(), destination_id);
    }

    /// Counts the deliveries that ended.
    pub(crate) fn reap(&mut self) {
        while let Some(joined) = self.tasks.try_join_next_with_id() {
            self.finished(joined);
        }
    }

    pub(crate) fn finished(
        &mut self,
        joined: Result<(tokio::task::Id, ()), tokio::task::JoinError>,
    ) {
        let id = match joined {
            Ok((id, ())) => id,
            Err(err) => {
                let id = err.id();
                crate::dispatcher::log_join(Err(err));
                id
            }
        };
        let Some(destination_id) = self.destination_of.remove(&id) else {
            return;
        };
        if let Some(count) = self.per_destination.get_mut(&destination_id) {
            *count = count.saturating_sub(1);
            if *count == 0 {
                self.per_destination.remove(&destination_id);
            }
        }
    }

    /// Destinations at or over their share: their rows are not claimed this round.
    pub(crate) fn saturated(&self) -> Vec<String> {
        let share = fair_share(self.max_in_flight, self.per_destination.len());
        self.per_destination
            .iter()
            .filter(|&(_, &count)| count >= share)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub(crate) fn has_room_for(&self, destination_id: &str) -> bool {
        let count = self
            .per_destination
            .get(destination_id)
            .copied()
            .unwrap_or(0);
        let busy = self.per_destination.len() + usize::from(count == 0);
        count < fair_share(self.max_in_flight, busy)
    }
}

/// Requests one destination may have in flight while `busy` destinations have some: a quarter
/// of the slots stays free for destinations with none in flight, the rest is split evenly. So a
/// destination that hangs holds at most three quarters of the slots (less once others are
/// busy), and a healthy one always finds a slot.
fn fair_share(max_in_flight: usize, busy: usize) -> usize {
    let reserve = max_in_flight / 4;
    ((max_in_flight - reserve) / busy.max(1)).max(1)
}

#[cfg(test)]
mod tests {
    use super::fair_share;

    #[test]
    fn a_busy_destination_leaves_slots_for_the_others() {
        // Alone, a destination may use three quarters of the slots.
        assert_eq!(fair_share(64, 1), 48);
        // Each new busy destination shrinks every share; a quarter always stays free.
        assert_eq!(fair_share(64, 2), 24);
        assert_eq!(fair_share(64, 3), 16);
        assert!(
            (1..=100).all(|busy| busy * fair_share(64, busy) <= 48 || fair_share(64, busy) == 1)
        );
        // Never zero, even with more destinations than slots.
        assert_eq!(fair_share(1, 1), 1);
        assert_eq!(fair_share(4, 10), 1);
    }
}
