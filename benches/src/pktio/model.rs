//! The model-link scenario: driver on 82599 model port A → in-memory link → model port B →
//! driver on port B, with the model engine stepping both ports on its own thread.
//!
//! One benchmark thread drives both queues (a batch out on A, a burst in on B, repeat), so
//! with the engine thread the scenario uses exactly two CPUs. TX is counted where the model
//! puts A's frames on the link; RX where B's driver hands them to the benchmark.

use std::sync::Arc;
use std::time::Duration;

use ixgbe_user::ixgbe::Bar0;
use ixgbe_user::model::ModelCounters;
use ixgbe_user::{
    Device, DeviceConfig, IxgbeQueuePair, Model82599, ModelConfig, ModelRunner, QueueConfig,
    QueuePair, memory_link,
};

use super::{
    BenchError, Direction, Measurement, RunConfig, pin_current_thread, receive_batch, run_window,
    setup, transmit_batch, udp_frame, unpin_current_thread,
};

/// Backend name in reports.
pub const BACKEND: &str = "82599 model link";

const PORT_A_MAC: [u8; 6] = [0x02, 0x82, 0x59, 0x90, 0x00, 0x0a];
const PORT_B_MAC: [u8; 6] = [0x02, 0x82, 0x59, 0x90, 0x00, 0x0b];

/// Descriptors per ring: ixy's default, deep enough that neither side waits on the other
/// within one batch.
const RING_SIZE: usize = 512;

struct Ports {
    tx: IxgbeQueuePair,
    rx: IxgbeQueuePair,
    frame: [u8; super::FRAME_LEN],
    sink: u64,
}

/// Runs the scenario; returns its TX (port A) and RX (port B) measurements.
pub fn run(config: &RunConfig) -> Result<Vec<Measurement>, BenchError> {
    let (wire_a, wire_b) = memory_link();
    let port = |mac, wire| {
        Model82599::new(ModelConfig { mac, ..ModelConfig::default() }, Box::new(wire))
            .map_err(setup("create a model port"))
    };
    let port_a = port(PORT_A_MAC, wire_a)?;
    let port_b = port(PORT_B_MAC, wire_b)?;
    let (handle_a, handle_b) = (port_a.handle(), port_b.handle());
    let counters_a: Arc<ModelCounters> = port_a.counters();

    // The engine thread inherits CPU 0 from this thread; the driver loop then moves to CPU 1.
    pin_current_thread(config, 0).map_err(setup("pin the model engine"))?;
    let runner = ModelRunner::spawn(vec![port_a, port_b]).map_err(setup("start the model"));
    pin_current_thread(config, 1).map_err(setup("pin the driver thread"))?;
    let runner = runner?;

    let device_config =
        DeviceConfig { link_timeout: Duration::from_secs(2), ..DeviceConfig::default() };
    let init = |registers| {
        Device::init(Bar0::from_model(registers), &device_config)
            .map_err(setup("initialise the driver on the model"))
    };
    let device_a = init(handle_a.registers().clone())?;
    let device_b = init(handle_b.registers().clone())?;
    let queue_config =
        QueueConfig { rx_ring_size: RING_SIZE, tx_ring_size: RING_SIZE, ..QueueConfig::default() };
    let attach = |device: &Device, handle: &ixgbe_user::ModelHandle| {
        IxgbeQueuePair::attach(device.bar().clone(), handle.dma(), 0, &queue_config)
            .map_err(setup("attach queue 0"))
    };
    let mut ports = Ports {
        tx: attach(&device_a, &handle_a)?,
        rx: attach(&device_b, &handle_b)?,
        frame: udp_frame(PORT_B_MAC, PORT_A_MAC, [10, 0, 0, 1], [10, 0, 0, 2], 4000, 5000),
        sink: 0,
    };

    let window = run_window(
        config,
        &mut ports,
        |p| {
            transmit_batch(&mut p.tx, &p.frame)?;
            receive_batch(&mut p.rx, &mut p.sink)?;
            Ok(())
        },
        |p| {
            Ok((
                p.tx.stats().tx_packets,
                ModelCounters::get(&counters_a.wire_tx_frames),
                p.rx.stats().rx_packets,
            ))
        },
    );
    // Queues disable themselves on drop and wait for the model to acknowledge, so they go
    // before the engine stops.
    drop(ports);
    drop(runner);
    unpin_current_thread(config).map_err(setup("unpin"))?;
    let window = window?;

    let (accepted, on_wire, received) = (
        window.end.0 - window.start.0,
        window.end.1 - window.start.1,
        window.end.2 - window.start.2,
    );
    Ok(vec![
        Measurement {
            backend: BACKEND.into(),
            direction: Direction::Tx,
            packets: on_wire,
            offered: accepted,
            seconds: window.seconds,
        },
        Measurement {
            backend: BACKEND.into(),
            direction: Direction::Rx,
            packets: received,
            offered: on_wire,
            seconds: window.seconds,
        },
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_short_run_moves_frames_both_ways_and_accounts_for_them() {
        let config = RunConfig {
            warmup: Duration::from_millis(20),
            duration: Duration::from_millis(100),
            pin_threads: false,
        };
        let results = run(&config).unwrap();
        let [tx, rx] = results.as_slice() else { panic!("{results:?}") };
        assert_eq!((tx.direction, rx.direction), (Direction::Tx, Direction::Rx));
        assert!(tx.packets > 0 && rx.packets > 0, "{results:?}");
        assert!(tx.mpps() > 0.0);
        // The window edges cut batches in flight, so allow one ring of slack either way.
        let slack = (2 * RING_SIZE) as u64;
        assert!(tx.packets <= tx.offered + slack, "{tx:?}");
        assert!(rx.packets <= rx.offered + slack, "{rx:?}");
    }
}
