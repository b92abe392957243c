//! Fixture nodes for tests and benchmarks. Not loaded by default (the file
//! name does not start with `libdiffgraph_nodes_`); tests load it by path.
#![deny(unsafe_code)]
use diffgraph_sdk::prelude::*;
use std::sync::atomic::{AtomicI64, Ordering};

/// Counts its own executions, so tests can prove what ran and what was cached.
static RUNS: AtomicI64 = AtomicI64::new(0);

/// Passes `x` through and reports how many times any Count node has run in
/// this process (including this run).
struct Count;
impl Node for Count {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Count", "testing")
            .description(
                "Passes x through; `runs` is the number of Count executions so far in this process",
            )
            .input(InputSpec::new("x", PortType::Any))
            .input(InputSpec::string("tag").default(""))
            .output(OutputSpec::new("x", PortType::Any))
            .output(OutputSpec::new("runs", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let runs = RUNS.fetch_add(1, Ordering::SeqCst) + 1;
        Ok(vec![inputs.get("x")?.to_owned_value()?, Value::Int(runs)])
    }
}

/// Panics with a message: the host must survive and report it.
struct Panic;
impl Node for Panic {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Panic", "testing")
            .description("Panics when run")
            .input(InputSpec::string("message").default("boom"))
            .output(OutputSpec::new("never", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        panic!("{}", inputs.str("message")?);
    }
}

/// Returns a shallow copy of its tensor (a new handle, no data copy).
struct PassTensor;
impl Node for PassTensor {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("PassTensor", "testing")
            .description("Returns its input tensor (same storage)")
            .input(InputSpec::tensor("x"))
            .output(OutputSpec::new("x", PortType::Tensor))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.tensor("x")?.shallow_clone().into()])
    }
}

/// a + b on ints: the cheapest possible node, for overhead benchmarks.
struct AddInt;
impl Node for AddInt {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("AddInt", "testing")
            .description("a + b")
            .input(InputSpec::int("a"))
            .input(InputSpec::int("b").default(1))
            .output(OutputSpec::new("sum", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![Value::Int(inputs.int("a")? + inputs.int("b")?)])
    }
}

/// Appends to a list: makes loop iteration order visible.
struct Append;
impl Node for Append {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Append", "testing")
            .description("list + [item]")
            .input(InputSpec::new("list", PortType::list(PortType::Int)))
            .input(InputSpec::int("item"))
            .output(OutputSpec::new("list", PortType::list(PortType::Int)))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let mut v = inputs.int_list("list")?;
        v.push(inputs.int("item")?);
        Ok(vec![v.into()])
    }
}

/// An object only this library can read, to test object passing.
struct Counter {
    start: i64,
}

struct MakeCounter;
impl Node for MakeCounter {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("MakeCounter", "testing")
            .input(InputSpec::int("start").default(0))
            .output(OutputSpec::new("counter", PortType::object("TEST_COUNTER")))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![Object::new(
            "TEST_COUNTER",
            Counter {
                start: inputs.int("start")?,
            },
        )
        .into()])
    }
}

struct ReadCounter;
impl Node for ReadCounter {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("ReadCounter", "testing")
            .input(InputSpec::new("counter", PortType::object("TEST_COUNTER")))
            .input(InputSpec::int("offset").default(0).range(-100.0, 100.0))
            .input(
                InputSpec::string("mode")
                    .default("add")
                    .choices(&["add", "sub"]),
            )
            .output(OutputSpec::new("value", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let c: &Counter = inputs.object("counter")?;
        let off = inputs.int("offset")?;
        Ok(vec![Value::Int(if inputs.str("mode")? == "add" {
            c.start + off
        } else {
            c.start - off
        })])
    }
}

/// Declares an INT output but returns a string: the host must refuse it.
struct Liar;
impl Node for Liar {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Liar", "testing").output(OutputSpec::new("n", PortType::Int))
    }
    fn run(&self, _: &Context, _: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec!["not an int".into()])
    }
}

/// Fails with an ordinary error.
struct Fail;
impl Node for Fail {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Fail", "testing")
            .input(InputSpec::string("message").default("it failed"))
            .output(OutputSpec::new("never", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Err(NodeError::new(inputs.str("message")?))
    }
}

/// An output node that records an int (tests use it as a graph's sink).
struct Sink;
impl Node for Sink {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Sink", "testing")
            .description("Output node that returns its input")
            .input(InputSpec::new("x", PortType::Any))
            .output(OutputSpec::new("x", PortType::Any))
            .output_node()
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        Ok(vec![inputs.get("x")?.to_owned_value()?])
    }
}

/// Sleeps `ms` milliseconds without checking the interrupt flag, then
/// passes `x` through: a job of known length (server tests: interrupting,
/// queueing behind a running job) and a node that ignores a first Ctrl-C.
struct Sleep;
impl Node for Sleep {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Sleep", "testing")
            .description("Sleeps `ms` milliseconds, then passes x through")
            .input(InputSpec::new("x", PortType::Any).optional())
            .input(InputSpec::int("ms").default(10).range(0.0, 600_000.0))
            .output(OutputSpec::new("x", PortType::Any))
            .output(OutputSpec::new("ms", PortType::Int))
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        let ms = inputs.int("ms")?;
        std::thread::sleep(std::time::Duration::from_millis(ms as u64));
        Ok(vec![inputs.get("x")?.to_owned_value()?, Value::Int(ms)])
    }
}

/// Ends the whole process the way a broken native library would, for the
/// worker-isolation tests (`diffgraph serve`): `abort`, `segfault` (a real
/// invalid read), `stack_overflow` (unbounded recursion) or `exit` (status 3).
struct Crash;
impl Node for Crash {
    fn schema(&self) -> NodeSchema {
        NodeSchema::new("Crash", "testing")
            .description("Kills its process when run (abort, segfault, stack overflow or exit)")
            .input(InputSpec::new("x", PortType::Any).optional())
            .input(InputSpec::string("mode").choices(&[
                "abort",
                "segfault",
                "stack_overflow",
                "exit",
            ]))
            .output(OutputSpec::new("never", PortType::Int))
            .output_node()
    }
    fn run(&self, _: &Context, inputs: &Inputs) -> Result<Vec<Value>, NodeError> {
        match inputs.str("mode")? {
            "abort" => std::process::abort(),
            "exit" => std::process::exit(3),
            "stack_overflow" => Ok(vec![Value::Int(recurse(1) as i64)]),
            _ => Ok(vec![Value::Int(segfault() as i64)]),
        }
    }
}

/// Recursion with a frame the optimiser cannot drop.
fn recurse(n: u64) -> u64 {
    let frame = std::hint::black_box([n; 512]);
    if frame[0] == 0 {
        return 0;
    }
    recurse(frame[7].wrapping_add(1)).wrapping_add(frame[3])
}

/// Reads address 0: the fixture's one purpose is to crash like C code does.
#[allow(unsafe_code)]
fn segfault() -> u8 {
    let null = std::hint::black_box(std::ptr::null::<u8>());
    // SAFETY: none; this is the crash under test (a SIGSEGV by design).
    unsafe { std::ptr::read_volatile(null) }
}

export_plugin!(
    "testing",
    [
        Count,
        Panic,
        PassTensor,
        AddInt,
        Append,
        MakeCounter,
        ReadCounter,
        Liar,
        Fail,
        Sink,
        Sleep,
        Crash
    ]
);
