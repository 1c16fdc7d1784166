//! The L4 lab topology routes between client and backends through the balancer host
//! (kernel forwarding, no XDP): the baseline every L4 end-to-end test builds on.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::time::Duration;

use lb_tests::require_root;
use lb_tests::servers::tcp_identity;
use lb_tests::topology::{L4Lab, backend_v4, backend_v6};

#[test]
fn client_reaches_every_backend_through_the_balancer_host() {
    require_root!();
    let l = L4Lab::build(2).expect("lab");
    let mut guards = Vec::new();
    for (i, b) in l.backends.iter().enumerate() {
        for addr in [
            format!("{}:8080", backend_v4(i + 1)),
            format!("[{}]:8080", backend_v6(i + 1)),
        ] {
            let addr: SocketAddr = addr.parse().expect("addr");
            guards.push(tcp_identity(b.tcp_listen(addr).expect("listen"), &b.name));
        }
    }
    for (i, b) in l.backends.iter().enumerate() {
        for addr in [
            format!("{}:8080", backend_v4(i + 1)),
            format!("[{}]:8080", backend_v6(i + 1)),
        ] {
            let addr: SocketAddr = addr.parse().expect("addr");
            let conn = l
                .client
                .tcp_connect(addr, Duration::from_secs(5))
                .expect("connect");
            conn.set_read_timeout(Some(Duration::from_secs(5)))
                .expect("timeout");
            let mut line = String::new();
            BufReader::new(conn).read_line(&mut line).expect("greeting");
            assert_eq!(line.trim(), b.name);
        }
    }
}
