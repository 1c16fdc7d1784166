//! `BPF_PROG_TEST_RUN` harness: load the embedded XDP object with its maps pinned in a
//! private bpffs directory, feed a program packet bytes, get the verdict and the bytes out.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::Ebpf;
use aya::programs::{TestRun, TestRunOptions, Xdp};
use lb::dataplane::{self, DataplaneError, LoadOptions};

static HARNESS_COUNTER: AtomicU32 = AtomicU32::new(0);

/// XDP verdicts, as returned by programs.
pub const XDP_ABORTED: u32 = 0;
pub const XDP_DROP: u32 = 1;
pub const XDP_PASS: u32 = 2;
pub const XDP_TX: u32 = 3;
pub const XDP_REDIRECT: u32 = 4;

/// Errors running a program.
#[derive(Debug, thiserror::Error)]
pub enum TestRunError {
    #[error(transparent)]
    Dataplane(#[from] DataplaneError),
    #[error("program {0} not found or not XDP")]
    NoProgram(String),
    #[error("program {name}: {source}")]
    Program {
        name: String,
        source: aya::programs::ProgramError,
    },
}

/// The outcome of one run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunOutput {
    pub action: u32,
    pub data: Vec<u8>,
    pub duration: std::time::Duration,
}

/// A loaded object whose maps live in a private pin directory, removed on drop.
pub struct XdpHarness {
    pub ebpf: Ebpf,
    pin_dir: PathBuf,
}

impl std::fmt::Debug for XdpHarness {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("XdpHarness")
            .field("pin_dir", &self.pin_dir)
            .finish()
    }
}

impl XdpHarness {
    /// Loads the object with small maps (conntrack 4096, Maglev size 65537).
    pub fn load() -> Result<Self, TestRunError> {
        Self::load_with(4096, lb_common::maps::DEFAULT_MAGLEV_SIZE)
    }

    /// Loads the object with the given conntrack and Maglev sizes.
    pub fn load_with(conntrack_size: u32, maglev_table_size: u32) -> Result<Self, TestRunError> {
        let n = HARNESS_COUNTER.fetch_add(1, Ordering::Relaxed);
        let pin_dir = PathBuf::from(format!("/sys/fs/bpf/lbtest-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&pin_dir);
        let ebpf = dataplane::load(&LoadOptions {
            pin_dir: pin_dir.clone(),
            conntrack_size,
            maglev_table_size,
        })?;
        Ok(Self { ebpf, pin_dir })
    }

    fn program(&mut self, name: &str) -> Result<&mut Xdp, TestRunError> {
        let prog: &mut Xdp = self
            .ebpf
            .program_mut(name)
            .and_then(|p| p.try_into().ok())
            .ok_or_else(|| TestRunError::NoProgram(name.to_owned()))?;
        if prog.fd().is_err() {
            prog.load().map_err(|source| TestRunError::Program {
                name: name.to_owned(),
                source,
            })?;
        }
        Ok(prog)
    }

    /// Runs program `name` once on `packet`.
    pub fn run(&mut self, name: &str, packet: &[u8]) -> Result<RunOutput, TestRunError> {
        self.run_repeat(name, packet, 1)
    }

    /// Runs program `name` `repeat` times on `packet`. The kernel does not restore the
    /// packet between repetitions, so the output is that of the last run.
    pub fn run_repeat(
        &mut self,
        name: &str,
        packet: &[u8],
        repeat: u32,
    ) -> Result<RunOutput, TestRunError> {
        let prog = self.program(name)?;
        let mut out = vec![0u8; packet.len() + 256];
        let opts = TestRunOptions {
            data_in: Some(packet),
            data_out: Some(&mut out),
            repeat,
            ..TestRunOptions::new()
        };
        let result = prog
            .test_run(opts)
            .map_err(|source| TestRunError::Program {
                name: name.to_owned(),
                source,
            })?;
        out.truncate(result.data_size_out as usize);
        Ok(RunOutput {
            action: result.return_value,
            data: out,
            duration: result.duration,
        })
    }
}

impl Drop for XdpHarness {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.pin_dir);
    }
}
