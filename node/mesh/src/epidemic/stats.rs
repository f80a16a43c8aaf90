//! Counters and gauges of overlay mode, exported on `/metrics`.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};

/// What the epidemic driver did; shared with the metrics endpoint.
#[derive(Debug, Default)]
pub struct EpidemicStats {
    /// 1 once the node runs in overlay mode (above `direct_push_max_peers`), else 0.
    pub overlay_mode: AtomicU64,
    /// Peers in the active view (connections kept).
    pub active_view: AtomicU64,
    /// Peers in the passive view (replacement candidates).
    pub passive_view: AtomicU64,
    /// Links of the broadcast tree that are eager.
    pub eager_links: AtomicU64,
    /// Push frames sent along eager links (local, forwarded and graft answers).
    pub eager_pushes: AtomicU64,
    /// Transactions in those frames.
    pub eager_txns: AtomicU64,
    /// `IHave` announcements sent on lazy links.
    pub lazy_announcements: AtomicU64,
    /// `Graft` requests sent.
    pub grafts: AtomicU64,
    /// `Prune` messages sent.
    pub prunes: AtomicU64,
    /// Overlay membership messages sent.
    pub overlay_messages: AtomicU64,
    /// Control messages that could not be sent (peer unreachable, queue full).
    pub control_dropped: AtomicU64,
    /// Control messages a peer refused (`Error` frames back).
    pub control_refused: AtomicU64,
    /// Spare connections closed (peers outside the active view).
    pub spare_closed: AtomicU64,
    /// Anti-entropy rounds, completed and failed.
    pub syncs_ok: AtomicU64,
    /// Failed anti-entropy rounds.
    pub syncs_failed: AtomicU64,
}

/// Adds `n` to a counter.
pub(crate) fn bump(counter: &AtomicU64, n: u64) {
    counter.fetch_add(n, Ordering::Relaxed);
}

impl EpidemicStats {
    /// The Prometheus text exposition of these counters.
    pub fn prometheus_text(&self) -> String {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let gauges = [
            (
                "meshlite_overlay_mode",
                "1 when dissemination runs over the bounded overlay.",
                get(&self.overlay_mode),
            ),
            (
                "meshlite_overlay_active_view",
                "Peers in the overlay's active view.",
                get(&self.active_view),
            ),
            (
                "meshlite_overlay_passive_view",
                "Peers in the overlay's passive view.",
                get(&self.passive_view),
            ),
            (
                "meshlite_tree_eager_links",
                "Eager links of the broadcast tree.",
                get(&self.eager_links),
            ),
        ];
        for (name, help, value) in gauges {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {value}"
            );
        }
        let counters = [
            (
                "meshlite_tree_eager_pushes_total",
                "Push frames sent along eager links.",
                get(&self.eager_pushes),
            ),
            (
                "meshlite_tree_eager_txns_total",
                "Transactions sent along eager links.",
                get(&self.eager_txns),
            ),
            (
                "meshlite_tree_lazy_announcements_total",
                "IHave announcements sent on lazy links.",
                get(&self.lazy_announcements),
            ),
            (
                "meshlite_tree_grafts_total",
                "Graft requests sent.",
                get(&self.grafts),
            ),
            (
                "meshlite_tree_prunes_total",
                "Prune messages sent.",
                get(&self.prunes),
            ),
            (
                "meshlite_overlay_messages_total",
                "Overlay membership messages sent.",
                get(&self.overlay_messages),
            ),
            (
                "meshlite_overlay_control_dropped_total",
                "Control messages that could not be sent.",
                get(&self.control_dropped),
            ),
            (
                "meshlite_overlay_control_refused_total",
                "Control messages a peer refused.",
                get(&self.control_refused),
            ),
            (
                "meshlite_overlay_spare_closed_total",
                "Connections outside the active view closed.",
                get(&self.spare_closed),
            ),
        ];
        for (name, help, value) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_figure_is_exported_with_its_value() {
        let stats = EpidemicStats::default();
        stats.active_view.store(4, Ordering::Relaxed);
        bump(&stats.grafts, 2);
        let text = stats.prometheus_text();
        assert!(text.contains(
            "# TYPE meshlite_overlay_active_view gauge\nmeshlite_overlay_active_view 4\n"
        ));
        assert!(
            text.contains(
                "# TYPE meshlite_tree_grafts_total counter\nmeshlite_tree_grafts_total 2\n"
            )
        );
        assert_eq!(text.matches("# TYPE").count(), 13);
    }
}
