//! A leg's queue of blocking jobs and the policy that wakes its threads.
//!
//! Waking a parked thread costs more than a page-cache write (a futex wake
//! and two context switches, about 5 µs here, against 2 µs for a 4 KiB
//! write to tmpfs). So when a leg's jobs are quick, a thread that is already
//! awake serves the queue and no other is woken: "lazy" waking. When they
//! are not (a device's latency, a cache miss, a flush, a hang), every job
//! gets a thread of its own at once, so slow I/Os overlap as the device's
//! queue allows: "eager" waking.
//!
//! Only legs without `O_DIRECT` may be lazy (the owner says so per push):
//! their normal I/O is a memory copy, while every `O_DIRECT` I/O waits for
//! the device. The queue learns from each job's service time, which rises
//! at once with a slow job and falls back slowly. A job that turns out slow
//! while others wait behind it holds them at most until it returns, or until
//! the volume's monitor calls [`JobQueue::unstick`], whichever comes first.
//!
//! A thread that finds the queue empty, when it is the only one awake,
//! keeps looking for up to [`SPIN`] before it parks, giving the CPU away at
//! each look (`sched_yield`). The next job then needs no wake-up, and it runs
//! on a CPU that is already running (a woken thread tends to be placed on
//! the waker's CPU, so two legs' 1 MiB copies woken at once could share one
//! core). A push counts on a looking thread for one job; the next push wakes
//! a thread as before. Threads look only while jobs follow each other
//! closely (the last one came within [`SPIN`] of the queue running dry), so
//! a leg with a job now and then does not spin after each. Spinning without
//! yielding made tmpfs 4k writes three to four times slower on a 2-core
//! machine (the spinners starved the submitting thread). With the yield,
//! measured in one session against the direct baseline: tmpfs 4k writes
//! 0.11 → 0.19 (QD1) and 0.49 → 1.00
//! (QD32) when only quick jobs spun, and then with every queue spinning,
//! 1 MiB QD1 writes 0.61 → 0.93 (tmpfs) and 0.65 → 0.89 (disk files); a
//! 50 µs look rather than 30 µs keeps 1 MiB QD1 there (0.86–1.01). The
//! cost is bounded: at most [`SPIN`] of one thread per leg each time the leg
//! falls idle while its jobs come closely.
//!
//! Jobs the kernel would run one at a time anyway go in the single
//! [`Lane`]: buffered writes to a regular file, which hold the file's inode
//! lock on every Linux file system. At most one of them is served at once,
//! beside any number of other jobs, and one waiting behind another wakes no
//! thread: its lane's thread takes it next. On ext4, 4 KiB writes cost
//! 60–120 µs of CPU each here, too slow for lazy waking, so every write got
//! a thread of its own; the extra threads then spun on the inode lock and
//! handed it over (perf: `rwsem_spin_on_owner`, context switches), and 4 KiB
//! writes at queue depth 32 reached only 0.47–0.74 of the handed-off
//! baseline. One at a time they reach 0.8–1.3 of it.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::time::{Duration, Instant};

/// Jobs quicker than this on average let a leg's queue wake lazily.
const QUICK: Duration = Duration::from_micros(50);

/// How long the one awake thread keeps looking for the next job before it
/// parks.
const SPIN: Duration = Duration::from_micros(50);

/// Which of a leg's jobs may run side by side.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Lane {
    /// Beside any other job.
    Any,
    /// One at a time, beside [`Lane::Any`] jobs: jobs the kernel would run
    /// one at a time anyway (buffered writes to a regular file hold its
    /// inode lock), so a second thread would only wait on that lock.
    Single,
}

pub(crate) struct JobQueue<T> {
    state: Mutex<State<T>>,
    ready: Condvar,
    /// Recent service time in µs: up at once on a slow job, down by an
    /// eighth of the difference on each quicker one.
    service_us: AtomicU64,
    /// A push has counted on the thread looking for work to take its job
    /// (set under the state lock; the looking thread watches it without).
    spinner_claimed: AtomicBool,
}

struct State<T> {
    any: VecDeque<(Instant, T)>,
    single: VecDeque<(Instant, T)>,
    /// A [`Lane::Single`] job is being served.
    single_running: bool,
    closed: bool,
    /// Threads not parked: serving a job, about to look for one, or woken
    /// and not yet running (counted here from the moment they are woken,
    /// so a burst of pushes does not wake one thread per job).
    awake: usize,
    parked: usize,
    /// Wake-ups handed out and not yet taken by a parked thread.
    tokens: usize,
    /// A thread is looking for the next job instead of parking (at most one).
    spinning: bool,
    /// When the queue last ran dry, until the next push.
    dry_since: Option<Instant>,
    /// Whether the last push came within [`SPIN`] of the queue running dry:
    /// only then is looking for the next job worth it.
    jobs_follow_closely: bool,
    /// Wake-ups handed out in all.
    #[cfg(test)]
    woken: u64,
    /// Jobs taken by a thread that spun for them instead of parking.
    #[cfg(test)]
    spun_into: u64,
    /// Times a thread looked for work instead of parking.
    #[cfg(test)]
    spins: u64,
}

impl<T> State<T> {
    fn wake_one(&mut self, ready: &Condvar) {
        if self.parked == 0 {
            return;
        }
        self.parked -= 1;
        self.awake += 1;
        self.tokens += 1;
        #[cfg(test)]
        {
            self.woken += 1;
        }
        ready.notify_one();
    }

    fn lane(&mut self, lane: Lane) -> &mut VecDeque<(Instant, T)> {
        match lane {
            Lane::Any => &mut self.any,
            Lane::Single => &mut self.single,
        }
    }

    /// The lane whose front job a thread may take now, and when that job
    /// was queued: the older of the two fronts, leaving the single lane out
    /// while one of its jobs runs.
    fn takeable(&self) -> Option<(Lane, Instant)> {
        let any = self.any.front().map(|j| (Lane::Any, j.0));
        let single = self.single.front().filter(|_| !self.single_running).map(|j| (Lane::Single, j.0));
        match (any, single) {
            (Some(a), Some(s)) => Some(if s.1 < a.1 { s } else { a }),
            (a, s) => a.or(s),
        }
    }
}

impl<T> Default for JobQueue<T> {
    fn default() -> Self {
        JobQueue {
            state: Mutex::new(State {
                any: VecDeque::new(),
                single: VecDeque::new(),
                single_running: false,
                closed: false,
                awake: 0,
                parked: 0,
                tokens: 0,
                spinning: false,
                dry_since: None,
                jobs_follow_closely: true,
                #[cfg(test)]
                woken: 0,
                #[cfg(test)]
                spun_into: 0,
                #[cfg(test)]
                spins: 0,
            }),
            ready: Condvar::new(),
            service_us: AtomicU64::new(0),
            spinner_claimed: AtomicBool::new(false),
        }
    }
}

/// A job taken from the queue, until it is served: holds the single lane
/// for a [`Lane::Single`] job and gives it back when dropped.
pub(crate) struct Turn<'a, T> {
    queue: &'a JobQueue<T>,
    lane: Lane,
}

impl<T> Turn<'_, T> {
    /// Records how long the job took to serve, and ends the turn.
    pub fn served(self, took: Duration) {
        self.queue.note_service(took);
    }
}

impl<T> Drop for Turn<'_, T> {
    fn drop(&mut self) {
        if self.lane == Lane::Single {
            // Whoever takes the next single job: this thread when it comes
            // back for work, or a thread already looking.
            self.queue.state.lock().single_running = false;
        }
    }
}

impl<T> JobQueue<T> {
    /// Queues `job` in `lane`. A job a thread may take now (any job but a
    /// single-lane one behind another) goes to a thread looking for work if
    /// none has been counted on yet; otherwise, with `may_be_lazy` and
    /// recent jobs quick, a parked thread is woken only when no thread is
    /// awake to take it. A single-lane job behind another wakes nobody: the
    /// thread serving its lane takes it next.
    pub fn push(&self, job: T, may_be_lazy: bool, lane: Lane) {
        let mut s = self.state.lock();
        let takeable_now = lane == Lane::Any || (!s.single_running && s.single.is_empty());
        s.lane(lane).push_back((Instant::now(), job));
        if let Some(t) = s.dry_since.take() {
            s.jobs_follow_closely = t.elapsed() < SPIN;
        }
        if !takeable_now {
            return;
        }
        if s.spinning && !self.spinner_claimed.load(Relaxed) {
            self.spinner_claimed.store(true, Relaxed);
        } else if s.awake == 0 || !(may_be_lazy && self.quick()) {
            s.wake_one(&self.ready);
        }
    }

    /// Called by each thread once, before its first [`pop`](Self::pop).
    pub fn join(&self) {
        self.state.lock().awake += 1;
    }

    /// The next job a thread may take, and its turn; `None` once the queue
    /// is closed and has nothing for this thread. When jobs are slow and
    /// more may be taken, another thread is woken for them: a backlog built
    /// while the queue was lazy is spread out as soon as a job turns out
    /// slow.
    pub fn pop(&self) -> Option<(T, Turn<'_, T>)> {
        let mut s = self.state.lock();
        let mut spun = false;
        loop {
            if let Some((lane, _)) = s.takeable() {
                let (_, job) = s.lane(lane).pop_front().expect("takeable() saw it");
                if lane == Lane::Single {
                    s.single_running = true;
                }
                #[cfg(test)]
                {
                    s.spun_into += u64::from(spun);
                }
                if s.takeable().is_some() && !self.quick() {
                    s.wake_one(&self.ready);
                }
                return Some((job, Turn { queue: self, lane }));
            }
            if !spun && s.dry_since.is_none() {
                s.dry_since = Some(Instant::now());
            }
            if !spun && !s.closed && s.awake == 1 && !s.spinning && s.jobs_follow_closely {
                spun = true;
                s.spinning = true;
                #[cfg(test)]
                {
                    s.spins += 1;
                }
                parking_lot::MutexGuard::unlocked(&mut s, || self.spin());
                s.spinning = false;
                self.spinner_claimed.store(false, Relaxed);
                continue;
            }
            s.awake -= 1;
            if s.closed {
                // Single-lane jobs still queued are the running one's
                // thread's to take.
                return None;
            }
            s.parked += 1;
            loop {
                if s.tokens > 0 {
                    // Whoever woke us counted us awake already.
                    s.tokens -= 1;
                    break;
                }
                if s.closed {
                    s.parked -= 1;
                    s.awake += 1;
                    break;
                }
                self.ready.wait(&mut s);
            }
        }
    }

    /// If the oldest job a thread may take has waited `longer_than`, the
    /// threads that are awake are stuck in slow jobs: turns the queue eager
    /// and wakes a parked thread for it (which wakes more for the rest).
    /// Single-lane jobs behind a running one are left to wait for it.
    pub fn unstick(&self, longer_than: Duration) {
        let mut s = self.state.lock();
        let Some((_, queued)) = s.takeable() else { return };
        if queued.elapsed() > longer_than {
            self.service_us.fetch_max(longer_than.as_micros() as u64, Relaxed);
            s.wake_one(&self.ready);
        }
    }

    /// Wakes every thread: each takes what is still queued, then leaves.
    pub fn close(&self) {
        self.state.lock().closed = true;
        self.ready.notify_all();
    }

    /// Records how long a job took to serve.
    fn note_service(&self, took: Duration) {
        let us = took.as_micros().min(u64::MAX as u128) as u64;
        let old = self.service_us.load(Relaxed);
        let new = if us >= old { us } else { old - (old - us) / 8 };
        self.service_us.store(new, Relaxed);
    }

    /// Watches for a push that counts on this thread, for up to [`SPIN`],
    /// yielding the CPU at each look.
    fn spin(&self) {
        let until = Instant::now() + SPIN;
        loop {
            if self.spinner_claimed.load(Relaxed) {
                return;
            }
            std::thread::yield_now();
            if Instant::now() >= until {
                return;
            }
        }
    }

    fn quick(&self) -> bool {
        self.service_us.load(Relaxed) < QUICK.as_micros() as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// A job that waits for [`GATE`]'s release instead of sleeping, and is
    /// not timed.
    const GATE: u64 = u64::MAX;

    /// Starts `n` threads that serve the queue: each job sleeps its value in
    /// ms (or waits for the gate) and is then reported on the channel.
    /// Returns the queue, the reports and the gate's release.
    fn serve(
        n: usize,
    ) -> (Arc<JobQueue<u64>>, crossbeam_channel::Receiver<u64>, crossbeam_channel::Sender<()>) {
        let q = Arc::new(JobQueue::default());
        let (tx, rx) = crossbeam_channel::unbounded();
        let (open, gate) = crossbeam_channel::unbounded::<()>();
        for _ in 0..n {
            let (q, tx, gate) = (q.clone(), tx.clone(), gate.clone());
            q.join();
            std::thread::spawn(move || {
                while let Some((ms, turn)) = q.pop() {
                    if ms == GATE {
                        gate.recv().unwrap();
                        drop(turn);
                    } else {
                        let t = Instant::now();
                        std::thread::sleep(Duration::from_millis(ms));
                        turn.served(t.elapsed());
                    }
                    tx.send(ms).unwrap();
                }
            });
        }
        // Let every thread park.
        while q.state.lock().parked < n {
            std::thread::sleep(Duration::from_millis(1));
        }
        (q, rx, open)
    }

    #[test]
    fn slow_jobs_run_side_by_side() {
        let (q, rx, _) = serve(4);
        q.note_service(Duration::from_millis(50));
        let t = Instant::now();
        for _ in 0..4 {
            q.push(200, true, Lane::Any);
        }
        for _ in 0..4 {
            rx.recv().unwrap();
        }
        // One after another would take 800 ms.
        assert!(t.elapsed() < Duration::from_millis(600), "{:?}", t.elapsed());
        q.close();
    }

    #[test]
    fn a_job_that_turns_out_slow_spreads_the_backlog_behind_it() {
        let (q, rx, _) = serve(4);
        // Quick so far, so the pushes below wake one thread only.
        q.note_service(Duration::ZERO);
        let t = Instant::now();
        for _ in 0..4 {
            q.push(200, true, Lane::Any);
        }
        for _ in 0..4 {
            rx.recv().unwrap();
        }
        // The first runs alone; the three behind it then run side by side.
        let took = t.elapsed();
        assert!(took >= Duration::from_millis(400), "{took:?}");
        assert!(took < Duration::from_millis(700), "{took:?}");
        q.close();
    }

    #[test]
    fn unstick_frees_jobs_queued_behind_a_hang() {
        let (q, rx, _) = serve(2);
        q.note_service(Duration::ZERO);
        q.push(5_000, true, Lane::Any);
        std::thread::sleep(Duration::from_millis(50));
        q.push(0, true, Lane::Any);
        std::thread::sleep(Duration::from_millis(50));
        assert!(rx.try_recv().is_err(), "the second job waits behind the first");
        q.unstick(Duration::from_millis(10));
        assert_eq!(rx.recv_timeout(Duration::from_secs(2)), Ok(0));
        q.close();
    }

    #[test]
    fn quick_jobs_keep_the_threads_asleep() {
        let (q, rx, open) = serve(4);
        q.note_service(Duration::ZERO);
        // One thread is kept busy while the queue fills behind it.
        q.push(GATE, true, Lane::Any);
        for _ in 0..200 {
            q.push(0, true, Lane::Any);
        }
        open.send(()).unwrap();
        for _ in 0..201 {
            rx.recv().unwrap();
        }
        // That one thread served them all; eager waking would have woken
        // every thread.
        assert_eq!(q.state.lock().woken, 1);
        q.close();
    }

    #[test]
    fn the_thread_awake_takes_the_next_job_without_a_wake_up() {
        let (q, rx, _) = serve(2);
        q.note_service(Duration::ZERO);
        // Each push right after a job's report finds the thread that sent it
        // still looking (it spins for 50 µs); on a loaded machine a few may
        // find it parked, so try for up to 2 s.
        let t = Instant::now();
        while q.state.lock().spun_into == 0 {
            assert!(t.elapsed() < Duration::from_secs(2), "no job was ever taken by a spinning thread");
            q.note_service(Duration::ZERO);
            q.push(0, true, Lane::Any);
            rx.recv().unwrap();
        }
        // An idle queue's threads do not spin on: both are parked again.
        let t = Instant::now();
        while q.state.lock().parked < 2 {
            assert!(t.elapsed() < Duration::from_secs(1), "a thread kept spinning on an idle queue");
            std::thread::sleep(Duration::from_millis(1));
        }
        q.close();
    }

    #[test]
    fn a_thread_looking_for_work_is_counted_on_for_one_job_only() {
        let (q, rx, _) = serve(2);
        // An O_DIRECT leg: every job should get a thread at once (and quick
        // jobs, so the woken thread does not wake another for the backlog).
        q.note_service(Duration::ZERO);
        // As if a thread were looking for work (the serving threads are all
        // parked, so nothing else takes the jobs before the second push).
        q.state.lock().spinning = true;
        q.push(0, false, Lane::Any);
        assert_eq!(q.state.lock().woken, 0, "the looking thread is counted on for the first job");
        q.push(0, false, Lane::Any);
        assert_eq!(q.state.lock().woken, 1, "the second job gets a thread of its own");
        q.state.lock().spinning = false;
        // The woken thread takes both (it finds the first still queued).
        rx.recv().unwrap();
        rx.recv().unwrap();
        q.close();
    }

    #[test]
    fn jobs_that_come_now_and_then_are_not_spun_for() {
        let (q, rx, _) = serve(2);
        q.note_service(Duration::ZERO);
        // Whatever the threads did while starting, the first push finds the
        // queue dry for long: from then on nobody looks for work.
        let spins = q.state.lock().spins;
        for _ in 0..5 {
            std::thread::sleep(Duration::from_millis(5));
            q.push(0, true, Lane::Any);
            rx.recv().unwrap();
        }
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(q.state.lock().spins, spins, "a thread spun after a job of a leg that is mostly idle");
        q.close();
    }

    #[test]
    fn single_lane_jobs_run_one_at_a_time_beside_the_others() {
        let (q, rx, _) = serve(4);
        // Slow jobs: every job that may run gets a thread at once.
        q.note_service(Duration::from_millis(50));
        let t = Instant::now();
        for _ in 0..3 {
            q.push(100, true, Lane::Single);
        }
        q.push(101, true, Lane::Any);
        let mut order = Vec::new();
        for _ in 0..4 {
            order.push((rx.recv().unwrap(), t.elapsed()));
        }
        // The single-lane jobs one after another (300 ms), the other one
        // beside the first of them rather than behind all three.
        let last = order.last().unwrap();
        assert!(last.1 >= Duration::from_millis(300), "single-lane jobs overlapped: {order:?}");
        assert_eq!(last.0, 100, "{order:?}");
        let other = order.iter().position(|(ms, _)| *ms == 101).unwrap();
        assert!(other < 2, "the other job waited behind the single lane: {order:?}");
        q.close();
    }

    #[test]
    fn a_single_lane_job_behind_another_wakes_nobody() {
        let (q, rx, open) = serve(4);
        q.note_service(Duration::from_millis(50));
        q.push(GATE, true, Lane::Single);
        for _ in 0..5 {
            q.push(0, true, Lane::Single);
        }
        std::thread::sleep(Duration::from_millis(50));
        assert_eq!(q.state.lock().woken, 1, "a thread was woken for a job that may not run yet");
        // Nor does the monitor wake one for them: they wait for their lane,
        // not for a thread.
        q.unstick(Duration::from_millis(10));
        assert_eq!(q.state.lock().woken, 1, "unstick woke a thread for a job that may not run yet");
        open.send(()).unwrap();
        for _ in 0..6 {
            rx.recv_timeout(Duration::from_secs(2)).unwrap();
        }
        // The thread that served the lane took the rest itself.
        assert_eq!(q.state.lock().woken, 1);
        q.close();
    }

    #[test]
    fn a_turn_ended_without_service_frees_the_single_lane() {
        let q = JobQueue::default();
        q.push(1, true, Lane::Single);
        q.push(2, true, Lane::Single);
        let (job, turn) = q.pop().unwrap();
        assert_eq!(job, 1);
        assert_eq!(q.state.lock().takeable().map(|t| t.0), None, "the lane is held during the turn");
        // As a worker does with a job given up on before it started.
        drop(turn);
        assert_eq!(q.state.lock().takeable().map(|t| t.0), Some(Lane::Single));
        assert_eq!(q.pop().map(|(job, _)| job), Some(2));
    }

    #[test]
    fn close_wakes_and_ends_every_thread() {
        let (q, _rx, _) = serve(3);
        q.close();
        let t = Instant::now();
        while {
            let s = q.state.lock();
            s.awake + s.parked > 0
        } {
            assert!(t.elapsed() < Duration::from_secs(5), "threads still there after close");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}
