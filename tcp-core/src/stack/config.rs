//! Configuration of one stack instance.

use core::net::Ipv4Addr;

use crate::tcp::TcpConfig;
use crate::time::Duration;
use crate::wire::{Checksums, EthernetAddress};

/// Everything a [`Stack`](super::Stack) needs to know about its interface and policies.
///
/// Build it with [`StackConfig::new`] and adjust the public fields.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct StackConfig {
    /// The interface's MAC address.
    pub mac: EthernetAddress,
    /// The interface's IPv4 address.
    pub ipv4_addr: Ipv4Addr,
    /// Prefix length of the local subnet (for example 24).
    pub prefix_len: u8,
    /// Default gateway for destinations outside the subnet; without one they are
    /// unreachable.
    pub gateway: Option<Ipv4Addr>,
    /// Link MTU in bytes (IP packet size, not counting the Ethernet header).
    pub mtu: usize,
    /// TTL of packets the stack originates (Linux: 64).
    pub ttl: u8,
    /// Defaults for every TCP connection.
    pub tcp: TcpConfig,
    /// Which checksums to verify on receive and fill on transmit (a NIC with offload turns
    /// these off).
    pub checksums: Checksums,
    /// Secret for ISNs (RFC 6528), timestamp offsets and SYN cookies. Choose it at random
    /// per boot; instances that exchange connections (flow-group migration) share it.
    pub secret: [u8; 16],
    /// Local ports used for active opens without an explicit port (Linux:
    /// 32768..=60999).
    pub ephemeral_ports: (u16, u16),
    /// Upper bound on sockets (connections in any state, including TIME-WAIT).
    pub max_sockets: usize,
    /// ARP cache size.
    pub arp_cache_capacity: usize,
    /// How long a learned ARP entry is trusted.
    pub arp_entry_lifetime: Duration,
    /// Minimum time between two ARP requests for one address (RFC 1122 §2.3.2.1).
    pub arp_request_interval: Duration,
    /// Fragment reassembly: datagrams in progress, bytes held, and timeout (Linux: 30 s).
    pub reassembly_max_datagrams: usize,
    /// See [`StackConfig::reassembly_max_datagrams`].
    pub reassembly_max_bytes: usize,
    /// See [`StackConfig::reassembly_max_datagrams`].
    pub reassembly_timeout: Duration,
    /// ICMP errors (port unreachable) the stack may send per second.
    pub icmp_error_rate: u32,
}

impl StackConfig {
    /// A configuration with Linux-like defaults for the given interface.
    pub fn new(
        mac: EthernetAddress,
        ipv4_addr: Ipv4Addr,
        prefix_len: u8,
        secret: [u8; 16],
    ) -> Self {
        StackConfig {
            mac,
            ipv4_addr,
            prefix_len: prefix_len.min(32),
            gateway: None,
            mtu: 1500,
            ttl: 64,
            tcp: TcpConfig::default(),
            checksums: Checksums::default(),
            secret,
            ephemeral_ports: (32768, 60999),
            max_sockets: 65536,
            arp_cache_capacity: 1024,
            arp_entry_lifetime: Duration::from_secs(60),
            arp_request_interval: Duration::from_secs(1),
            reassembly_max_datagrams: 64,
            reassembly_max_bytes: 4 * 1024 * 1024,
            reassembly_timeout: Duration::from_secs(30),
            icmp_error_rate: 1000,
        }
    }

    /// The subnet mask as an integer.
    pub(crate) fn netmask(&self) -> u32 {
        match self.prefix_len {
            0 => 0,
            n => u32::MAX << (32 - u32::from(n.min(32))),
        }
    }

    /// True if `addr` is on the local subnet.
    pub(crate) fn on_link(&self, addr: Ipv4Addr) -> bool {
        let mask = self.netmask();
        u32::from(addr) & mask == u32::from(self.ipv4_addr) & mask
    }

    /// The subnet's directed broadcast address.
    pub(crate) fn broadcast(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.ipv4_addr) | !self.netmask())
    }
}
