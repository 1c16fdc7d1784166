//! `cargo xtask cert [PATH] [--force]`: the try-out certificate the reference config names
//! (`config/certs/site.pem`): self-signed for `localhost`, chain and key in one PEM, as
//! HAProxy's `crt` takes them. Certificates are never committed; this makes one.

use std::path::PathBuf;

use anyhow::{Context, bail};

use crate::shell::workspace_root;

/// Where the reference config (`config/lb.toml`) and `cargo xtask run` expect it.
pub const SITE_PEM: &str = "config/certs/site.pem";

pub fn run(args: &[String]) -> anyhow::Result<()> {
    let mut path = None;
    let mut force = false;
    for a in args {
        match a.as_str() {
            "--force" => force = true,
            s if s.starts_with('-') => bail!("unknown option `{s}` (usage: cert [PATH] [--force])"),
            s if path.is_none() => path = Some(PathBuf::from(s)),
            s => bail!("unexpected argument `{s}` (usage: cert [PATH] [--force])"),
        }
    }
    let path = path.unwrap_or_else(|| workspace_root().join(SITE_PEM));
    if path.exists() && !force {
        println!(
            "xtask cert: {} exists (use --force to replace it)",
            path.display()
        );
        return Ok(());
    }
    write_self_signed(&path)?;
    println!(
        "xtask cert: wrote {} (self-signed, CN localhost)",
        path.display()
    );
    Ok(())
}

/// Writes a self-signed `localhost` certificate and its key to `path` (mode 0600).
pub fn write_self_signed(path: &std::path::Path) -> anyhow::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;

    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .context("generating the certificate")?;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("writing {}", path.display()))?;
    f.write_all(format!("{}{}", ck.cert.pem(), ck.signing_key.serialize_pem()).as_bytes())
        .with_context(|| format!("writing {}", path.display()))
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    /// The file holds one certificate and its key, readable by its owner only, and a second
    /// run without `--force` leaves it alone.
    #[test]
    fn writes_chain_and_key_in_one_private_pem() {
        let dir = std::env::temp_dir().join(format!("xtask-cert-{}", std::process::id()));
        let pem = dir.join("certs/site.pem");
        super::write_self_signed(&pem).expect("written");
        let text = std::fs::read_to_string(&pem).expect("readable");
        assert_eq!(text.matches("-----BEGIN CERTIFICATE-----").count(), 1);
        assert_eq!(text.matches("-----BEGIN PRIVATE KEY-----").count(), 1);
        let mode = std::fs::metadata(&pem).expect("meta").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        super::run(&[pem.display().to_string()]).expect("second run");
        assert_eq!(std::fs::read_to_string(&pem).expect("readable"), text);
        std::fs::remove_dir_all(&dir).expect("cleanup");
    }
}
