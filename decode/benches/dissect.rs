//! Dissector throughput: packets per second per core on a plain TCP frame and on the same frame
//! inside VXLAN (flannel, UDP 8472). Run: `cargo bench -p dye-decode --bench dissect`.

use std::net::Ipv4Addr;

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use dye_decode::build::{self, tcp_flags, V4};
use dye_decode::fmt::Line;
use dye_decode::{dissect_into, Dissection, LinkType, Marker, Options};

fn frames() -> (Vec<u8>, Vec<u8>) {
    let (a, b) = (Ipv4Addr::new(10, 244, 1, 2), Ipv4Addr::new(10, 244, 2, 3));
    let payload = Marker::new(0x1a2b3c4d, 1).payload_with_marker(512).unwrap();
    let h = V4::new(a, b).id(7).df(true);
    let tcp = build::tcp(
        a.into(),
        b.into(),
        40000,
        80,
        1,
        1,
        tcp_flags::PSH | tcp_flags::ACK,
        &payload,
    );
    let plain = build::ethernet([2; 6], [4; 6], &[], 0x0800, &build::ipv4(&h, 6, &tcp));
    let (n1, n2) = (
        Ipv4Addr::new(192, 168, 50, 11),
        Ipv4Addr::new(192, 168, 50, 12),
    );
    let udp = build::udp(n1.into(), n2.into(), 40000, 8472, &build::vxlan(1, &plain));
    let vx = build::ethernet(
        [6; 6],
        [8; 6],
        &[],
        0x0800,
        &build::ipv4(&V4::new(n1, n2), 17, &udp),
    );
    (plain, vx)
}

fn bench(c: &mut Criterion) {
    let (plain, vx) = frames();
    let opts = Options::default();
    let mut g = c.benchmark_group("dissect");
    g.throughput(Throughput::Elements(1));
    let mut d = Dissection::default();
    g.bench_function("plain_tcp", |bch| {
        bch.iter(|| {
            dissect_into(black_box(&plain), LinkType::Ethernet, &opts, &mut d);
            black_box(&d);
        })
    });
    g.bench_function("vxlan_tcp", |bch| {
        bch.iter(|| {
            dissect_into(black_box(&vx), LinkType::Ethernet, &opts, &mut d);
            black_box(&d);
        })
    });
    let mut s = String::with_capacity(256);
    g.bench_function("vxlan_tcp_dissect_and_format", |bch| {
        bch.iter(|| {
            use std::fmt::Write;
            dissect_into(black_box(&vx), LinkType::Ethernet, &opts, &mut d);
            s.clear();
            let _ = write!(s, "{}", Line(&d));
            black_box(&s);
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
