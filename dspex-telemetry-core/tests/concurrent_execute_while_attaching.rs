//! Many threads execute while handlers are attached and detached: every event reaches the
//! handlers attached throughout, none is delivered twice, nothing panics.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Barrier};

use dspex_telemetry_core::{Dispatcher, Event, EventName, Measurements, Metadata};

const E: EventName = EventName::from_static(&["test", "concurrent"]);
// Fewer under Miri, which interprets every access (and checks them for data races).
const THREADS: usize = if cfg!(miri) { 3 } else { 6 };
const EVENTS_PER_THREAD: usize = if cfg!(miri) { 200 } else { 20_000 };

#[test]
fn executing_threads_and_attaching_threads_do_not_interfere() {
    let d = Dispatcher::new();
    let steady = Arc::new(AtomicUsize::new(0));
    let s = steady.clone();
    d.attach("steady", E, move |_: &Event<'_>| {
        s.fetch_add(1, Ordering::Relaxed);
    })
    .unwrap();
    let transient = Arc::new(AtomicUsize::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let barrier = Arc::new(Barrier::new(THREADS + 1));

    let churn = {
        let (d, transient, done, barrier) =
            (d.clone(), transient.clone(), done.clone(), barrier.clone());
        std::thread::spawn(move || {
            barrier.wait();
            let mut rounds = 0usize;
            while !done.load(Ordering::Relaxed) || rounds < 10 {
                let t = transient.clone();
                let id = format!("transient-{}", rounds % 3);
                d.attach(id.clone(), E, move |_: &Event<'_>| {
                    t.fetch_add(1, Ordering::Relaxed);
                })
                .unwrap();
                std::thread::yield_now();
                d.detach(&id).unwrap();
                rounds += 1;
            }
            rounds
        })
    };

    let workers: Vec<_> = (0..THREADS)
        .map(|_| {
            let (d, barrier) = (d.clone(), barrier.clone());
            std::thread::spawn(move || {
                barrier.wait();
                for i in 0..EVENTS_PER_THREAD {
                    d.execute(&E, &Measurements::new().with("i", i), &Metadata::new());
                }
            })
        })
        .collect();
    for w in workers {
        w.join().expect("an executing thread panicked");
    }
    done.store(true, Ordering::Relaxed);
    let rounds = churn.join().expect("the attaching thread panicked");

    assert!(rounds >= 10);
    assert_eq!(steady.load(Ordering::Relaxed), THREADS * EVENTS_PER_THREAD);
    assert!(transient.load(Ordering::Relaxed) <= THREADS * EVENTS_PER_THREAD);
    assert_eq!(d.list_handlers(None).len(), 1);
    assert_eq!(d.handler_failures(), 0);
}
