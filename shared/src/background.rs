//! Where version switches and clean-ups run: one thread per process, at the lowest CPU priority,
//! with its own single-threaded runtime. A switch (manifest check, download, checksums, opening
//! or loading the new version) then takes only the CPU that requests leave: on a free core it
//! runs at full speed, and any request thread that wakes up takes the core back at once. On a
//! current-thread runtime, as on Lambda, a switch spawned beside the requests would otherwise
//! hold up every response while it polled its downloads.
//!
//! Threads started from it (its blocking pool, a load's helper threads) inherit the priority, so
//! nothing that later serves requests may be started here: a DuckDB database opened here gets
//! its worker threads from the first request instead ([`is_current`], `snapshot::Duck`).

use std::future::Future;
use std::sync::OnceLock;

/// Puts the calling thread at the lowest priority: `SCHED_IDLE` on Linux, which any thread may
/// take for itself. (`nice 19` is not enough: under a CPU hog on this project's VM, requests kept
/// a p99 1.9x their usual with it and 1.2x with `SCHED_IDLE`.) Elsewhere, or if the system
/// refuses, the thread stays as it is.
fn lower_priority() {
    LOW.set(true);
    #[cfg(target_os = "linux")]
    {
        let param = libc::sched_param { sched_priority: 0 };
        // SAFETY: `param` outlives the call; pid 0 is the calling thread on Linux.
        if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } != 0 {
            let e = std::io::Error::last_os_error();
            tracing::debug!(error = %e, "SCHED_IDLE refused; switches run at normal priority");
        }
    }
}

thread_local! {
    static LOW: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Whether the calling thread is one of the background thread's (threads it starts would run at
/// its low priority).
pub fn is_current() -> bool {
    LOW.get()
}

fn handle() -> &'static tokio::runtime::Handle {
    static BACKGROUND: OnceLock<tokio::runtime::Handle> = OnceLock::new();
    BACKGROUND.get_or_init(|| {
        start_freer();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::Builder::new()
            .name("quiver-switch".into())
            .spawn(move || {
                lower_priority();
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .thread_name("quiver-switch-io")
                    .on_thread_start(lower_priority)
                    .build()
                    .expect("the switch runtime starts");
                let _ = tx.send(rt.handle().clone());
                rt.block_on(std::future::pending::<()>());
            })
            .expect("the switch thread starts");
        rx.recv().expect("the switch runtime starts")
    })
}

/// Runs `f` on the background thread; its result is dropped.
pub fn spawn(f: impl Future<Output = ()> + Send + 'static) {
    drop(handle().spawn(f));
}

/// Runs `f` on the background thread and waits for its result (a caller that gives up leaves it
/// running). A version's whole load runs there, even the first, so that the S3 connections it
/// opens are read by that thread and not by the one serving requests.
pub async fn run_async<T: Send + 'static>(
    f: impl Future<Output = crate::Result<T>> + Send + 'static,
) -> crate::Result<T> {
    handle()
        .spawn(f)
        .await
        .map_err(|e| crate::Error::Internal(format!("a version switch failed: {e}")))?
}

/// Runs the blocking `f` at the same low priority (freeing an old version: a request that drops
/// the last reference to it answers without waiting for that).
pub fn run(f: impl FnOnce() + Send + 'static) {
    drop(handle().spawn_blocking(f));
}

/// Runs the blocking `f` at normal priority, on a thread started beside the background one (from
/// the thread that first needed it, not from the background thread, whose priority a thread it
/// started would inherit): freeing what holds memory (an old version's table and database),
/// which must come back even when requests leave the background thread no CPU. The request that
/// drops the last reference still does not wait.
pub fn free(f: impl FnOnce() + Send + 'static) {
    let _ = handle();
    match FREER.get() {
        Some(freer) => {
            if let Err(job) = freer.send(Box::new(f)) {
                (job.0)();
            }
        }
        // No thread could be started: the caller frees it.
        None => f(),
    }
}

type Job = Box<dyn FnOnce() + Send>;

static FREER: OnceLock<std::sync::mpsc::Sender<Job>> = OnceLock::new();

/// Starts the freeing thread, at the caller's (normal) priority.
fn start_freer() {
    let (tx, rx) = std::sync::mpsc::channel::<Job>();
    let started = std::thread::Builder::new().name("quiver-free".into()).spawn(move || {
        for job in rx {
            job();
        }
    });
    match started {
        Ok(_) => {
            let _ = FREER.set(tx);
        }
        Err(e) => {
            tracing::warn!(error = %e, "no thread to free old versions on; callers free them")
        }
    }
}

#[cfg(test)]
mod tests {
    #[cfg(target_os = "linux")]
    fn policy() -> i32 {
        // SAFETY: no arguments but the calling thread's id.
        unsafe { libc::sched_getscheduler(0) }
    }

    /// Tasks and blocking jobs on the background thread run at idle priority and know it; the
    /// caller's thread is untouched.
    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn background_work_runs_at_idle_priority() {
        let task = super::run_async(async { Ok((policy(), super::is_current())) }).await.unwrap();
        assert_eq!(task, (libc::SCHED_IDLE, true));
        let (tx, rx) = std::sync::mpsc::channel();
        super::run(move || tx.send((policy(), super::is_current())).unwrap());
        assert_eq!(rx.recv().unwrap(), (libc::SCHED_IDLE, true));
        assert_eq!((policy(), super::is_current()), (libc::SCHED_OTHER, false));
        // Issue 29, item 5: memory is freed at normal priority, whoever drops the last reference.
        let (tx, rx) = std::sync::mpsc::channel();
        let from_background = move || {
            super::free(move || tx.send((policy(), super::is_current())).unwrap());
            Ok(())
        };
        super::run_async(async move { from_background() }).await.unwrap();
        assert_eq!(rx.recv().unwrap(), (libc::SCHED_OTHER, false));
    }
}
