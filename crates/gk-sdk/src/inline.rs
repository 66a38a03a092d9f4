//! Host calls answered on the spot or not at all: the contract between a runtime that runs a
//! guest on its caller's thread (an async runtime's worker, which must not wait) and the hosts
//! that can answer some host calls there.
//!
//! A runtime may try a host call *inline*: it polls the host's future once inside
//! [`attempt`], on a thread that must not block, and may afterwards throw away everything the
//! guest did and run the whole plugin call again elsewhere. So a host that says it
//! [answers inline](crate::HostApi::answers_inline) promises, for each call made while
//! [`is_attempt`] is true, one of two things:
//!
//! - it answers **now** (the first poll is ready, before the attempt's [`deadline`]), **without
//!   an effect** anyone could see if the call ran again: a read, never a write, a message sent
//!   or a lock kept; or
//! - it **refuses** with [`refuse`] (nothing done), for instance because it would have to wait
//!   for a connection, a lock or the network, or because the statement would write. The
//!   runtime then runs the plugin call again where waiting is allowed.
//!
//! Bookkeeping is the exception: rate limits and usage counters count a call that was tried
//! inline and run again twice.

use std::cell::RefCell;
use std::time::Instant;

use crate::HostError;

/// Why a host refused an inline attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// What the host would have had to do (for logs).
    pub reason: String,
    /// Whether the same call would be refused again (a write, a query too slow to run on the
    /// spot), so the runtime should not try it inline again; `false` for a passing state (every
    /// connection busy, a lock held).
    pub lasting: bool,
}

/// The attempt being served on a thread.
#[derive(Debug)]
struct Attempt {
    deadline: Instant,
    refusal: Option<Refusal>,
}

thread_local! {
    /// `None` outside an attempt.
    static ATTEMPT: RefCell<Option<Attempt>> = const { RefCell::new(None) };
}

/// Runs `poll` (the first poll of a host call's future) as an inline attempt on this thread,
/// which the host must answer by `deadline` (or refuse), and returns its value with the host's
/// refusal, if the host refused.
pub fn attempt<R>(deadline: Instant, poll: impl FnOnce() -> R) -> (R, Option<Refusal>) {
    /// Ends the attempt if `poll` panics, restoring an outer one.
    struct Unwinding(Option<Option<Attempt>>);
    impl Drop for Unwinding {
        fn drop(&mut self) {
            if let Some(outer) = self.0.take() {
                let _ = ATTEMPT.try_with(|cell| *cell.borrow_mut() = outer);
            }
        }
    }
    let this = Attempt {
        deadline,
        refusal: None,
    };
    let outer = ATTEMPT.with(|cell| cell.borrow_mut().replace(this));
    let mut unwinding = Unwinding(Some(outer));
    let value = poll();
    let outer = unwinding.0.take().flatten();
    let this = ATTEMPT.with(|cell| std::mem::replace(&mut *cell.borrow_mut(), outer));
    (value, this.and_then(|this| this.refusal))
}

/// Whether the host call being served on this thread is an inline attempt (see the module).
pub fn is_attempt() -> bool {
    ATTEMPT
        .try_with(|cell| cell.borrow().is_some())
        .unwrap_or(false)
}

/// When the inline attempt being served on this thread must be answered by, if one is.
pub fn deadline() -> Option<Instant> {
    ATTEMPT
        .try_with(|cell| cell.borrow().as_ref().map(|attempt| attempt.deadline))
        .ok()
        .flatten()
}

/// Whether the host refused the inline attempt being served on this thread: the error its
/// host call ends with is not an answer, not to be counted or logged as one.
pub fn is_refused() -> bool {
    ATTEMPT
        .try_with(|cell| {
            cell.borrow()
                .as_ref()
                .is_some_and(|attempt| attempt.refusal.is_some())
        })
        .unwrap_or(false)
}

/// Refuses the inline attempt being served on this thread and returns the error to end the
/// host call with (the runtime drops it: the guest never sees it). `lasting`: see
/// [`Refusal::lasting`]. Outside an attempt it only returns the error.
pub fn refuse(reason: impl Into<String>, lasting: bool) -> HostError {
    let reason = reason.into();
    let error = HostError::Unavailable(format!("not answered on the spot: {reason}"));
    let _ = ATTEMPT.try_with(|cell| {
        if let Some(attempt) = cell.borrow_mut().as_mut() {
            attempt.refusal.get_or_insert(Refusal { reason, lasting });
        }
    });
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn soon() -> Instant {
        Instant::now() + std::time::Duration::from_millis(1)
    }

    #[test]
    fn an_attempt_sees_itself_and_reports_the_first_refusal() {
        assert!(!is_attempt());
        let deadline = soon();
        let (inside, refusal) = attempt(deadline, || {
            assert_eq!(super::deadline(), Some(deadline));
            assert!(!is_refused());
            let inside = is_attempt();
            let _ = refuse("every connection is busy", false);
            assert!(is_refused());
            let _ = refuse("a later reason", true);
            inside
        });
        assert!(inside);
        assert_eq!(
            refusal,
            Some(Refusal {
                reason: "every connection is busy".into(),
                lasting: false
            })
        );
        assert!(!is_attempt(), "the attempt ended");
        assert_eq!(super::deadline(), None);
    }

    #[test]
    fn an_attempt_without_refusal_reports_none_and_a_refusal_outside_changes_nothing() {
        let error = refuse("outside", true);
        assert!(error.to_string().contains("outside"), "{error}");
        let (value, refusal) = attempt(soon(), || 7);
        assert_eq!((value, refusal), (7, None));
    }

    #[test]
    fn a_nested_attempt_restores_the_outer_one() {
        let (inner, outer_refusal) = attempt(soon(), || {
            let (_, inner) = attempt(soon(), || refuse("inner", true));
            (inner, is_attempt())
        });
        assert_eq!(inner.0.map(|r| r.reason), Some("inner".to_owned()));
        assert!(inner.1, "still inside the outer attempt");
        assert_eq!(outer_refusal, None);
    }

    #[test]
    fn a_panicking_poll_ends_the_attempt() {
        let caught = std::panic::catch_unwind(|| attempt(soon(), || panic!("boom")));
        assert!(caught.is_err());
        assert!(!is_attempt());
    }
}
