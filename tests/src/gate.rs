//! Which integration tests may run side by side. They all live in one test binary (`it`),
//! run two at a time (`--test-threads=2`); most share the machine with any other test, but
//! a test that measures a timing or memory bound of a whole cluster under faults ran alone
//! when it had a binary of its own (`cargo test` runs binaries one after another), and
//! still does: it waits until the tests running have finished, and tests that start
//! meanwhile wait for it. Every test of the binary takes its gate first thing:
//! `let _gate = gate::shared();` or `gate::alone()`, held until the test ends.

use std::sync::{Condvar, Mutex, MutexGuard};

#[derive(Default)]
struct Machine {
    /// Tests running that share the machine.
    shared: usize,
    /// A test runs alone.
    alone: bool,
    /// Tests waiting to run alone: they go before tests that would share, so a steady
    /// stream of shared tests cannot keep them waiting.
    waiting_alone: usize,
}

static MACHINE: Mutex<Machine> = Mutex::new(Machine { shared: 0, alone: false, waiting_alone: 0 });
static CHANGED: Condvar = Condvar::new();

fn machine() -> MutexGuard<'static, Machine> {
    // A test that panicked holding the lock left consistent counts (each change is one
    // statement), so the poison is ignored.
    MACHINE.lock().unwrap_or_else(|e| e.into_inner())
}

/// A test's place on the machine; dropping it (the test ending or panicking) gives it up.
#[must_use = "the gate holds the test's place only while it lives: bind it to `_gate`"]
pub struct Gate {
    alone: bool,
}

/// Runs beside other tests that share the machine; waits while one runs alone.
pub fn shared() -> Gate {
    let mut machine = machine();
    while machine.alone || machine.waiting_alone > 0 {
        machine = CHANGED.wait(machine).unwrap_or_else(|e| e.into_inner());
    }
    machine.shared += 1;
    Gate { alone: false }
}

/// Runs alone: waits until the tests running have finished; later tests wait for this one.
pub fn alone() -> Gate {
    let mut machine = machine();
    machine.waiting_alone += 1;
    while machine.alone || machine.shared > 0 {
        machine = CHANGED.wait(machine).unwrap_or_else(|e| e.into_inner());
    }
    machine.waiting_alone -= 1;
    machine.alone = true;
    Gate { alone: true }
}

impl Drop for Gate {
    fn drop(&mut self) {
        let mut machine = machine();
        if self.alone {
            machine.alone = false;
        } else {
            machine.shared -= 1;
        }
        drop(machine);
        CHANGED.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::time::{Duration, Instant};

    use super::*;

    /// The only test of the gate in this binary: the gate is process-wide.
    #[test]
    fn a_test_alone_waits_for_the_shared_ones_and_tests_after_it_wait_for_it() {
        let running = shared();
        let alone_started = Arc::new(AtomicBool::new(false));
        let alone_test = std::thread::spawn({
            let started = alone_started.clone();
            move || {
                let gate = alone();
                started.store(true, Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(200));
                let ended = Instant::now();
                drop(gate);
                ended
            }
        });
        let deadline = Instant::now() + Duration::from_secs(10);
        while machine().waiting_alone == 0 {
            assert!(Instant::now() < deadline, "the alone test never asked for its gate");
            std::thread::sleep(Duration::from_millis(5));
        }
        // A test that asks to share after the alone one asked waits behind it.
        let later_test = std::thread::spawn(|| {
            let _gate = shared();
            Instant::now()
        });
        assert!(!alone_started.load(Ordering::SeqCst), "the alone test started beside a running one");
        drop(running);
        let alone_ended = alone_test.join().unwrap();
        let later_started = later_test.join().unwrap();
        assert!(later_started >= alone_ended, "a test started while the alone one ran");
    }
}
