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
// including those an op calls internally (e.g. linear -> t, addmm).
#include <ATen/record_function.h>

#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <mutex>
#include <string>

namespace {
std::mutex mu;
std::map<std::string, long>* top = new std::map<std::string, long>();
std::map<std::string, long>* all = new std::map<std::string, long>();
thread_local int depth = 0;

std::unique_ptr<at::ObserverContext> on_start(const at::RecordFunction& fn) {
  {
    std::lock_guard<std::mutex> g(mu);
    (*all)[fn.name()] += 1;
    if (depth == 0) (*top)[fn.name()] += 1;
  }
  depth += 1;
  return nullptr;
}

void on_end(const at::RecordFunction&, at::ObserverContext*) { depth -= 1; }

void write(const char* path) {
  std::lock_guard<std::mutex> g(mu);
  FILE* f = std::fopen(path, "w");
  if (!f) return;
  auto dump = [&](const char* key, const std::map<std::string, long>& m) {
    std::fprintf(f, "\"%s\": {", key);
    bool first = true;
    for (auto& [k, v] : m) {
      std::fprintf(f, "%s\"%s\": %ld", first ? "" : ", ", k.c_str(), v);
      first = false;
    }
    std::fprintf(f, "}");
  };
  std::fprintf(f, "{");
  dump("top", *top);
  std::fprintf(f, ", ");
  dump("all", *all);
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
}

extern "C" void opcount_dump(const char* path) { write(path); }
