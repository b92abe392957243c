// Counts the aten ops a process dispatches, through libtorch's RecordFunction
// global callbacks (the hooks torch.profiler records from), so that the same
// counter works for diffgraph (tch) and for PyTorch/diffusers.
// Built and used by scripts/bench/unet_ops.sh; not part of the build.
//
// Loaded with LD_PRELOAD (or ctypes after `import torch`), it registers a
// callback at load. `opcount_reset()` clears the counts; `opcount_dump(path)`
// writes them as JSON; if OPCOUNT_OUT is set, they are also written there at
// exit. "top" counts only ops called from outside any other op on the same
// thread (what a model's code issues); "all" counts every dispatched op,
// including those an op calls internally (e.g. linear -> t, addmm);
// "top_seconds" sums the wall time of the top-level ops by name (time spent
// outside aten ops, e.g. in diffgraph's own Rust kernels, is not in it).
#include <ATen/record_function.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace {
std::mutex mu;
std::map<std::string, long>* top = new std::map<std::string, long>();
std::map<std::string, long>* all = new std::map<std::string, long>();
std::map<std::string, double>* top_seconds = new std::map<std::string, double>();
thread_local int depth = 0;

// When a top-level op started.
struct Started : at::ObserverContext {
  std::chrono::steady_clock::time_point at = std::chrono::steady_clock::now();
};

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  bool is_top = depth == 0;
  {
    std::lock_guard<std::mutex> g(mu);
    (*all)[fn.name()] += 1;
    if (is_top) (*top)[fn.name()] += 1;
  }
  depth += 1;
  if (is_top) return std::make_unique<Started>();
  return nullptr;
}

void on_end(const at::RecordFunction& fn, at::ObserverContext* ctx) {
  depth -= 1;
  if (auto* started = static_cast<Started*>(ctx)) {
    std::chrono::duration<double> took = std::chrono::steady_clock::now() - started->at;
    std::lock_guard<std::mutex> g(mu);
    (*top_seconds)[fn.name()] += took.count();
  }
}

void write(const char* path) {
  std::lock_guard<std::mutex> g(mu);
  FILE* f = std::fopen(path, "w");
  if (!f) return;
  auto dump = [&](const char* key, const auto& m) {
    std::fprintf(f, "\"%s\": {", key);
    bool first = true;
    for (auto& [k, v] : m) {
      std::fprintf(f, "%s\"%s\": %.9g", first ? "" : ", ", k.c_str(), double(v));
      first = false;
    }
    std::fprintf(f, "}");
  };
  std::fprintf(f, "{");
  dump("top", *top);
  std::fprintf(f, ", ");
  dump("all", *all);
  std::fprintf(f, ", ");
  dump("top_seconds", *top_seconds);
  std::fprintf(f, "}\n");
  std::fclose(f);
}

__attribute__((constructor)) void install() {
  at::addGlobalCallback(at::RecordFunctionCallback(on_start, on_end)
                            .scopes({at::RecordScope::FUNCTION})
                            .needsInputs(false));
}

__attribute__((destructor)) void finish() {
  if (const char* p = std::getenv("OPCOUNT_OUT")) write(p);
}
}  // namespace

extern "C" void opcount_reset() {
  std::lock_guard<std::mutex> g(mu);
  top->clear();
  all->clear();
  top_seconds->clear();
}

extern "C" void opcount_dump(const char* path) { write(path); }
