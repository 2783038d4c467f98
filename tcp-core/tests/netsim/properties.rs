//! Properties over whole connections, for random links, transfer sizes and socket
//! options. Each case runs one simulation, and `Sim::run` checks on the way:
//! 1. every byte arrives exactly once and in order, both directions (`StreamCheck`);
//! 2. both connections reach CLOSED or TIME-WAIT and both stacks free every socket within
//!    2*MSL (plus retransmission slack) of the applications closing;
//! 3. afterwards only housekeeping timers remain and they run out (`check_quiescent`);
//! 4. at every step: send and receive queues within their buffers, no frame above the
//!    MTU, checksum-drop counters rise exactly for the corrupted frames, and the wire
//!    rules of `monitor`.
//!
//! Case counts: 384 + 256 + 256 + 256 = 1,152 whole-connection runs per `cargo test`
//! (about 10 s on one core at the test profile's opt-level 1; a simulated connection costs
//! microseconds per frame).

use proptest::prelude::*;
use tcp_core::Duration;
use tcp_core::tcp::{CongestionAlgorithm, TcpConfig};

use crate::app::{Response, Workload};
use crate::link::LinkParams;
use crate::sim::{Sim, SimConfig};

const KIB: usize = 1024;

fn config(cases: u32) -> ProptestConfig {
    ProptestConfig {
        cases,
        // The input (seed included) printed on failure reproduces the run exactly.
        failure_persistence: None,
        max_shrink_iters: 256,
        ..ProptestConfig::default()
    }
}

/// Rates from 1 Mbit/s to 1 Gbit/s, spread evenly on a log scale.
fn bandwidth() -> impl Strategy<Value = u64> {
    (0u32..=300).prop_map(|x| (1e6 * 10f64.powf(f64::from(x) / 100.0)) as u64)
}

#[allow(clippy::too_many_arguments)]
fn link(
    loss_max: u32,
    reorder_max: u32,
    dup_max: u32,
    corrupt: std::ops::RangeInclusive<u32>,
) -> impl Strategy<Value = LinkParams> {
    (
        0u64..=50_000,
        bandwidth(),
        16 * KIB..=1024 * KIB,
        (0..=loss_max, 0..=reorder_max, 0u64..=20_000, 0..=dup_max, corrupt),
        576usize..=1500,
    )
        .prop_map(
            |(
                latency_us,
                bandwidth_bps,
                queue_limit,
                (loss, reorder, delay_us, dup, corrupt),
                mtu,
            )| {
                LinkParams {
                    latency: Duration::from_micros(latency_us),
                    bandwidth_bps,
                    queue_limit,
                    loss_ppm: loss,
                    reorder_ppm: reorder,
                    reorder_delay: Duration::from_micros(delay_us),
                    duplicate_ppm: dup,
                    corrupt_ppm: corrupt,
                    mtu,
                }
            },
        )
}

fn tcp(buffers: std::ops::RangeInclusive<usize>) -> impl Strategy<Value = TcpConfig> {
    (buffers.clone(), buffers, any::<bool>(), any::<bool>(), any::<bool>(), any::<bool>()).prop_map(
        |(send_buffer, recv_buffer, sack, timestamps, window_scale, cubic)| TcpConfig {
            send_buffer,
            recv_buffer,
            sack,
            timestamps,
            window_scale,
            congestion: if cubic {
                CongestionAlgorithm::Cubic
            } else {
                CongestionAlgorithm::NewReno
            },
            ..TcpConfig::default()
        },
    )
}

/// Sizes from 0 B to 256 KiB, with small ones (a handful of segments) as likely as big.
fn size() -> impl Strategy<Value = usize> {
    prop_oneof![0usize..=4 * KIB, 0usize..=256 * KIB]
}

fn chunk() -> impl Strategy<Value = usize> {
    prop_oneof![1usize..=100, 100usize..=64 * KIB]
}

fn workload(nodelay: impl Strategy<Value = bool>) -> impl Strategy<Value = Workload> {
    (size(), prop_oneof![Just(None), size().prop_map(Some)], chunk(), chunk(), nodelay).prop_map(
        |(request_len, response, write_chunk, read_chunk, nodelay)| Workload {
            connections: 1,
            request_len,
            response: response.map_or(Response::Echo, Response::Pattern),
            write_chunk,
            read_chunk,
            backlog: 4,
            nodelay,
        },
    )
}

fn run(
    seed: u64,
    link: LinkParams,
    client_tcp: TcpConfig,
    server_tcp: TcpConfig,
    workload: Workload,
) {
    let mut cfg = SimConfig::new(seed, link, workload);
    cfg.client_tcp = client_tcp;
    cfg.server_tcp = server_tcp;
    let report = Sim::new(cfg).run();
    if std::env::var_os("NETSIM_VERBOSE").is_some() {
        println!(
            "{:>7} B up, {:>7} B down, {:?} transfer, frames {}/{}, lost {}/{}, corrupted {}/{}",
            workload.request_len,
            workload.response_len(),
            report.transfer_time,
            report.up.delivered,
            report.down.delivered,
            report.up.lost,
            report.down.lost,
            report.up.corrupted,
            report.down.corrupted
        );
    }
}

proptest! {
    #![proptest_config(config(384))]
    /// Everything random at once, within the ranges of the issue.
    #[test]
    fn random_links_sizes_and_options_deliver_every_byte_once_in_order_and_close(
        seed in any::<u64>(),
        link in link(100_000, 200_000, 50_000, 0..=50_000),
        client_tcp in tcp(4 * KIB..=256 * KIB),
        server_tcp in tcp(4 * KIB..=256 * KIB),
        workload in workload(any::<bool>()),
    ) {
        run(seed, link, client_tcp, server_tcp, workload);
    }
}

proptest! {
    #![proptest_config(config(256))]
    /// Echo (the server's sending depends on what it received) over a link that loses,
    /// reorders and duplicates hard but does not corrupt.
    #[test]
    fn echo_survives_loss_reordering_and_duplication(
        seed in any::<u64>(),
        link in link(100_000, 200_000, 50_000, 0..=0),
        client_tcp in tcp(16 * KIB..=256 * KIB),
        server_tcp in tcp(16 * KIB..=256 * KIB),
        workload in workload(any::<bool>()),
    ) {
        let workload = Workload { response: Response::Echo, ..workload };
        run(seed, link, client_tcp, server_tcp, workload);
    }
}

proptest! {
    #![proptest_config(config(256))]
    /// Heavy corruption: every flipped byte must be caught by a checksum (one drop counter
    /// per corrupted frame) and never reach the application.
    #[test]
    fn corrupted_frames_are_always_caught_and_never_delivered(
        seed in any::<u64>(),
        link in link(10_000, 50_000, 10_000, 10_000..=50_000),
        client_tcp in tcp(4 * KIB..=256 * KIB),
        server_tcp in tcp(4 * KIB..=256 * KIB),
        workload in workload(any::<bool>()),
    ) {
        run(seed, link, client_tcp, server_tcp, workload);
    }
}

proptest! {
    #![proptest_config(config(256))]
    /// Tiny buffers, Nagle on, small application writes and reads: flow control, window
    /// updates, silly-window avoidance and the persist timer carry the transfer.
    #[test]
    fn tiny_buffers_and_small_writes_with_nagle_still_complete(
        seed in any::<u64>(),
        link in link(50_000, 100_000, 20_000, 0..=20_000),
        client_tcp in tcp(4 * KIB..=8 * KIB),
        server_tcp in tcp(4 * KIB..=8 * KIB),
        workload in workload(Just(false)),
        write_chunk in 1usize..=300,
        read_chunk in 1usize..=300,
    ) {
        let workload = Workload { write_chunk, read_chunk, ..workload };
        run(seed, link, client_tcp, server_tcp, workload);
    }
}
