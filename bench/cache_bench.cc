// Read-path figures for the shared-memory cache, printed in one run beside
// in-process references measured on the same machine in the same process:
//
//   * hit latency/throughput, random keys over 100k entries (36-char UUIDs),
//     1 and 2 reader threads, and 1 and 2 reader processes;
//   * a hot set of 1k keys, with a per-lookup latency distribution;
//   * the same lookups against std::unordered_map and a std::shared_mutex-
//     guarded std::unordered_map, and the ratios;
//   * the floor: a chase of dependent loads over as much memory as the file;
//   * chained lookups (each key chosen by the previous result), whose time is
//     one lookup's latency: beside the tight loop it shows how many lookups
//     the CPU overlaps;
//   * the memory of a cache sized for 1M entries, and how many it holds.
//
// Google Benchmark runs the timed loops; the summary table at the end is
// computed from its results. Targets are printed beside the figures; this is
// a measurement, not a test, so a missed target does not fail the run.
#include <benchmark/benchmark.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <unistd.h>
#include <x86intrin.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <map>
#include <mutex>
#include <numeric>
#include <random>
#include <shared_mutex>
#include <string>
#include <string_view>
#include <thread>
#include <unordered_map>
#include <vector>

#include "cache_writer.h"
#include "string_map.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {
namespace {

constexpr size_t kEntries = 100'000;
constexpr size_t kHot = 1'000;
constexpr size_t kSequence = 1 << 20;  // precomputed random key order

struct Row {
  std::string tenant, code, url, role;
};

using Map = bench::StringMap<Row>;

constexpr size_t kKeyLen = 36;  // test::Uuid

struct Fixture {
  test::TempDir dir;
  std::unique_ptr<CacheWriter> writer;
  tc_cache* cache = nullptr;
  tc_ns user = 0;
  std::vector<std::string> keys;
  std::vector<uint32_t> random_order, hot_order;
  // The keys of random_order and hot_order, kKeyLen bytes each, one after
  // another in lookup order: a request's key is in hand when it is looked
  // up (parsed from the request, in the CPU's cache), not fetched from a
  // table of 100k strings, which would cost every store two dependent
  // misses that are not its own.
  std::string random_keys, hot_keys;
  Map map;
  std::shared_mutex mutex;

  Fixture() {
    auto opts = test::FleetOptions(dir.File("bench-cache"), kEntries * 11 / 10);
    opts.stale_after_ns = 3600'000'000'000ull;  // the benchmark does not run a heartbeat
    writer = test::OpenSynced(opts);
    // The lookup keys stand for keys parsed from requests: allocated on their
    // own, not next to either side's entries.
    for (size_t i = 0; i < kEntries; ++i) keys.push_back(test::Uuid(i * 7919 + 13));
    std::vector<Row> rows;
    for (size_t i = 0; i < kEntries; ++i) {
      rows.push_back(Row{test::Uuid(i % 1000), "YACHT" + std::to_string(i % 1000),
                         "https://yacht" + std::to_string(i % 1000) + ".fleet.example.com",
                         i % 5 == 0 ? "captain" : "crew"});
      const Row& r = rows.back();
      const PutResult pr =
          writer->Put(0, keys[i], EntryData{r.tenant, {r.code, r.url, r.role}}, 0, writer->BeginFill());
      if (pr != PutResult::kStored) std::abort();
    }
    // The map is built in a shuffled order so that its nodes do not sit next
    // to the lookup keys in memory (which would hand it free cache hits).
    std::vector<uint32_t> insert_order(kEntries);
    for (uint32_t i = 0; i < kEntries; ++i) insert_order[i] = i;
    std::shuffle(insert_order.begin(), insert_order.end(), std::mt19937_64(7));
    map.reserve(kEntries);
    for (uint32_t i : insert_order) map.emplace(std::string(keys[i]), std::move(rows[i]));
    if (tc_cache_open(opts.path.c_str(), &cache) != 0 || tc_namespace(cache, "user", &user) != 0)
      std::abort();
    // Only keys the cache holds (an over-full bucket evicts a few percent),
    // so every timed lookup is a hit on both sides.
    std::vector<uint32_t> held;
    tc_value v;
    for (uint32_t i = 0; i < keys.size(); ++i)
      if (tc_cache_get(cache, user, keys[i].data(), keys[i].size(), &v) == TC_FOUND) held.push_back(i);
    held_fraction = static_cast<double>(held.size()) / static_cast<double>(keys.size());
    std::mt19937_64 rng(42);
    random_order.resize(kSequence);
    hot_order.resize(kSequence);
    for (auto& x : random_order) x = held[rng() % held.size()];
    for (auto& x : hot_order) x = held[rng() % kHot];
    for (const uint32_t x : random_order) random_keys += keys[x];
    for (const uint32_t x : hot_order) hot_keys += keys[x];
    if (random_keys.size() != kSequence * kKeyLen || hot_keys.size() != kSequence * kKeyLen) std::abort();
  }
  double held_fraction = 0;
};

// The floor: one dependent load per step over as much memory as the cache
// file, in the same page size as the file got. Each 64-byte line holds the
// address of the next, in one random cycle through all lines.
struct Chase {
  void* base = nullptr;
  size_t bytes = 0;
  const void* const* p = nullptr;

  Chase(size_t size, bool huge) : bytes(size) {
    base = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED) std::abort();
    if (huge) (void)madvise(base, bytes, MADV_HUGEPAGE);
    const size_t lines = bytes / 64;
    std::vector<size_t> order(lines);
    for (size_t i = 0; i < lines; ++i) order[i] = i;
    std::shuffle(order.begin(), order.end(), std::mt19937_64(11));
    auto* b = static_cast<unsigned char*>(base);
    for (size_t i = 0; i < lines; ++i)
      *reinterpret_cast<void**>(b + order[i] * 64) = b + order[(i + 1) % lines] * 64;
    p = static_cast<const void* const*>(base);
  }
  ~Chase() { munmap(base, bytes); }
};

Fixture* fixture = nullptr;
Chase* chase = nullptr;

// The key of the i-th lookup of the random or the hot order.
std::string_view KeyAt(bool hot, size_t i) {
  const std::string& keys = hot ? fixture->hot_keys : fixture->random_keys;
  return std::string_view(keys).substr((i & (kSequence - 1)) * kKeyLen, kKeyLen);
}

// Each lookup reads the role field, as a request handler would.
inline size_t CacheLookup(tc_value* v, std::string_view key) {
  if (tc_cache_get(fixture->cache, fixture->user, key.data(), key.size(), v) != TC_FOUND) std::abort();
  const char* role = nullptr;
  size_t len = 0;
  tc_value_field(v, 2, nullptr, &role, &len);
  return len;
}

inline size_t MapLookup(std::string_view key) {
  const auto it = fixture->map.find(key);
  return it->second.role.size();
}

inline size_t LockedMapLookup(std::string_view key) {
  std::shared_lock lock(fixture->mutex);
  return MapLookup(key);
}

// The two loops every store is measured with, over its lookup (key -> the
// role's length). The tight loop: independent lookups, which the CPU may
// overlap.
template <typename Lookup>
void TightLoop(benchmark::State& state, bool hot, Lookup lookup) {
  size_t i = static_cast<size_t>(state.thread_index()) * 7777;
  for (auto _ : state) benchmark::DoNotOptimize(lookup(KeyAt(hot, i++)));
  state.SetItemsProcessed(state.iterations());
}

// Chained: each lookup's key depends on the previous lookup's result, so
// lookups cannot overlap and the time is one lookup's latency (what a request
// that resolves one key, then works on the answer, waits).
template <typename Lookup>
void ChainedLoop(benchmark::State& state, bool hot, Lookup lookup) {
  size_t i = static_cast<size_t>(state.thread_index()) * 7777;
  for (auto _ : state) i += 1 + (lookup(KeyAt(hot, i)) >> 32);
  benchmark::DoNotOptimize(i);
  state.SetItemsProcessed(state.iterations());
}

void BM_Tenantcache(benchmark::State& state, bool hot) {
  tc_value v;
  TightLoop(state, hot, [&v](std::string_view key) { return CacheLookup(&v, key); });
}

void BM_UnorderedMap(benchmark::State& state, bool hot) { TightLoop(state, hot, MapLookup); }

void BM_SharedMutexMap(benchmark::State& state, bool hot) { TightLoop(state, hot, LockedMapLookup); }

void BM_TenantcacheChained(benchmark::State& state, bool hot) {
  tc_value v;
  ChainedLoop(state, hot, [&v](std::string_view key) { return CacheLookup(&v, key); });
}

void BM_UnorderedMapChained(benchmark::State& state, bool hot) { ChainedLoop(state, hot, MapLookup); }

void BM_SharedMutexMapChained(benchmark::State& state, bool hot) { ChainedLoop(state, hot, LockedMapLookup); }

void BM_PointerChase(benchmark::State& state) {
  const void* const* p = chase->p;
  for (auto _ : state) p = static_cast<const void* const*>(*p);
  benchmark::DoNotOptimize(p);
  chase->p = p;
  state.SetItemsProcessed(state.iterations());
}
BENCHMARK(BM_PointerChase)->Threads(1)->UseRealTime()->MinTime(0.1);

// Each benchmark runs several times, interleaved at random with the others
// (main sets the flags), and the summary takes the medians: on a shared
// machine the memory system's speed drifts over seconds, and a drift then
// moves every column alike instead of the ratio between two.
#define TC_BENCH(fn, label, hot) \
  BENCHMARK_CAPTURE(fn, label, hot)->Threads(1)->Threads(2)->UseRealTime()->MinTime(0.1)
TC_BENCH(BM_Tenantcache, random, false);
TC_BENCH(BM_UnorderedMap, random, false);
TC_BENCH(BM_SharedMutexMap, random, false);
BENCHMARK_CAPTURE(BM_TenantcacheChained, random, false)->Threads(1)->UseRealTime()->MinTime(0.1);
BENCHMARK_CAPTURE(BM_UnorderedMapChained, random, false)->Threads(1)->UseRealTime()->MinTime(0.1);
BENCHMARK_CAPTURE(BM_SharedMutexMapChained, random, false)->Threads(1)->UseRealTime()->MinTime(0.1);
TC_BENCH(BM_Tenantcache, hot, true);
TC_BENCH(BM_UnorderedMap, hot, true);
TC_BENCH(BM_SharedMutexMap, hot, true);

// Collects each run's time per lookup and throughput for the summary.
class Collector : public benchmark::ConsoleReporter {
 public:
  void ReportRuns(const std::vector<Run>& runs) override {
    for (const auto& r : runs) {
      // The median of the repetitions (or the one run, when repeated once).
      const bool median = r.run_type == Run::RT_Aggregate && r.aggregate_name == "median";
      if (!median && (r.run_type != Run::RT_Iteration || r.repetitions > 1)) continue;
      const auto it = r.counters.find("items_per_second");
      results[r.run_name.str()] = {r.GetAdjustedRealTime(), it == r.counters.end() ? 0.0 : it->second.value};
    }
    ConsoleReporter::ReportRuns(runs);
  }
  struct Figure {
    double ns_per_op;
    double ops_per_s;
  };
  std::map<std::string, Figure> results;
};

// Per-lookup latency, timed with the TSC around each lookup (the timer's
// own cost, its mean, subtracted): what compare_bench measures for section
// 1 of bench/RESULTS.md. The timer keeps lookups from overlapping.
//
// A virtualised TSC may advance in ticks of many cycles (21 cycles, 10 ns,
// on the machine of bench/RESULTS.md), as coarse as a hot hit's difference
// from its target. A lookup that starts at a random phase of the tick reads
// the whole ticks below or above its length, each as often as the length is
// near it: so the mean of the readings is unbiased (the timer's cost is
// taken as a mean), and a quantile is interpolated inside the tick it falls
// in, as for grouped data. `tick_ns` and the uninterpolated p50 are printed
// beside it.
struct Percentiles {
  double p50, p99;
  double p50_raw = 0, tick_ns = 0;
};

double NsPerCycle() {
  static const double ns_per_cycle = [] {
    const auto t0 = std::chrono::steady_clock::now();
    const uint64_t c0 = __rdtsc();
    while (std::chrono::steady_clock::now() - t0 < std::chrono::milliseconds(200)) {
    }
    return std::chrono::duration<double, std::nano>(std::chrono::steady_clock::now() - t0).count() /
           static_cast<double>(__rdtsc() - c0);
  }();
  return ns_per_cycle;
}

// Quantile `q` of `sorted` readings that are whole ticks of `tick` cycles:
// the reading at that rank, less half a tick, plus the rank's share of the
// readings equal to it.
double TickQuantile(const std::vector<uint64_t>& sorted, double q, uint64_t tick) {
  const auto rank = static_cast<size_t>(q * static_cast<double>(sorted.size()));
  const uint64_t v = sorted[rank];
  const auto lo = std::lower_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
  const auto hi = std::upper_bound(sorted.begin(), sorted.end(), v) - sorted.begin();
  return static_cast<double>(v) - static_cast<double>(tick) / 2 +
         static_cast<double>(tick) * (static_cast<double>(rank - static_cast<size_t>(lo)) + 0.5) /
             static_cast<double>(hi - lo);
}

// `key(i)` is fetched before the timer starts; `step` is what is timed.
template <typename Key, typename Step>
Percentiles TimedLatency(Key key, Step step) {
  constexpr size_t kSamples = 400'000;
  unsigned aux;
  std::vector<uint64_t> empty(kSamples), cycles(kSamples);
  for (size_t i = 0; i < kSamples; ++i) {
    const uint64_t a = __rdtscp(&aux);
    const uint64_t b = __rdtscp(&aux);
    empty[i] = b - a;
  }
  std::sort(empty.begin(), empty.end());
  // The tick: the smallest step between two readings.
  uint64_t tick = 0;
  for (size_t i = 1; i < kSamples; ++i)
    if (empty[i] != empty[i - 1] && (tick == 0 || empty[i] - empty[i - 1] < tick))
      tick = empty[i] - empty[i - 1];
  if (tick == 0) tick = 1;
  const double overhead = std::accumulate(empty.begin(), empty.end(), 0.0) / kSamples;
  for (size_t i = 0; i < kSamples; ++i) {
    const auto& k = key(i);
    const uint64_t a = __rdtscp(&aux);
    step(k);
    const uint64_t b = __rdtscp(&aux);
    cycles[i] = b - a;
  }
  std::sort(cycles.begin(), cycles.end());
  const double ns = NsPerCycle();
  const auto at = [&](double q) { return std::max(0.0, TickQuantile(cycles, q, tick) - overhead) * ns; };
  return {at(0.5), at(0.99), std::max(0.0, static_cast<double>(cycles[kSamples / 2]) - overhead) * ns,
          static_cast<double>(tick) * ns};
}

// A store's lookup (key -> the role's length), each timed, over the random
// or the hot order.
template <typename Lookup>
Percentiles LookupLatency(bool hot, Lookup lookup) {
  return TimedLatency([hot](size_t i) { return KeyAt(hot, i); },
                      [&](std::string_view k) { benchmark::DoNotOptimize(lookup(k)); });
}

Percentiles ChaseLatency() {
  const void* const* p = chase->p;
  const auto r = TimedLatency([](size_t) { return 0; },
                              [&](int) {
                                p = static_cast<const void* const*>(*p);
                                benchmark::DoNotOptimize(p);
                              });
  chase->p = p;
  return r;
}

// Throughput of `procs` reader processes, each mapping the cache itself.
double ProcessThroughput(int procs) {
  auto* counts = static_cast<std::atomic<uint64_t>*>(
      mmap(nullptr, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0));
  auto* go = counts + 64;
  new (go) std::atomic<uint64_t>(0);
  std::vector<pid_t> pids;
  const std::string path = fixture->dir.File("bench-cache");
  for (int p = 0; p < procs; ++p) {
    new (counts + p) std::atomic<uint64_t>(0);
    const pid_t pid = fork();
    if (pid == 0) {
      tc_cache* c = nullptr;
      if (tc_cache_open(path.c_str(), &c) != 0) _exit(1);
      tc_value v;
      size_t i = static_cast<size_t>(p) * 7777;
      uint64_t n = 0;
      while (go->load(std::memory_order_acquire) == 0) {
      }
      while (go->load(std::memory_order_relaxed) == 1) {
        for (int k = 0; k < 1024; ++k) {
          const std::string_view key = KeyAt(false, i++);
          if (tc_cache_get(c, fixture->user, key.data(), key.size(), &v) != TC_FOUND) _exit(2);
        }
        n += 1024;
      }
      counts[p].store(n);
      _exit(0);
    }
    pids.push_back(pid);
  }
  std::this_thread::sleep_for(std::chrono::milliseconds(100));  // let the children map and spin up
  const auto start = std::chrono::steady_clock::now();
  go->store(1, std::memory_order_release);
  std::this_thread::sleep_for(std::chrono::seconds(2));
  go->store(2, std::memory_order_relaxed);
  const double secs = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  uint64_t total = 0;
  for (int p = 0; p < procs; ++p) {
    int status = 0;
    waitpid(pids[static_cast<size_t>(p)], &status, 0);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) std::fprintf(stderr, "reader process failed\n");
    total += counts[p].load();
  }
  munmap(counts, 4096);
  return static_cast<double>(total) / secs;
}

struct MemoryFigure {
  uint64_t file_bytes, recency_bytes, inserted, held;
};

MemoryFigure Memory() {
  test::TempDir dir;
  // Sized so that 1M keys stay resident: an 8-way bucket overflows before the
  // whole file is full, so capacity is set 10% above the entries to hold.
  auto opts = test::FleetOptions(dir.File("mem-cache"), 1'100'000);
  auto w = test::OpenSynced(opts);
  MemoryFigure m{w->file_bytes(), w->recency_bytes(), 1'100'000, 0};
  for (uint64_t i = 0; i < m.inserted; ++i) {
    const std::string tenant = test::Uuid(i % 1000);
    (void)w->Put(0, test::Uuid(i),
                 EntryData{tenant, {"YACHT123", "https://yacht123.fleet.example.com", "crew"}}, 0,
                 w->BeginFill());
  }
  m.held = w->stats().entries;
  return m;
}

const char* Verdict(bool ok) { return ok ? "meets target" : "MISSES target"; }

}  // namespace
}  // namespace tenantcache

int main(int argc, char** argv) {
  using tenantcache::fixture;
  // Repetitions in random order (see TC_BENCH); flags given on the command
  // line come later and win.
  std::vector<char*> args{argv[0]};
  char reps[] = "--benchmark_repetitions=5";
  char interleave[] = "--benchmark_enable_random_interleaving=true";
  char aggregates[] = "--benchmark_report_aggregates_only=true";
  args.insert(args.end(), {reps, interleave, aggregates});
  args.insert(args.end(), argv + 1, argv + argc);
  int args_count = static_cast<int>(args.size());
  benchmark::Initialize(&args_count, args.data());
  fixture = new tenantcache::Fixture();
  tenantcache::chase =
      new tenantcache::Chase(fixture->writer->file_bytes() / 64 * 64, fixture->writer->huge_page_bytes() > 0);
  tenantcache::Collector collector;
  benchmark::RunSpecifiedBenchmarks(&collector);

  // Run names look like "BM_Tenantcache/random/min_time:0.500/real_time/threads:1".
  auto fig = [&](const std::string& prefix, int threads) {
    const std::string suffix = "threads:" + std::to_string(threads);
    for (const auto& [name, f] : collector.results)
      if (name.rfind(prefix + "/", 0) == 0 && name.size() >= suffix.size() &&
          name.compare(name.size() - suffix.size(), suffix.size(), suffix) == 0)
        return f;
    std::fprintf(stderr, "no result for %s (filtered out?)\n", prefix.c_str());
    return tenantcache::Collector::Figure{std::nan(""), std::nan("")};
  };
  const auto tc1 = fig("BM_Tenantcache/random", 1);
  const auto tc2 = fig("BM_Tenantcache/random", 2);
  const auto um1 = fig("BM_UnorderedMap/random", 1);
  const auto sm1 = fig("BM_SharedMutexMap/random", 1);
  const auto sm2 = fig("BM_SharedMutexMap/random", 2);
  const auto tcc = fig("BM_TenantcacheChained/random", 1);
  const auto umc = fig("BM_UnorderedMapChained/random", 1);
  const auto floor = fig("BM_PointerChase", 1);
  const auto tch = fig("BM_Tenantcache/hot", 1);
  const auto umh = fig("BM_UnorderedMap/hot", 1);
  const auto smh = fig("BM_SharedMutexMap/hot", 1);
  const auto smc = fig("BM_SharedMutexMapChained/random", 1);
  tc_value v;
  const auto cache_lookup = [&v](std::string_view key) { return tenantcache::CacheLookup(&v, key); };
  const auto lat = tenantcache::LookupLatency(true, cache_lookup);
  const auto tc_lat = tenantcache::LookupLatency(false, cache_lookup);
  const auto um_lat = tenantcache::LookupLatency(false, tenantcache::MapLookup);
  const auto sm_lat = tenantcache::LookupLatency(false, tenantcache::LockedMapLookup);
  const auto chase_lat = tenantcache::ChaseLatency();
  const double p1 = tenantcache::ProcessThroughput(1);
  const double p2 = tenantcache::ProcessThroughput(2);
  const auto mem = tenantcache::Memory();
  using tenantcache::Verdict;

  std::printf("\n== tenantcache read path: summary (%u CPUs) ==\n", std::thread::hardware_concurrency());
  // Whether the file got 2 MiB pages depends on the filesystem under
  // $TMPDIR (a tmpfs mounted huge=advise gives them; packaging/bench.sh runs
  // this with and without).
  std::printf("cache file %.1f MiB, %.1f MiB of it in 2 MiB pages\n",
              static_cast<double>(fixture->writer->file_bytes()) / (1 << 20),
              static_cast<double>(fixture->writer->huge_page_bytes()) / (1 << 20));
  // One table, one run, three ways of timing the same lookups: a tight loop
  // of independent lookups (which the CPU may overlap), a chain where each
  // key depends on the lookup before (one lookup's latency), and each lookup
  // timed on its own (section 1's method). The pointer chase is the floor.
  std::printf("random-key hit over 100k entries, 1 thread, ns per lookup (throughput = 1e9 / tight loop):\n");
  std::printf("  %-34s %11s %11s %11s %11s %10s\n", "store", "tight loop", "chained", "timed p50",
              "timed p99", "M/s");
  auto table_row = [](const char* store, double loop, double chained, const tenantcache::Percentiles& t) {
    std::printf("  %-34s %11.1f %11.1f %11.1f %11.1f %10.2f\n", store, loop, chained, t.p50, t.p99,
                1e3 / loop);
  };
  table_row("tenantcache (get + field)", tc1.ns_per_op, tcc.ns_per_op, tc_lat);
  table_row("unordered_map, unlocked", um1.ns_per_op, umc.ns_per_op, um_lat);
  table_row("unordered_map + shared_mutex", sm1.ns_per_op, smc.ns_per_op, sm_lat);
  table_row("one dependent load (pointer chase)", floor.ns_per_op, floor.ns_per_op, chase_lat);
  std::printf("  tenantcache / shared_mutex map:    %10.2fx %10.2fx %10.2fx %10.2fx\n",
              tc1.ns_per_op / sm1.ns_per_op, tcc.ns_per_op / smc.ns_per_op, tc_lat.p50 / sm_lat.p50,
              tc_lat.p99 / sm_lat.p99);
  std::printf("  tenantcache / unlocked map:        %10.2fx %10.2fx %10.2fx %10.2fx\n",
              tc1.ns_per_op / um1.ns_per_op, tcc.ns_per_op / umc.ns_per_op, tc_lat.p50 / um_lat.p50,
              tc_lat.p99 / um_lat.p99);
  std::printf("random-key hit, 100k entries (%.1f%% held), 1 thread:\n", fixture->held_fraction * 100);
  std::printf("  tenantcache %.1f ns | unordered_map %.1f ns | shared_mutex map %.1f ns\n", tc1.ns_per_op,
              um1.ns_per_op, sm1.ns_per_op);
  std::printf("  ratio vs unordered_map   %.2fx (target <= 1.3x: %s)\n", tc1.ns_per_op / um1.ns_per_op,
              Verdict(tc1.ns_per_op <= 1.3 * um1.ns_per_op));
  std::printf("  ratio vs shared_mutex    %.2fx (target <= 1.0x: %s)\n", tc1.ns_per_op / sm1.ns_per_op,
              Verdict(tc1.ns_per_op <= 1.0 * sm1.ns_per_op));
  std::printf(
      "  ratio vs one dependent load over %.0f MiB (pointer chase, %.1f ns)  %.2fx (target <= 1.5x: %s)\n",
      static_cast<double>(tenantcache::chase->bytes) / (1 << 20), floor.ns_per_op,
      tc1.ns_per_op / floor.ns_per_op, Verdict(tc1.ns_per_op <= 1.5 * floor.ns_per_op));
  std::printf("random-key hit, each lookup's key chosen by the one before (one lookup's latency):\n");
  std::printf("  tenantcache %.1f ns | unordered_map %.1f ns (ratio %.2fx)\n", tcc.ns_per_op, umc.ns_per_op,
              tcc.ns_per_op / umc.ns_per_op);
  std::printf("  lookups overlapping in the loop above: tenantcache %.2f | unordered_map %.2f\n",
              tcc.ns_per_op / tc1.ns_per_op, umc.ns_per_op / um1.ns_per_op);
  std::printf("random-key hit, 2 threads: tenantcache %.2f M/s | shared_mutex map %.2f M/s (ratio %.2fx)\n",
              tc2.ops_per_s / 1e6, sm2.ops_per_s / 1e6,
              sm2.ops_per_s > 0 ? tc2.ops_per_s / sm2.ops_per_s : 0.0);
  std::printf("  2 threads / 1 thread throughput  %.2fx\n", tc2.ops_per_s / tc1.ops_per_s);
  std::printf("  2 processes / 1 process          %.2fx (%.2f -> %.2f M/s; target >= 1.9x: %s)\n", p2 / p1,
              p1 / 1e6, p2 / 1e6, Verdict(p2 >= 1.9 * p1));
  std::printf(
      "hot set of 1k keys, 1 thread: tenantcache %.1f ns | unordered_map %.1f ns | shared_mutex %.1f ns\n",
      tch.ns_per_op, umh.ns_per_op, smh.ns_per_op);
  std::printf("  per-lookup latency p50 %.1f ns, p99 %.1f ns (target p50 <= 40 ns: %s)\n", lat.p50, lat.p99,
              Verdict(lat.p50 <= 40));
  std::printf(
      "  (the TSC advances in ticks of %.1f ns: p50 read in whole ticks %.1f ns; quantiles interpolated "
      "inside the tick)\n",
      lat.tick_ns, lat.p50_raw);
  const double mib = static_cast<double>(mem.file_bytes + mem.recency_bytes) / (1 << 20);
  std::printf("memory, capacity 1.1M: %.1f MiB (entries file %.1f + recency %.1f)\n", mib,
              static_cast<double>(mem.file_bytes) / (1 << 20),
              static_cast<double>(mem.recency_bytes) / (1 << 20));
  std::printf(
      "  %llu distinct keys inserted, %llu resident: %.0f bytes per resident entry (target 1M in <= 512 MiB: "
      "%s)\n",
      static_cast<unsigned long long>(mem.inserted), static_cast<unsigned long long>(mem.held),
      static_cast<double>(mem.file_bytes + mem.recency_bytes) / static_cast<double>(mem.held),
      Verdict(mem.held >= 1'000'000 && mib <= 512));
  tc_cache_close(fixture->cache);
  delete tenantcache::chase;
  delete fixture;
  benchmark::Shutdown();
  return 0;
}
