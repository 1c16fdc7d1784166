//! Test support for lb: the namespaced lab harness ([`lab`]), the XDP `TestRun` harness
//! ([`testrun`]), packet builders and from-scratch checksum verifiers ([`packet`]).
//! The integration tests themselves live in `tests/tests/`.

pub mod bench;
pub mod bgp;
pub mod differential;
pub mod h2wire;
pub mod httpc;
pub mod l4env;
pub mod lab;
pub mod lbproc;
pub mod packet;
pub mod scaleout;
pub mod servers;
pub mod testrun;
pub mod topology;

/// Waits (up to 10 s) until something accepts TCP connections on 127.0.0.1:`port`.
pub fn wait_for_local_port(port: u16) -> bool {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_secs(10) {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    false
}

/// True when this process can load BPF programs and create namespaces.
pub fn privileged() -> bool {
    nix::unistd::geteuid().is_root()
}

/// Returns early from a test that needs root, printing why. `cargo xtask test` does not run
/// privileged suites without root and reports them as skipped; this guards direct
/// `cargo test` runs.
#[macro_export]
macro_rules! require_root {
    () => {
        if !$crate::privileged() {
            eprintln!("skipped: needs root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN)");
            return;
        }
    };
}
