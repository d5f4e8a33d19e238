//! The links' congestion controller: Cubic with a floor under its window.

use std::any::Any;
use std::sync::Arc;
use std::time::Instant;

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics, CubicConfig};
use quinn_proto::RttEstimator;

/// Builds [`FlooredCubic`] controllers: Cubic as configured, its window never under `floor`.
#[derive(Debug)]
pub(crate) struct FlooredCubicConfig {
    /// Cubic's own configuration (initial window and the rest).
    pub cubic: CubicConfig,
    /// Bytes the window never falls below.
    pub floor: u64,
}

impl ControllerFactory for FlooredCubicConfig {
    fn build(self: Arc<Self>, now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(FlooredCubic {
            inner: Arc::new(self.cubic.clone()).build(now, current_mtu),
            floor: self.floor,
        })
    }
}

/// Cubic whose congestion window stays at or above a floor.
///
/// Each loss cuts Cubic's window and its slow-start threshold by 30 %, down to two packets.
/// A spell of random loss between two regions (the chaos soak's `lossy-wan`: 30 % of datagrams
/// for a few seconds) left both at that minimum, and once the loss ended the window grew back
/// in congestion avoidance, from about 2.4 KB, over many seconds: at an 80 ms round trip a
/// 10 KB window carries about 125 KB/s, while the other region's backlog of replication grew by
/// more than that. Links join a few nodes over long-lived paths between data centres; the floor
/// keeps that much in flight whatever the losses, which random loss does not argue against and
/// a congested path barely notices.
struct FlooredCubic {
    inner: Box<dyn Controller>,
    floor: u64,
}

impl Controller for FlooredCubic {
    fn on_sent(&mut self, now: Instant, bytes: u64, last_packet_number: u64) {
        self.inner.on_sent(now, bytes, last_packet_number);
    }

    fn on_ack(
        &mut self,
        now: Instant,
        sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.inner.on_ack(now, sent, bytes, app_limited, rtt);
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        in_flight: u64,
        app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.inner
            .on_end_acks(now, in_flight, app_limited, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        now: Instant,
        sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.inner
            .on_congestion_event(now, sent, is_persistent_congestion, lost_bytes);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.inner.on_mtu_update(new_mtu);
    }

    fn window(&self) -> u64 {
        self.inner.window().max(self.floor)
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = self.inner.metrics();
        metrics.congestion_window = self.window();
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(FlooredCubic {
            inner: self.inner.clone_box(),
            floor: self.floor,
        })
    }

    fn initial_window(&self) -> u64 {
        self.inner.initial_window().max(self.floor)
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn losses_cut_the_window_to_the_floor_and_no_further() {
        let mut cubic = CubicConfig::default();
        cubic.initial_window(1 << 20);
        let config = Arc::new(FlooredCubicConfig {
            cubic,
            floor: 256 * 1024,
        });
        let now = Instant::now();
        let mut controller = config.build(now, 1200);
        assert_eq!(controller.window(), 1 << 20);
        for i in 1..=20u32 {
            let at = now + std::time::Duration::from_millis(u64::from(i) * 100);
            controller.on_congestion_event(at, at, false, 1200);
        }
        assert_eq!(controller.window(), 256 * 1024);
        controller.on_congestion_event(now, now, true, 1200);
        assert_eq!(controller.window(), 256 * 1024);
        assert_eq!(controller.metrics().congestion_window, 256 * 1024);
        assert_eq!(controller.clone_box().window(), 256 * 1024);
    }
}
