//! The bench-only programs behave as `cargo xtask bench` relies on: the generator writes
//! its template (cycling the source port) before handing the packet on, and the sink
//! counts and drops UDP while passing everything else.

use std::net::IpAddr;

use aya::maps::{Array, PerCpuArray};
use lb_common::maps::{names, programs};
use lb_common::types::BenchFrame;
use lb_tests::packet::{tcp_frame, udp_frame, verify_frame_checksums};
use lb_tests::require_root;
use lb_tests::testrun::{XDP_DROP, XDP_PASS, XdpHarness};

fn v4(s: &str) -> IpAddr {
    s.parse().expect("test address")
}

/// A template from `frame`'s first 48 bytes, cycling `flows` source ports from 20000.
fn template(frame: &[u8], flows: u16) -> BenchFrame {
    let mut head = [0u64; 6];
    for (i, w) in head.iter_mut().enumerate() {
        *w = u64::from_ne_bytes(frame[i * 8..i * 8 + 8].try_into().expect("8 bytes"));
    }
    BenchFrame {
        head,
        sport_base: 20_000,
        flows,
        sent: 0,
    }
}

#[test]
fn generator_writes_the_template_and_cycles_source_ports() {
    require_root!();
    let mut h = XdpHarness::load().expect("load XDP object");
    let mut tmpl = udp_frame(v4("10.101.0.2"), v4("10.100.0.10"), 1, 5353, &[0u8; 18]);
    tmpl[40..42].copy_from_slice(&[0, 0]); // no UDP checksum: valid for any source port
    {
        let mut frames: Array<_, BenchFrame> =
            Array::try_from(h.ebpf.map_mut(names::BENCH_FRAME).expect("frame map")).expect("array");
        frames.set(0, template(&tmpl, 3), 0).expect("set template");
    }
    // Whatever the input holds, the output is the template with the next source port.
    let junk = udp_frame(v4("192.0.2.1"), v4("192.0.2.2"), 7, 7, &[0xee; 18]);
    for n in 0..4u16 {
        let out = h.run(programs::BENCH_GEN_PASS, &junk).expect("test run");
        assert_eq!(out.action, XDP_PASS);
        let mut expected = tmpl.clone();
        expected[34..36].copy_from_slice(&(20_000 + n % 3).to_be_bytes());
        expected[48..].copy_from_slice(&junk[48..]);
        assert_eq!(out.data[..48], expected[..48], "packet {n}");
        verify_frame_checksums(&out.data).expect("valid checksums");
    }
    // The balancer variant loads (the verifier accepts the template write in front of the
    // whole balancer) and, with no VIP configured, passes the templated packet on.
    let out = h.run(programs::BENCH_GEN_LB, &junk).expect("test run");
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.data[..34], tmpl[..34]);
    // Too short for the template: aborted, not written past the end.
    let out = h
        .run(programs::BENCH_GEN_PASS, &junk[..40])
        .expect("test run");
    assert_eq!(out.action, 0, "XDP_ABORTED");
}

#[test]
fn sink_counts_and_drops_udp_only() {
    require_root!();
    let mut h = XdpHarness::load().expect("load XDP object");
    let udp = udp_frame(v4("10.101.0.2"), v4("10.102.0.11"), 1000, 5353, b"x");
    let tcp = tcp_frame(v4("10.101.0.2"), v4("10.102.0.11"), 1000, 80, true, b"");
    for _ in 0..3 {
        assert_eq!(
            h.run(programs::BENCH_SINK, &udp).expect("run").action,
            XDP_DROP
        );
    }
    let out = h.run(programs::BENCH_SINK, &tcp).expect("run");
    assert_eq!(out.action, XDP_PASS);
    assert_eq!(out.data, tcp);
    let counts: PerCpuArray<_, u64> =
        PerCpuArray::try_from(h.ebpf.map(names::BENCH_SINK).expect("sink map")).expect("array");
    let total: u64 = counts.get(&0, 0).expect("count").iter().sum();
    assert_eq!(total, 3);
}
