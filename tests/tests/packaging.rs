//! The Debian package: `cargo deb` builds it, and it holds the binary, the systemd unit
//! (with reload) and the example config under /etc/lb as a conffile.

use std::path::PathBuf;
use std::process::Command;

fn workspace() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// cargo's stderr without the `Compiling …` progress lines, so a CI log that keeps only
/// part of the output still shows the error itself.
fn diagnostics(stderr: &str) -> String {
    stderr
        .lines()
        .filter(|l| {
            let l = l.trim_start();
            !(l.starts_with("Compiling ") || l.starts_with("Fresh ") || l.starts_with("Checking "))
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn cargo_deb_package_holds_binary_unit_and_config() {
    if Command::new("cargo")
        .args(["deb", "--version"])
        .output()
        .map(|o| !o.status.success())
        .unwrap_or(true)
    {
        panic!("cargo-deb is missing: `cargo xtask` bootstraps it (cargo install cargo-deb)");
    }
    let out_dir = std::env::temp_dir().join(format!("lb-deb-{}", std::process::id()));
    std::fs::create_dir_all(&out_dir).expect("tmp dir");
    let deb = out_dir.join("lb.deb");
    let build = Command::new("cargo")
        .current_dir(workspace())
        .args(["deb", "-p", "lb-userspace", "-o"])
        .arg(&deb)
        .output()
        .expect("cargo deb runs");
    assert!(
        build.status.success(),
        "cargo deb failed:\n{}",
        diagnostics(&String::from_utf8_lossy(&build.stderr))
    );
    let list = Command::new("dpkg-deb")
        .arg("-c")
        .arg(&deb)
        .output()
        .expect("dpkg-deb -c");
    let list = String::from_utf8_lossy(&list.stdout);
    for path in [
        "./usr/bin/lb",
        "./lib/systemd/system/lb.service",
        "./etc/lb/lb.toml",
        "./usr/share/doc/lb/README.md",
        "./usr/share/doc/lb/examples/bird/lb-announce.conf",
        "./usr/share/doc/lb/examples/frr/router-example.conf",
    ] {
        assert!(
            list.contains(path),
            "{path} missing from the package:\n{list}"
        );
    }
    let info = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .output()
        .expect("dpkg-deb -I");
    let info = String::from_utf8_lossy(&info.stdout);
    assert!(info.contains("Package: lb"), "{info}");
    let conffiles = Command::new("dpkg-deb")
        .arg("-I")
        .arg(&deb)
        .arg("conffiles")
        .output()
        .expect("dpkg-deb -I conffiles");
    assert!(String::from_utf8_lossy(&conffiles.stdout).contains("/etc/lb/lb.toml"));
    // The unit runs `lb run` and reloads with SIGHUP.
    let x = out_dir.join("x");
    let extract = Command::new("dpkg-deb")
        .arg("-x")
        .arg(&deb)
        .arg(&x)
        .status()
        .expect("extract");
    assert!(extract.success());
    let unit = std::fs::read_to_string(x.join("lib/systemd/system/lb.service")).expect("unit");
    assert!(unit.contains("ExecStart=/usr/bin/lb run -c /etc/lb/lb.toml"));
    assert!(unit.contains("ExecReload=/bin/kill -HUP $MAINPID"));
    // [announce]: a crashed lb's VIPs are withdrawn by deleting its interface.
    assert!(unit.contains("ExecStopPost=-/sbin/ip link del lb-vips"));
    let _ = std::fs::remove_dir_all(&out_dir);
}
