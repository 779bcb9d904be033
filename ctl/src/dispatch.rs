//! Carries out a request on the engine and words the answer.

use crate::proto::{Command, ErrorCode, Request, Response, ResyncAction, VerifyAction};
use crate::view::{
    EventView, LegChange, LegView, ResyncChange, ResyncControl, StatusView, VerifyChange, VerifyView,
};
use mirror::volume::{AdminError, VerifyError};
use mirror::Volume;
use serde::Serialize;
use std::sync::{Mutex, PoisonError};

/// The volume a control socket serves.
pub(crate) struct Target {
    name: String,
    volume: Volume,
    control: Mutex<ResyncControl>,
    /// `hamirrorctl resync rate` was used: its cap wins over the volume's
    /// configured one (which a new cfgstring may change) until it closes.
    rate_set: std::sync::atomic::AtomicBool,
}

/// The commands that act on one leg.
#[derive(Clone, Copy, PartialEq, Eq)]
enum LegVerb {
    Fail,
    Restore,
    Replace,
    Split,
}

impl LegVerb {
    fn run(self, volume: &Volume, leg: usize) -> Result<(), AdminError> {
        match self {
            LegVerb::Fail => volume.fail_leg(leg),
            LegVerb::Restore => volume.restore_leg(leg),
            LegVerb::Replace => volume.replace_leg(leg),
            LegVerb::Split => volume.split_leg(leg),
        }
    }
}

impl Target {
    pub(crate) fn new(name: &str, volume: Volume) -> Target {
        let control = ResyncControl { paused: false, max_mib_s: volume.tunables().resync_max_mib_s };
        Target { name: name.to_string(), volume, control: Mutex::new(control), rate_set: Default::default() }
    }

    pub(crate) fn name(&self) -> &str {
        &self.name
    }

    /// Answers one request line. Nothing changes unless the request is valid.
    pub(crate) fn handle(&self, line: &[u8]) -> Response {
        match Request::parse(line).and_then(|r| r.command()) {
            Ok(cmd) => self.execute(cmd),
            Err(e) => e.into(),
        }
    }

    fn execute(&self, cmd: Command) -> Response {
        match cmd {
            Command::Status => ok(self.status()),
            Command::Events => ok(self.volume.events().iter().map(EventView::from).collect::<Vec<_>>()),
            Command::Fail(leg) => self.leg_op(leg, LegVerb::Fail),
            Command::Restore(leg) => self.leg_op(leg, LegVerb::Restore),
            Command::Replace(leg) => self.leg_op(leg, LegVerb::Replace),
            Command::Split(leg) => self.leg_op(leg, LegVerb::Split),
            Command::Resync(action) => self.resync(action),
            Command::Verify(action) => self.verify(action),
        }
    }

    fn status(&self) -> StatusView {
        StatusView::new(self.volume.status(), self.control())
    }

    fn control(&self) -> ResyncControl {
        let mut c = *self.control.lock().unwrap_or_else(PoisonError::into_inner);
        if !self.rate_set.load(std::sync::atomic::Ordering::Relaxed) {
            c.max_mib_s = self.volume.tunables().resync_max_mib_s;
        }
        c
    }

    fn leg_op(&self, leg: usize, what: LegVerb) -> Response {
        if let Err(e) = what.run(&self.volume, leg) {
            return Response::err(ErrorCode::Refused, self.refusal(&e, what, leg));
        }
        let view = self.status().legs.into_iter().find(|l| l.index == leg);
        let Some(view) = view else {
            return Response::err(ErrorCode::Refused, format!("leg {leg} vanished from the status"));
        };
        let message = self.done_message(what, leg, &view);
        ok(LegChange { message, leg: view })
    }

    /// The engine's reason, with the next step where the engine's own words
    /// do not give it for this command.
    fn refusal(&self, e: &AdminError, what: LegVerb, leg: usize) -> String {
        let v = &self.name;
        match (e, what) {
            (AdminError::NotRestorable { .. }, LegVerb::Replace) => format!(
                "{e}; to replace its disk: hamirrorctl fail {v} {leg}, swap the disk, then hamirrorctl replace {v} {leg}"
            ),
            _ => e.to_string(),
        }
    }

    fn done_message(&self, what: LegVerb, leg: usize, view: &LegView) -> String {
        let v = &self.name;
        let state = &view.state;
        match what {
            LegVerb::Fail => format!(
                "leg {leg} is {state}: out of service, writes are tracked for a difference resync; bring it back with: hamirrorctl restore {v} {leg}"
            ),
            LegVerb::Restore => format!(
                "leg {leg} is {state}: it gets the regions it missed; follow with: hamirrorctl status {v}"
            ),
            LegVerb::Replace => format!(
                "leg {leg} is {state}: it is copied completely from the in-sync legs; follow with: hamirrorctl status {v}"
            ),
            LegVerb::Split => format!(
                "leg {leg} is {state}: detached as a point-in-time copy of the volume; to mirror it again: hamirrorctl replace {v} {leg}"
            ),
        }
    }

    fn resync(&self, action: ResyncAction) -> Response {
        let v = &self.name;
        let mut c = self.control.lock().unwrap_or_else(PoisonError::into_inner);
        let message = match action {
            ResyncAction::Pause => {
                self.volume.pause_resync(true);
                c.paused = true;
                format!("resync paused (host I/O goes on); resume with: hamirrorctl resync {v} resume")
            }
            ResyncAction::Resume => {
                self.volume.pause_resync(false);
                c.paused = false;
                "resync resumed".to_string()
            }
            ResyncAction::Rate(mib) => {
                self.volume.set_resync_rate(mib);
                c.max_mib_s = mib;
                self.rate_set.store(true, std::sync::atomic::Ordering::Relaxed);
                match mib {
                    0 => "resync rate unlimited until the volume closes".to_string(),
                    n => format!("resync limited to {n} MiB/s until the volume closes"),
                }
            }
        };
        ok(ResyncChange { message, resync_control: *c })
    }

    fn verify(&self, action: VerifyAction) -> Response {
        let v = &self.name;
        let message = match action {
            VerifyAction::Status => return ok(VerifyView::from(self.volume.verify_status())),
            VerifyAction::Start { repair_from } => {
                if let Err(e) = self.volume.verify_start(repair_from) {
                    return Response::err(ErrorCode::Refused, self.verify_refusal(&e));
                }
                let repair = match repair_from {
                    Some(leg) => format!(", repairing mismatches from leg {leg}"),
                    None => ", reporting mismatches without repairing them".to_string(),
                };
                format!("verify started{repair}; follow with: hamirrorctl verify {v} status")
            }
            VerifyAction::Cancel => {
                if !self.volume.verify_status().running {
                    return Response::err(ErrorCode::Refused, "no verify is running; nothing to cancel");
                }
                self.volume.verify_cancel();
                format!("verify cancelling; what it compared so far shows in: hamirrorctl verify {v} status")
            }
        };
        ok(VerifyChange { message, verify: self.volume.verify_status().into() })
    }

    fn verify_refusal(&self, e: &VerifyError) -> String {
        let v = &self.name;
        match e {
            VerifyError::Running => {
                format!("{e}: hamirrorctl verify {v} status, or hamirrorctl verify {v} cancel")
            }
            VerifyError::NothingToCompare => format!("{e}; restore a leg first (see hamirrorctl status {v})"),
            VerifyError::BadSource(_) => format!("{e}; pick an in-sync leg (see hamirrorctl status {v})"),
        }
    }
}

fn ok<T: Serialize>(data: T) -> Response {
    match serde_json::to_value(data) {
        Ok(v) => Response::ok(v),
        Err(e) => Response::err(ErrorCode::Refused, format!("cannot encode the answer: {e}")),
    }
}
