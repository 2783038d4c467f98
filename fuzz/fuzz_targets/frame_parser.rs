//! Every parser on arbitrary bytes: no panic, and whatever parses re-emits to bytes that
//! parse to the same representation.
#![no_main]

use core::net::Ipv4Addr;

use libfuzzer_sys::fuzz_target;
use tcp_core::wire::arp::ArpRepr;
use tcp_core::wire::ethernet::EthernetRepr;
use tcp_core::wire::icmpv4::Icmpv4Repr;
use tcp_core::wire::ipv4::Ipv4Repr;
use tcp_core::wire::udp::UdpRepr;
use tcp_core::wire::{Checksums, TcpRepr};

const SRC: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 1);
const DST: Ipv4Addr = Ipv4Addr::new(10, 0, 0, 2);

fuzz_target!(|data: &[u8]| {
    // Checksums off on receive so the fuzzer reaches the option and field parsers.
    let lax = Checksums { verify_rx: false, fill_tx: true };
    let strict = Checksums::default();

    if let Ok((eth, payload)) = EthernetRepr::parse(data) {
        let mut buf = vec![0u8; 14];
        eth.emit(&mut buf).expect("emit into a header-sized buffer");
        assert_eq!(EthernetRepr::parse(&buf).map(|(e, _)| e), Ok(eth));
        let _ = ArpRepr::parse(payload);
        let _ = Ipv4Repr::parse(payload, &strict);
    }
    if let Ok(arp) = ArpRepr::parse(data) {
        let mut buf = [0u8; 28];
        arp.emit(&mut buf).expect("emit ARP");
        assert_eq!(ArpRepr::parse(&buf), Ok(arp));
    }
    if let Ok((ip, payload)) = Ipv4Repr::parse(data, &lax) {
        assert_eq!(payload.len(), ip.payload_len);
        let mut buf = vec![0u8; 20 + payload.len()];
        ip.emit(&mut buf, &strict).expect("emit IPv4");
        buf[20..].copy_from_slice(payload);
        let (again, p2) = Ipv4Repr::parse(&buf, &strict).expect("re-parse IPv4");
        assert_eq!(again, ip);
        assert_eq!(p2, payload);
    }
    if let Ok(icmp) = Icmpv4Repr::parse(data, &lax) {
        let mut buf = vec![0u8; icmp.buffer_len()];
        // Unknown message types are parsed but not emitted.
        if icmp.emit(&mut buf, &strict).is_ok() {
            assert_eq!(Icmpv4Repr::parse(&buf, &strict).expect("re-parse ICMP"), icmp);
        }
    }
    if let Ok((udp, payload)) = UdpRepr::parse(data, SRC, DST, &lax) {
        let mut buf = vec![0u8; 8 + payload.len()];
        udp.emit(&mut buf, SRC, DST, payload, &strict).expect("emit UDP");
        let (again, p2) = UdpRepr::parse(&buf, SRC, DST, &strict).expect("re-parse UDP");
        assert_eq!((again, p2), (udp, payload));
    }
    if let Ok(tcp) = TcpRepr::parse(data, SRC, DST, &lax) {
        let mut buf = vec![0u8; tcp.buffer_len()];
        let n = tcp.emit(&mut buf, SRC, DST, &strict).expect("emit TCP");
        let again = TcpRepr::parse(&buf[..n], SRC, DST, &strict).expect("re-parse TCP");
        assert_eq!(again.seq, tcp.seq);
        assert_eq!(again.ack, tcp.ack);
        assert_eq!(again.flags, tcp.flags);
        assert_eq!(again.payload, tcp.payload);
        assert_eq!(again.options.mss, tcp.options.mss);
        assert_eq!(again.options.timestamp, tcp.options.timestamp);
    }
});
