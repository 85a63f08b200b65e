//! The detached supervisor's word to the foreground `cargo serve-safe --detach` that started it:
//! one line through an inherited pipe, `ready`, or `fail CODE` followed by the message. A `log`
//! line may come before it: the instance's log was started afresh, and the foreground may follow
//! it from its beginning.

use std::fs::File;
use std::io::Write as _;
use std::sync::Mutex;

use crate::context::Context;

/// The variable that tells a re-executed supervisor which descriptor to report through.
pub(crate) const REPORT_FD_VAR: &str = "PORTGUARD_DETACH_REPORT_FD";

/// The background side: tells the waiting foreground how the start went, once.
#[derive(Debug)]
pub(crate) struct Reporter {
    pipe: Mutex<Option<File>>,
}

impl Reporter {
    /// The reporter of a re-executed supervisor, if this is one.
    pub(crate) fn from_context(context: &Context) -> Option<Self> {
        let fd: i32 = context.var(REPORT_FD_VAR)?.to_str()?.parse().ok()?;
        // Only the supervisor reports: no server it starts may hold the pipe open, or the
        // foreground would not see its end when the supervisor dies.
        let file = crate::os::take_inherited_fd(fd)?;
        Some(Reporter {
            pipe: Mutex::new(Some(file)),
        })
    }

    /// Says that this run's log has started (emptied, and written from now on).
    pub(crate) fn logging(&self) {
        let Ok(pipe) = self.pipe.lock() else {
            return;
        };
        if let Some(mut file) = pipe.as_ref() {
            let _ = file.write_all(b"log\n");
        }
    }

    pub(crate) fn ready(&self) {
        self.send("ready\n");
    }

    /// Reports a failure; `detail` is added after the message (the end of the log).
    pub(crate) fn fail(&self, code: i32, message: &str, detail: Option<&str>) {
        let mut text = format!("fail {code}\n{message}\n");
        if let Some(detail) = detail {
            text.push_str(detail);
        }
        self.send(&text);
    }

    /// Whether the word was sent already.
    pub(crate) fn has_reported(&self) -> bool {
        self.pipe.lock().map_or(true, |pipe| pipe.is_none())
    }

    fn send(&self, text: &str) {
        let Ok(mut pipe) = self.pipe.lock() else {
            return;
        };
        if let Some(mut file) = pipe.take() {
            // The foreground may have gone (Ctrl-C); nobody is left to tell.
            let _ = file.write_all(text.as_bytes());
        }
    }
}
