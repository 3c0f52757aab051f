//! Quick drops in a row, and what they mean once there are enough: tether
//! refusing the same unreadable packet each time (the broker redelivers it
//! on every reconnect), or the hub closing the connection (another client
//! with our device id: a hub allows one connection per device).

use super::QUICK_DROPS_TO_WARN;

/// Connections in a row that died soon after CONNACK.
#[derive(Debug, Default)]
pub(super) struct QuickDrops {
    quick: u32,
    /// Of those, how many in a row tether caused itself by refusing an
    /// unreadable packet.
    unreadable: u32,
}

impl QuickDrops {
    /// One more quick drop; `unreadable` when tether dropped it itself.
    pub(super) fn quick(&mut self, unreadable: bool) {
        self.quick = self.quick.saturating_add(1);
        self.unreadable = if unreadable {
            self.unreadable.saturating_add(1)
        } else {
            0
        };
    }

    /// A connection stayed up: the run is over.
    pub(super) fn reset(&mut self) {
        *self = Self::default();
    }

    /// What the run means, once it is long enough to say.
    pub(super) fn diagnosis(&self, device_id: &str) -> Option<String> {
        if self.quick < QUICK_DROPS_TO_WARN {
            return None;
        }
        Some(if self.unreadable >= QUICK_DROPS_TO_WARN {
            format!(
                "this happened {} times right after connecting: the broker most likely \
                 sends the same packet again on every reconnect (a queued QoS 1 message or a \
                 retained one); remove it at the broker (clear the retained message or the \
                 persistent session of {device_id:?})",
                self.unreadable
            )
        } else {
            format!(
                "the hub closed the connection {} times right after accepting it: another \
                 client is probably connected with device id {device_id:?} (a hub allows one \
                 connection per device)",
                self.quick
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(drops: &[bool]) -> QuickDrops {
        let mut q = QuickDrops::default();
        for unreadable in drops {
            q.quick(*unreadable);
        }
        q
    }

    #[test]
    fn a_few_quick_drops_say_nothing_yet() {
        assert_eq!(run(&[false, false]).diagnosis("d"), None);
    }

    #[test]
    fn drops_the_hub_caused_point_at_another_client() {
        let d = run(&[false; 3]).diagnosis("ctrl-1").unwrap();
        assert!(
            d.contains("another client") && d.contains("\"ctrl-1\""),
            "{d}"
        );
    }

    #[test]
    fn drops_tether_caused_over_an_unreadable_packet_say_so() {
        let d = run(&[true; 3]).diagnosis("ctrl-1").unwrap();
        assert!(
            d.contains("same packet again") && !d.contains("another client"),
            "{d}"
        );
        let mixed = run(&[true, true, true, false]).diagnosis("ctrl-1").unwrap();
        assert!(mixed.contains("another client"), "{mixed}");
    }

    #[test]
    fn a_connection_that_stayed_up_ends_the_run() {
        let mut q = run(&[false; 5]);
        q.reset();
        q.quick(false);
        assert_eq!(q.diagnosis("d"), None);
    }
}
