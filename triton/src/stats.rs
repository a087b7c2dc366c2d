//! Execution statistics: the timestamps Triton turns into `/v2/models/<m>/stats`, `/metrics`
//! and perf_analyzer's server-side breakdown (compute input / infer / output).
use triton_sys as sys;

use crate::error::{check, Result};
use crate::model::ModelInstance;
use crate::request::Request;

/// Nanoseconds on Triton's clock (`std::chrono::steady_clock`, i.e. CLOCK_MONOTONIC).
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid out-pointer; CLOCK_MONOTONIC always exists on Linux.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The four timestamps of one request: execution start, compute start (inputs read), compute
/// end (results ready) and execution end (response sent). The backend marks the two compute
/// points; unmarked points collapse onto their neighbours so the order always holds.
#[derive(Clone, Copy, Debug)]
pub struct RequestTimer {
    exec_start: u64,
    compute_start: Option<u64>,
    compute_end: Option<u64>,
}

/// Finished timestamps, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Timestamps {
    pub exec_start: u64,
    pub compute_start: u64,
    pub compute_end: u64,
    pub exec_end: u64,
}

impl RequestTimer {
    pub fn start() -> Self {
        Self::starting_at(now_ns())
    }

    pub fn starting_at(exec_start: u64) -> Self {
        Self {
            exec_start,
            compute_start: None,
            compute_end: None,
        }
    }

    /// Inputs are read; the computation begins.
    pub fn compute_start(&mut self) {
        self.compute_start = Some(now_ns());
    }

    /// The computation is done; outputs are written next.
    pub fn compute_end(&mut self) {
        self.compute_end = Some(now_ns());
    }

    pub fn finish_at(&self, exec_end: u64) -> Timestamps {
        let exec_end = exec_end.max(self.exec_start);
        let compute_start = self
            .compute_start
            .unwrap_or(exec_end)
            .clamp(self.exec_start, exec_end);
        let compute_end = self
            .compute_end
            .unwrap_or(exec_end)
            .clamp(compute_start, exec_end);
        Timestamps {
            exec_start: self.exec_start,
            compute_start,
            compute_end,
            exec_end,
        }
    }
}

/// Report one request's outcome and timestamps (`TRITONBACKEND_ModelInstanceReportStatistics`).
/// Must come before the request is released.
pub fn report_request(
    instance: &ModelInstance,
    request: &Request,
    success: bool,
    t: &Timestamps,
) -> Result<()> {
    // SAFETY: the instance and the request are live (the request is released after this).
    check(
        unsafe {
            sys::TRITONBACKEND_ModelInstanceReportStatistics(
                instance.raw(),
                request.raw(),
                success,
                t.exec_start,
                t.compute_start,
                t.compute_end,
                t.exec_end,
            )
        },
        "TRITONBACKEND_ModelInstanceReportStatistics",
    )
}

/// Report one execution of `batch_size` requests (`..._ReportBatchStatistics`).
pub fn report_batch(instance: &ModelInstance, batch_size: u64, t: &Timestamps) -> Result<()> {
    // SAFETY: the instance is live.
    check(
        unsafe {
            sys::TRITONBACKEND_ModelInstanceReportBatchStatistics(
                instance.raw(),
                batch_size,
                t.exec_start,
                t.compute_start,
                t.compute_end,
                t.exec_end,
            )
        },
        "TRITONBACKEND_ModelInstanceReportBatchStatistics",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn marked_points_are_kept_in_order() {
        let mut timer = RequestTimer::starting_at(now_ns());
        timer.compute_start();
        timer.compute_end();
        let t = timer.finish_at(now_ns());
        assert!(t.exec_start <= t.compute_start);
        assert!(t.compute_start <= t.compute_end);
        assert!(t.compute_end <= t.exec_end);
    }

    #[test]
    fn unmarked_points_collapse_onto_the_end() {
        let timer = RequestTimer::starting_at(100);
        let t = timer.finish_at(250);
        assert_eq!(
            (t.compute_start, t.compute_end, t.exec_end),
            (250, 250, 250)
        );
        let mut early = RequestTimer::starting_at(100);
        early.compute_start = Some(150);
        let t = early.finish_at(250);
        assert_eq!((t.compute_start, t.compute_end), (150, 250));
    }

    #[test]
    fn clock_is_monotonic_nanoseconds() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b - a >= 2_000_000, "{a} {b}");
    }
}
