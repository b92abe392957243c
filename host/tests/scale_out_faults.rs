//! Scale-out faults (issue 19): a worker SIGKILLed during a job (the job
//! completes on another worker after the visibility timeout, once, with the
//! same output), a job whose workers keep dying (dead-letter stream), and
//! Redis killed and restarted with AOF persistence (no accepted job lost).
mod scale_out_support;

use scale_out_support::*;
use serde_json::Value as Json;
use std::time::{Duration, Instant};

/// Waits for the first `progress` message of `id` (the job is running).
fn wait_running(ws: &mut Ws, id: &str) {
    loop {
        let m = ws.next();
        if m["type"] == "progress" && m["data"]["prompt_id"] == id {
            return;
        }
    }
}

#[test]
fn sigkilled_worker_job_completes_elsewhere_once_and_repeated_deaths_dead_letter() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), false);
    let url = redis.url();
    let server = Server::start(dir.path(), &["--queue", &url]);
    let mut ws = server.ws("c");
    let fast = ["--visibility-ms", "1500"];
    let mut a = Worker::start(dir.path(), &url, "a", &fast);
    // 12 steps of 150 ms: A is killed during it.
    let graph = looping_image_graph(7, 12, 150, "killed");
    let id = server.queue(&graph, Some("c"));
    wait_running(&mut ws, &id);
    a.sigkill();
    let started = Instant::now();
    let _b = Worker::start(
        dir.path(),
        &url,
        "b",
        &["--visibility-ms", "1500", "--max-attempts", "2"],
    );
    let entry = server.wait_history(&id, Duration::from_secs(60));
    assert!(
        started.elapsed() >= Duration::from_millis(1000),
        "taken over only after the visibility timeout"
    );
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    let (_, all) = server.get("/history");
    assert_eq!(
        all.as_object().unwrap().len(),
        1,
        "one history entry: {all}"
    );
    let reclaimed = first_image_pixels(&server, &entry);
    // A clean run of the same graph (same seed) on the surviving worker.
    let clean_id = server.queue(&graph, Some("c"));
    let clean = server.wait_history(&clean_id, Duration::from_secs(60));
    assert_eq!(
        first_image_pixels(&server, &clean),
        reclaimed,
        "same output as a clean run"
    );
    let status = queue_status(&url);
    let names: Vec<&str> = status["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["b"], "the killed worker's record expired: {status}");
    assert_eq!(status["dead_letters"].as_array().unwrap().len(), 0);

    // B (--max-attempts 2) dies during a job too; C (--max-attempts 1) then
    // takes it a second time: the dead-letter stream, with both errors.
    drop(_b);
    let mut b2 = Worker::start(dir.path(), &url, "b2", &fast);
    let doomed = server.queue(&looping_image_graph(8, 12, 150, "doomed"), Some("c"));
    wait_running(&mut ws, &doomed);
    b2.sigkill();
    let _c = Worker::start(
        dir.path(),
        &url,
        "c",
        &["--visibility-ms", "1500", "--max-attempts", "1"],
    );
    let entry = server.wait_history(&doomed, Duration::from_secs(60));
    assert_eq!(entry["status"]["status_str"], "error", "{entry}");
    let text = entry["status"]["messages"].to_string();
    assert!(
        text.contains("DeadLetter") && text.contains("worker `b2` stopped"),
        "{text}"
    );
    let status = queue_status(&url);
    let dead = status["dead_letters"].as_array().unwrap();
    assert_eq!(dead.len(), 1, "{status}");
    assert_eq!(dead[0]["prompt_id"], doomed.as_str());
    assert!(dead[0]["errors"].to_string().contains("b2"), "{status}");
}

#[test]
fn redis_killed_and_restarted_with_aof_loses_no_accepted_job() {
    let dir = tempfile::tempdir().unwrap();
    let mut redis = Redis::start(dir.path(), true);
    let url = redis.url();
    let server = Server::start(dir.path(), &["--queue", &url]);
    let _w: Vec<Worker> = (0..2)
        .map(|i| {
            Worker::start(
                dir.path(),
                &url,
                &format!("w{i}"),
                &["--visibility-ms", "5000"],
            )
        })
        .collect();
    let mut ids: Vec<String> = (0..16)
        .map(|k| server.queue(&slow_image_graph(k, 120, &format!("before{k}")), None))
        .collect();
    let before = wait_history_count(&server, 3, Duration::from_secs(60));
    let done = before.as_object().unwrap().len();
    assert!(
        done < ids.len(),
        "Redis goes down mid-run ({done} of {} done)",
        ids.len()
    );
    redis.kill();
    std::thread::sleep(Duration::from_millis(300));
    redis.restart();
    ids.extend(
        (0..4).map(|k| server.queue(&slow_image_graph(100 + k, 20, &format!("after{k}")), None)),
    );
    let history = wait_history_count(&server, ids.len(), Duration::from_secs(90));
    for id in &ids {
        let e: &Json = &history[id];
        assert_eq!(e["status"]["status_str"], "success", "{id}: {e}");
    }
    assert_eq!(history.as_object().unwrap().len(), ids.len());
}

/// Heartbeats keep a job that runs for three visibility timeouts with its
/// live worker: the idle second worker does not take it over.
#[test]
fn a_live_worker_keeps_a_job_longer_than_the_visibility_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let redis = Redis::start(dir.path(), false);
    let url = redis.url();
    let server = Server::start(dir.path(), &["--queue", &url]);
    let fast = ["--visibility-ms", "1000"];
    let _w: Vec<Worker> = (0..2)
        .map(|i| Worker::start(dir.path(), &url, &format!("w{i}"), &fast))
        .collect();
    let id = server.queue(&looping_image_graph(4, 12, 250, "long"), None);
    let entry = server.wait_history(&id, Duration::from_secs(60));
    assert_eq!(entry["status"]["status_str"], "success", "{entry}");
    // A takeover would still be running now; give it the time to finish.
    std::thread::sleep(Duration::from_millis(3500));
    let status = queue_status(&url);
    assert_eq!(workers_total(&status, "jobs"), 1, "ran once: {status}");
}
