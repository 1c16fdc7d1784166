//! The health state machine of one server, with HAProxy's semantics. Pure: no I/O, no clock.
//!
//! HAProxy keeps one "health" counter per server in `0..=rise+fall-1`. The server is
//! operationally UP while `health >= rise`:
//!
//! * a passed check increments it; reaching `rise` jumps to `rise+fall-1` ("fully up"), so a
//!   DOWN server needs `rise` consecutive successes to come UP;
//! * a failed check decrements it; dropping below `rise` resets it to 0 (DOWN), so a fully up
//!   server needs `fall` consecutive failures to go DOWN.
//!
//! At start a checked server is UP with `health = rise` (HAProxy's default `init-state up`:
//! "considered immediately available", but the first failed check marks it DOWN). The other
//! HAProxy initial states are available through [`InitState`].
//!
//! The administrative state (READY / DRAIN / MAINT, HAProxy's `set server … state`) is kept
//! apart: checks keep running and recording in every admin state, and never change it. The
//! status published to the registry combines both the way HAProxy's stats do:
//! MAINT, else DOWN (checks failed), else DRAIN, else UP. Leaving MAINT therefore lands on
//! whatever the checks concluded meanwhile.

use crate::state::ServerStatus;

/// Operational state as decided by checks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OpState {
    Up,
    Down,
}

impl OpState {
    pub const fn as_str(self) -> &'static str {
        match self {
            OpState::Up => "UP",
            OpState::Down => "DOWN",
        }
    }
}

/// Administrative state, as set by the runtime API (`ready|drain|maint`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AdminState {
    #[default]
    Ready,
    Drain,
    Maint,
}

impl AdminState {
    pub const fn as_str(self) -> &'static str {
        match self {
            AdminState::Ready => "ready",
            AdminState::Drain => "drain",
            AdminState::Maint => "maint",
        }
    }

    /// Parses the runtime API word (case-insensitive, surrounding whitespace ignored).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "ready" => Some(AdminState::Ready),
            "drain" => Some(AdminState::Drain),
            "maint" => Some(AdminState::Maint),
            _ => None,
        }
    }
}

/// HAProxy's `init-state`: where the health counter starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum InitState {
    /// UP, fully: needs `fall` failures to go DOWN.
    FullyUp,
    /// UP, but the first failure marks it DOWN (HAProxy's default).
    #[default]
    Up,
    /// DOWN, but the first success marks it UP.
    Down,
    /// DOWN, fully: needs `rise` successes to come UP.
    FullyDown,
}

/// A change of the operational state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Transition {
    pub from: OpState,
    pub to: OpState,
}

/// The health state machine of one server.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthMachine {
    rise: u32,
    fall: u32,
    health: u32,
    admin: AdminState,
    /// Consecutive results of the same kind, for display ("UP 1/3" style).
    consecutive_ok: u32,
    consecutive_fail: u32,
}

impl HealthMachine {
    /// `rise` and `fall` below 1 are treated as 1.
    pub fn new(rise: u32, fall: u32, init: InitState) -> Self {
        let rise = rise.max(1);
        let fall = fall.max(1);
        let health = match init {
            InitState::FullyUp => rise + fall - 1,
            InitState::Up => rise,
            InitState::Down => rise - 1,
            InitState::FullyDown => 0,
        };
        Self {
            rise,
            fall,
            health,
            admin: AdminState::Ready,
            consecutive_ok: 0,
            consecutive_fail: 0,
        }
    }

    pub fn rise(&self) -> u32 {
        self.rise
    }

    pub fn fall(&self) -> u32 {
        self.fall
    }

    /// The raw HAProxy health counter, `0..=rise+fall-1`.
    pub fn health(&self) -> u32 {
        self.health
    }

    fn max_health(&self) -> u32 {
        self.rise + self.fall - 1
    }

    pub fn op_state(&self) -> OpState {
        if self.health >= self.rise {
            OpState::Up
        } else {
            OpState::Down
        }
    }

    pub fn admin(&self) -> AdminState {
        self.admin
    }

    /// Sets the administrative state; returns the new effective status.
    pub fn set_admin(&mut self, admin: AdminState) -> ServerStatus {
        self.admin = admin;
        self.effective()
    }

    /// The status to publish: MAINT, else DOWN, else DRAIN, else UP.
    pub fn effective(&self) -> ServerStatus {
        match (self.admin, self.op_state()) {
            (AdminState::Maint, _) => ServerStatus::Maint,
            (_, OpState::Down) => ServerStatus::Down,
            (AdminState::Drain, OpState::Up) => ServerStatus::Drain,
            (AdminState::Ready, OpState::Up) => ServerStatus::Up,
        }
    }

    /// Records one check result; returns the operational transition it caused, if any.
    pub fn record(&mut self, passed: bool) -> Option<Transition> {
        let before = self.op_state();
        if passed {
            self.consecutive_ok = self.consecutive_ok.saturating_add(1);
            self.consecutive_fail = 0;
            if self.health < self.max_health() {
                self.health += 1;
                if self.health >= self.rise {
                    self.health = self.max_health();
                }
            }
        } else {
            self.consecutive_fail = self.consecutive_fail.saturating_add(1);
            self.consecutive_ok = 0;
            if self.health > 0 {
                self.health -= 1;
                if self.health < self.rise {
                    self.health = 0;
                }
            }
        }
        let after = self.op_state();
        (before != after).then_some(Transition {
            from: before,
            to: after,
        })
    }

    /// Adopts new `rise`/`fall` (reload) keeping the operational state.
    pub fn set_params(&mut self, rise: u32, fall: u32) {
        let rise = rise.max(1);
        let fall = fall.max(1);
        if rise == self.rise && fall == self.fall {
            return;
        }
        let up = self.op_state() == OpState::Up;
        self.rise = rise;
        self.fall = fall;
        self.health = if up { rise + fall - 1 } else { 0 };
    }

    /// HAProxy's stats wording for the check progress: "UP", "UP 2/3" (going down),
    /// "DOWN", "DOWN 1/2" (going up).
    pub fn progress(&self) -> String {
        match self.op_state() {
            OpState::Up => {
                let max = self.max_health();
                if self.health == max {
                    "UP".to_owned()
                } else {
                    // Failures still tolerated before DOWN.
                    format!("UP {}/{}", self.health - self.rise + 1, self.fall)
                }
            }
            OpState::Down => {
                if self.health == 0 {
                    "DOWN".to_owned()
                } else {
                    format!("DOWN {}/{}", self.health, self.rise)
                }
            }
        }
    }

    /// HAProxy 2.6's `status:` in health-check log lines: `H/RISE DOWN` below `rise`, else
    /// `(H - RISE + 1)/FALL UP` (`2/2 UP` at full health with fall 2).
    pub fn status_text(&self) -> String {
        match self.op_state() {
            OpState::Up => format!("{}/{} UP", self.health - self.rise + 1, self.fall),
            OpState::Down => format!("{}/{} DOWN", self.health, self.rise),
        }
    }

    /// Consecutive passed checks so far (reset by a failure).
    pub fn consecutive_ok(&self) -> u32 {
        self.consecutive_ok
    }

    /// Consecutive failed checks so far (reset by a success).
    pub fn consecutive_fail(&self) -> u32 {
        self.consecutive_fail
    }
}

impl Default for HealthMachine {
    /// HAProxy defaults: rise 2, fall 3, `init-state up`.
    fn default() -> Self {
        Self::new(2, 3, InitState::Up)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(m: &mut HealthMachine, results: &[bool]) -> Vec<OpState> {
        results
            .iter()
            .map(|&ok| {
                m.record(ok);
                m.op_state()
            })
            .collect()
    }

    #[test]
    fn starts_up_and_first_failure_marks_down() {
        let mut m = HealthMachine::default();
        assert_eq!(m.op_state(), OpState::Up);
        assert_eq!(m.effective(), ServerStatus::Up);
        let t = m.record(false);
        assert_eq!(
            t,
            Some(Transition {
                from: OpState::Up,
                to: OpState::Down
            })
        );
        assert_eq!(m.effective(), ServerStatus::Down);
    }

    #[test]
    fn first_success_makes_fully_up() {
        let mut m = HealthMachine::new(2, 3, InitState::Up);
        assert_eq!(m.record(true), None);
        assert_eq!(m.health(), 4);
        // Now it takes `fall` = 3 failures.
        use OpState::*;
        assert_eq!(run(&mut m, &[false, false, false]), vec![Up, Up, Down]);
    }

    #[test]
    fn fall_consecutive_failures_then_rise_successes() {
        use OpState::*;
        let mut m = HealthMachine::new(2, 3, InitState::FullyUp);
        assert_eq!(run(&mut m, &[false, false]), vec![Up, Up]);
        assert_eq!(m.progress(), "UP 1/3");
        assert_eq!(m.status_text(), "1/3 UP");
        assert_eq!(run(&mut m, &[false]), vec![Down]);
        assert_eq!(m.progress(), "DOWN");
        assert_eq!(run(&mut m, &[true]), vec![Down]);
        assert_eq!(m.progress(), "DOWN 1/2");
        assert_eq!(run(&mut m, &[true]), vec![Up]);
        assert_eq!(m.progress(), "UP");
    }

    #[test]
    fn flapping_never_reaches_thresholds() {
        use OpState::*;
        let mut m = HealthMachine::new(2, 3, InitState::FullyUp);
        // Alternating fail/ok: one failure is absorbed, the success restores full health.
        let out = run(&mut m, &[false, true, false, true, false, true, false]);
        assert!(out.iter().all(|s| *s == Up), "{out:?}");
        // From DOWN, alternating ok/fail never reaches rise = 2.
        let mut m = HealthMachine::new(2, 3, InitState::FullyDown);
        let out = run(&mut m, &[true, false, true, false, true, false]);
        assert!(out.iter().all(|s| *s == Down), "{out:?}");
    }

    #[test]
    fn flapping_with_two_failures_in_a_row_absorbed() {
        use OpState::*;
        let mut m = HealthMachine::new(2, 3, InitState::FullyUp);
        let out = run(&mut m, &[false, false, true, false, false, true]);
        assert!(out.iter().all(|s| *s == Up), "{out:?}");
        // A success in between resets the failure count: fall=3 counts consecutive ones.
        assert_eq!(run(&mut m, &[false, false, false]), vec![Up, Up, Down]);
    }

    #[test]
    fn rise_one_fall_one() {
        use OpState::*;
        let mut m = HealthMachine::new(1, 1, InitState::Up);
        assert_eq!(
            run(&mut m, &[false, true, false, false, true, true]),
            vec![Down, Up, Down, Down, Up, Up]
        );
    }

    #[test]
    fn zero_thresholds_are_clamped_to_one() {
        let mut m = HealthMachine::new(0, 0, InitState::Up);
        assert_eq!((m.rise(), m.fall()), (1, 1));
        m.record(false);
        assert_eq!(m.op_state(), OpState::Down);
        m.record(true);
        assert_eq!(m.op_state(), OpState::Up);
    }

    #[test]
    fn timeouts_count_as_failures_in_long_runs() {
        use OpState::*;
        let mut m = HealthMachine::new(3, 2, InitState::FullyUp);
        // A timeout is just a failed check for the machine.
        assert_eq!(run(&mut m, &[false, false]), vec![Up, Down]);
        assert_eq!(run(&mut m, &[true, true]), vec![Down, Down]);
        assert_eq!(run(&mut m, &[false]), vec![Down]);
        assert_eq!(m.health(), 0, "a failure while rising restarts the rise");
        assert_eq!(run(&mut m, &[true, true, true]), vec![Down, Down, Up]);
    }

    #[test]
    fn init_states() {
        let m = HealthMachine::new(2, 3, InitState::FullyDown);
        assert_eq!(m.op_state(), OpState::Down);
        let mut m = HealthMachine::new(2, 3, InitState::Down);
        assert_eq!(m.op_state(), OpState::Down);
        m.record(true);
        assert_eq!(
            m.op_state(),
            OpState::Up,
            "init-state down rises on the first success"
        );
        let mut m = HealthMachine::new(2, 3, InitState::FullyDown);
        m.record(true);
        assert_eq!(m.op_state(), OpState::Down);
        m.record(true);
        assert_eq!(m.op_state(), OpState::Up);
    }

    #[test]
    fn maint_is_not_overridden_by_checks_but_checks_record() {
        let mut m = HealthMachine::new(2, 3, InitState::FullyUp);
        assert_eq!(m.set_admin(AdminState::Maint), ServerStatus::Maint);
        for _ in 0..3 {
            m.record(false);
            assert_eq!(m.effective(), ServerStatus::Maint);
        }
        assert_eq!(
            m.op_state(),
            OpState::Down,
            "checks kept recording during MAINT"
        );
        // MAINT → READY follows the last check results: DOWN.
        assert_eq!(m.set_admin(AdminState::Ready), ServerStatus::Down);
        assert_eq!(m.admin(), AdminState::Ready);
    }

    #[test]
    fn maint_to_ready_after_recovery_is_up() {
        let mut m = HealthMachine::new(2, 3, InitState::FullyDown);
        m.set_admin(AdminState::Maint);
        m.record(true);
        m.record(true);
        assert_eq!(m.effective(), ServerStatus::Maint);
        assert_eq!(m.set_admin(AdminState::Ready), ServerStatus::Up);
    }

    #[test]
    fn drain_is_kept_across_checks() {
        let mut m = HealthMachine::new(2, 3, InitState::FullyUp);
        assert_eq!(m.set_admin(AdminState::Drain), ServerStatus::Drain);
        m.record(true);
        assert_eq!(
            m.effective(),
            ServerStatus::Drain,
            "a passing check does not undrain"
        );
        for _ in 0..3 {
            m.record(false);
        }
        // Like HAProxy's stats: a drained server whose checks fail shows DOWN, and the
        // drain flag survives: when checks recover it is DRAIN again, not UP.
        assert_eq!(m.effective(), ServerStatus::Down);
        assert_eq!(m.admin(), AdminState::Drain);
        m.record(true);
        m.record(true);
        assert_eq!(m.effective(), ServerStatus::Drain);
        assert_eq!(m.set_admin(AdminState::Ready), ServerStatus::Up);
    }

    #[test]
    fn set_params_keeps_state() {
        let mut m = HealthMachine::new(2, 3, InitState::FullyUp);
        m.set_params(5, 5);
        assert_eq!(m.op_state(), OpState::Up);
        assert_eq!(m.health(), 9);
        m.record(false);
        m.record(false);
        m.record(false);
        m.record(false);
        assert_eq!(m.op_state(), OpState::Up);
        m.record(false);
        assert_eq!(m.op_state(), OpState::Down);
        m.set_params(1, 1);
        assert_eq!(m.op_state(), OpState::Down);
        m.record(true);
        assert_eq!(m.op_state(), OpState::Up);
    }

    #[test]
    fn consecutive_counters() {
        let mut m = HealthMachine::default();
        m.record(true);
        m.record(true);
        assert_eq!((m.consecutive_ok(), m.consecutive_fail()), (2, 0));
        m.record(false);
        assert_eq!((m.consecutive_ok(), m.consecutive_fail()), (0, 1));
    }

    #[test]
    fn admin_parse() {
        assert_eq!(AdminState::parse(" Drain\n"), Some(AdminState::Drain));
        assert_eq!(AdminState::parse("ready"), Some(AdminState::Ready));
        assert_eq!(AdminState::parse("MAINT"), Some(AdminState::Maint));
        assert_eq!(AdminState::parse("up"), None);
    }
}
