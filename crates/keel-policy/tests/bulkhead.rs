//! Max in flight, released on drop, across threads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use keel_policy::{Bulkhead, BulkheadFull};

#[test]
fn permits_release_on_drop() {
    let b = Arc::new(Bulkhead::new(2).unwrap());
    let p1 = b.try_acquire().unwrap();
    let p2 = b.try_acquire().unwrap();
    assert_eq!(b.in_flight(), 2);
    assert_eq!(b.try_acquire().unwrap_err(), BulkheadFull { max: 2 });
    drop(p1);
    let p3 = b.try_acquire().unwrap();
    drop((p2, p3));
    assert_eq!(b.in_flight(), 0);
}

#[test]
fn never_exceeds_max_under_contention() {
    let b = Arc::new(Bulkhead::new(3).unwrap());
    let peak = Arc::new(std::sync::atomic::AtomicU32::new(0));
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let (b, peak) = (Arc::clone(&b), Arc::clone(&peak));
            std::thread::spawn(move || {
                for _ in 0..10_000 {
                    if let Ok(_permit) = b.try_acquire() {
                        peak.fetch_max(b.in_flight(), std::sync::atomic::Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert!(peak.load(std::sync::atomic::Ordering::Relaxed) <= 3);
    assert_eq!(b.in_flight(), 0);
}
