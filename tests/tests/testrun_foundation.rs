//! Foundation TestRun cases: the object loads and its simplest programs give exact bytes.

use std::net::IpAddr;

use lb_common::maps::programs;
use lb_tests::packet::{CLIENT_MAC, LB_MAC, tcp_frame, verify_frame_checksums};
use lb_tests::require_root;
use lb_tests::testrun::{XDP_PASS, XDP_TX, XdpHarness};

fn v4(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

#[test]
fn baseline_program_swaps_macs_and_transmits() {
    require_root!();
    let mut h = XdpHarness::load().expect("load XDP object");
    let input = tcp_frame(v4("198.51.100.7"), v4("203.0.113.10"), 40000, 80, true, b"");
    let out = h.run(programs::BASELINE_TX, &input).expect("test run");
    assert_eq!(out.action, XDP_TX);
    let mut expected = input.clone();
    expected[0..6].copy_from_slice(&CLIENT_MAC);
    expected[6..12].copy_from_slice(&LB_MAC);
    assert_eq!(out.data, expected, "only the MACs are swapped");
    verify_frame_checksums(&out.data).expect("checksums still valid");
}

#[test]
fn pass_program_leaves_bytes_untouched() {
    require_root!();
    let mut h = XdpHarness::load().expect("load XDP object");
    let input = tcp_frame(
        v4("198.51.100.7"),
        v4("203.0.113.10"),
        40000,
        80,
        false,
        b"hello",
    );
    let out = h.run(programs::PASS, &input).expect("test run");
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.data, input);
}

#[test]
fn balancer_passes_non_ip_frames_unchanged() {
    require_root!();
    let mut h = XdpHarness::load().expect("load XDP object");
    // An ARP request: EtherType 0x0806.
    let mut arp = vec![0xff; 6];
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[0x08, 0x06]);
    arp.extend_from_slice(&[0, 1, 8, 0, 6, 4, 0, 1]);
    arp.extend_from_slice(&CLIENT_MAC);
    arp.extend_from_slice(&[10, 0, 0, 1, 0, 0, 0, 0, 0, 0, 10, 0, 0, 2]);
    let out = h.run(programs::LB, &arp).expect("test run");
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.data, arp);
}
