//! One cache shared by several executors (a server's workers): a result
//! computed by one executor is served to the others, and executors run on
//! threads of their own.
mod common;

use diffgraph::{Executor, SharedCache, Silent, Value};

/// A counting node upstream of an adder whose constant `b` changes.
fn chain(b: i64) -> String {
    format!(
        r#"{{"nodes": {{
            "src": {{"type": "AddInt", "inputs": {{"a": 7, "b": 1}}}},
            "count": {{"type": "Count", "inputs": {{"x": ["src", "sum"], "tag": "shared"}}}},
            "down": {{"type": "AddInt", "inputs": {{"a": ["count", "x"], "b": {b}}}}},
            "out": {{"type": "Sink", "inputs": {{"x": ["down", "sum"]}}}}}}}}"#
    )
}

fn out(outcome: &diffgraph::RunOutcome) -> i64 {
    match outcome.output("out", "x") {
        Some(Value::Int(i)) => *i,
        other => panic!("expected an int, got {other:?}"),
    }
}

fn has(list: &[String], id: &str) -> bool {
    list.iter().any(|e| e == id)
}

#[test]
fn executors_sharing_a_cache_reuse_each_others_results() {
    let registry = common::registry_with(&["diffgraph_testnodes"]);
    let cache = SharedCache::new(4);
    let mut a = Executor::with_cache(registry.clone(), cache.clone());
    let mut b = Executor::with_cache(registry, cache.clone());
    assert!(a.cache.same_as(&b.cache));

    let first = common::run_text(&mut a, &chain(1), None);
    assert_eq!(out(&first), 9);
    assert!(has(&first.executed, "count"), "{first:?}");

    // The other executor finds what the first computed, and the reverse.
    let second = common::run_text(&mut b, &chain(2), None);
    assert_eq!(out(&second), 10);
    assert!(
        has(&second.cached, "count") && has(&second.cached, "src"),
        "{second:?}"
    );
    assert!(has(&second.executed, "down"), "{second:?}");
    let third = common::run_text(&mut a, &chain(2), None);
    assert!(has(&third.cached, "down"), "{third:?}");

    // A private cache shares nothing.
    let mut alone = Executor::new(a.registry.clone());
    assert!(!alone.cache.same_as(&cache));
    let fourth = common::run_text(&mut alone, &chain(1), None);
    assert!(has(&fourth.executed, "count"), "{fourth:?}");
}

#[test]
fn an_executor_runs_on_another_thread() {
    let mut main = Executor::new(common::registry_with(&["diffgraph_testnodes"]));
    common::run_text(&mut main, &chain(3), None);

    // Workers share the cache; each runs on its own thread, concurrently.
    let workers: Vec<Executor> = (0..2).map(|_| main.worker()).collect();
    let outcomes: Vec<_> = std::thread::scope(|s| {
        let handles: Vec<_> = workers
            .into_iter()
            .enumerate()
            .map(|(k, mut exec)| {
                s.spawn(move || {
                    let text = chain(3 + k as i64);
                    let checked = diffgraph::parse_graph(&text, &[], &exec.registry, true)
                        .unwrap_or_else(|e| panic!("{e}"));
                    exec.run(&checked, None, &Silent)
                        .unwrap_or_else(|e| panic!("{e}"))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for (k, o) in outcomes.iter().enumerate() {
        assert_eq!(out(o), 8 + 3 + k as i64);
        assert!(has(&o.cached, "count"), "worker {k}: {o:?}");
    }

    // A validated graph and the executor itself move between threads.
    let checked = diffgraph::parse_graph(&chain(3), &[], &main.registry, true).unwrap();
    let again = std::thread::spawn(move || main.run(&checked, None, &Silent).unwrap())
        .join()
        .unwrap();
    assert!(has(&again.cached, "down"), "{again:?}");
}
