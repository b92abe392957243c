//! Generated graphs for the scale tests and benchmarks (host/tests/scale.rs,
//! host/benches/scale.rs): long chains in either id order. Graph objects are
//! read in sorted-id order, so `reverse` decides whether walks meet a
//! chain's sources or its ends first.
use std::fmt::Write;

/// The id of link `i` of a chain of `n`: ascending along the chain, or
/// descending when `reverse`.
fn id(prefix: &str, i: usize, n: usize, reverse: bool) -> String {
    let k = if reverse { n - 1 - i } else { i };
    format!("{prefix}{k:07}")
}

/// `n` AddInt nodes, each adding 1 to the previous sum, and a Sink at the end
/// (the testnodes plugin). The sum is `n + 1`.
pub fn add_chain(n: usize, reverse: bool) -> String {
    let mut s = String::with_capacity(n * 80);
    s.push_str("{\"nodes\": {\n");
    for i in 0..n {
        let a = if i == 0 {
            "1".to_string()
        } else {
            format!("[\"{}\", \"sum\"]", id("n", i - 1, n, reverse))
        };
        writeln!(
            s,
            "\"{}\": {{\"type\": \"AddInt\", \"inputs\": {{\"a\": {a}}}}},",
            id("n", i, n, reverse)
        )
        .unwrap();
    }
    writeln!(
        s,
        "\"sink\": {{\"type\": \"Sink\", \"inputs\": {{\"x\": [\"{}\", \"sum\"]}}}}",
        id("n", n - 1, n, reverse)
    )
    .unwrap();
    s.push_str("}}\n");
    s
}

/// `n` Loops of one iteration each, each carrying `acc` from the previous
/// loop's final value and adding 1 to it in its body; a Sink at the end.
/// The final `acc` is `n`.
pub fn loop_chain(n: usize, reverse: bool) -> String {
    let mut s = String::with_capacity(n * 200);
    s.push_str("{\"nodes\": {\n");
    for i in 0..n {
        let l = id("l", i, n, reverse);
        let b = id("b", i, n, reverse);
        let acc = if i == 0 {
            "0".to_string()
        } else {
            format!("[\"{}\", \"acc\"]", id("l", i - 1, n, reverse))
        };
        writeln!(
            s,
            "\"{l}\": {{\"type\": \"Loop\", \"inputs\": {{\"over\": 1, \"acc\": {acc}}}, \
             \"body\": {{\"{b}\": {{\"type\": \"AddInt\", \"inputs\": {{\"a\": [\"{l}\", \"acc\"]}}}}}}, \
             \"next\": {{\"acc\": [\"{b}\", \"sum\"]}}}},"
        )
        .unwrap();
    }
    writeln!(
        s,
        "\"sink\": {{\"type\": \"Sink\", \"inputs\": {{\"x\": [\"{}\", \"acc\"]}}}}",
        id("l", n - 1, n, reverse)
    )
    .unwrap();
    s.push_str("}}\n");
    s
}
