#include "daemon.h"

#include <signal.h>
#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <sstream>

#include "keys.h"
#include "listener.h"
#include "loader.h"
#include "protocol.h"
#include "reader.h"
#include "stats_format.h"
#include "uv_handle.h"

namespace tenantcache {

Daemon::Daemon(uv_loop_t* loop, Config config, std::unique_ptr<CacheWriter> writer)
    : loop_(loop), config_(std::move(config)), writer_(std::move(writer)) {
  source_synced_.assign(config_.sources.size(), false);
  for (size_t i = 0; i < config_.sources.size(); ++i) {
    listeners_.push_back(std::make_unique<Listener>(this, i));
    loaders_.push_back(std::make_unique<LoaderPool>(this, i));
  }
  unsynced_since_ = std::chrono::steady_clock::now();
  if (tc_cache_open(config_.cache_path.c_str(), &reader_) != 0) {
    spdlog::warn("cannot open {} for reading: every lookup will query", config_.cache_path);
    reader_ = nullptr;
  }
}

Daemon::~Daemon() {
  CloseTimer(beat_timer_);
  CloseTimer(prometheus_timer_);
  tc_cache_close(reader_);
}

void Daemon::StartPrometheus() {
  CloseTimer(prometheus_timer_);
  if (config_.prometheus_file.empty()) return;
  prometheus_timer_ = NewTimer(loop_, this);
  const auto interval = static_cast<uint64_t>(config_.prometheus_interval.count());
  uv_timer_start(
      prometheus_timer_, [](uv_timer_t* t) { static_cast<Daemon*>(t->data)->WritePrometheus(); }, 0,
      interval);
}

// Written to a temporary file and renamed, so the collector never reads half
// a file.
void Daemon::WritePrometheus() {
  const std::string& path = config_.prometheus_file;
  const std::string tmp = path + ".tmp";
  const std::string text = PrometheusText(StatsJson());
  FILE* f = std::fopen(tmp.c_str(), "w");
  if (f == nullptr || std::fwrite(text.data(), 1, text.size(), f) != text.size() || std::fclose(f) != 0 ||
      std::rename(tmp.c_str(), path.c_str()) != 0) {
    const auto now = std::chrono::steady_clock::now();
    if (now - last_prometheus_error_ > std::chrono::minutes(1)) {
      spdlog::warn("cannot write {}: {}", path, std::strerror(errno));
      last_prometheus_error_ = now;
    }
  }
}

void Daemon::Start(std::function<void()> on_ready) {
  on_ready_ = std::move(on_ready);
  beat_timer_ = NewTimer(loop_, this);
  // Several heartbeats per fail-closed bound, and at least ten a second.
  const auto period = static_cast<uint64_t>(std::clamp<int64_t>(config_.stale_after.count() / 10, 10, 100));
  writer_->Heartbeat();
  uv_timer_start(
      beat_timer_, [](uv_timer_t* t) { static_cast<Daemon*>(t->data)->Beat(); }, period, period);
  for (auto& l : loaders_) l->Start();
  for (auto& l : listeners_) l->Start();
  StartPrometheus();
}

void Daemon::Stop() {
  writer_->SetSynced(false);  // readers fail closed from now on
  for (auto& l : listeners_) l->Stop();
  for (auto& l : loaders_) l->Stop();
  CloseTimer(beat_timer_);
  CloseTimer(prometheus_timer_);
}

void Daemon::Reload(const Config& config) {
  config_.log_level = config.log_level;
  const bool prometheus_changed = config_.prometheus_file != config.prometheus_file ||
                                  config_.prometheus_interval != config.prometheus_interval;
  config_.prometheus_file = config.prometheus_file;
  config_.prometheus_interval = config.prometheus_interval;
  if (prometheus_changed && beat_timer_ != nullptr) StartPrometheus();
  config_.ttl = config.ttl;
  config_.negative_ttl = config.negative_ttl;
  config_.idle_timeout = config.idle_timeout;
  config_.stale_after = config.stale_after;
  config_.heartbeat_interval = config.heartbeat_interval;
  config_.allowed_groups = config.allowed_groups;
  config_.max_clients = config.max_clients;
  for (size_t i = 0; i < config_.sources.size(); ++i) {
    auto& s = config_.sources[i];
    const auto& n = config.sources[i];
    s.queue_bound = n.queue_bound;
    s.query_timeout = n.query_timeout;
    s.reconnect_min = n.reconnect_min;
    s.reconnect_max = n.reconnect_max;
    s.log_retention = n.log_retention;
    listeners_[i]->Reload();
  }
  writer_->SetPolicy(static_cast<uint64_t>(config_.stale_after.count()) * 1'000'000,
                     static_cast<uint64_t>(config_.idle_timeout.count()) * 1'000'000);
}

WalMarker& Daemon::wal_marker(size_t source) { return listeners_[source]->marker(); }
const WalMarker& Daemon::wal_marker(size_t source) const { return listeners_[source]->marker(); }

uint64_t Daemon::ProvenNs() const {
  uint64_t proven = UINT64_MAX;
  for (const auto& l : listeners_) proven = std::min(proven, l->proven_ns());
  return proven;
}

void Daemon::Beat() {
  // While synced the heartbeat is the time up to which every source's changes
  // are proven applied, so a reader's bound counts from there; otherwise
  // (readers fail closed on the flag anyway) it shows the daemon is alive.
  if (synced())
    writer_->Heartbeat(ProvenNs());
  else
    writer_->Heartbeat();
  // The sweep shares the loop with the fills: each step is bounded in time
  // so that a miss arriving meanwhile waits for at most that. Reading 256
  // buckets' slots (2048 cache lines, 640 KiB with the default slot size)
  // took 80-550 µs on a loaded two-core virtual machine, longer while the
  // file's pages were still being touched for the first time; a pass over a
  // large file then takes a few more beats, which only delays reclaiming
  // dead slots (a fill evicts one in its bucket anyway).
  constexpr uint64_t kSweepBudgetNs = 50'000;
  writer_->Sweep(256, kSweepBudgetNs);
  const bool now_synced = synced();
  const auto now = std::chrono::steady_clock::now();
  if (!now_synced && was_synced_) unsynced_since_ = now;
  if (!now_synced) {
    stats_.unsynced_time += now - unsynced_since_;
    unsynced_since_ = now;
  }
  was_synced_ = now_synced;
}

bool Daemon::synced() const {
  return std::all_of(source_synced_.begin(), source_synced_.end(), [](bool b) { return b; });
}

void Daemon::SourceSynced(size_t source, bool is_synced) {
  source_synced_[source] = is_synced;
  if (!is_synced) {
    writer_->SetSynced(false);
    return;
  }
  if (!synced()) return;
  writer_->Heartbeat(ProvenNs());
  writer_->SetSynced(true);
  if (!ready_sent_) {
    ready_sent_ = true;
    if (on_ready_) on_ready_();
  }
}

bool Daemon::InvalidateKey(std::string_view ns, std::string_view key) {
  const int id = writer_->FindNamespace(ns);
  if (id < 0) return false;  // not cached by this daemon
  const auto& spec = writer_->namespace_spec(static_cast<uint32_t>(id));
  char norm[layout::kMaxKeyLen + 8];
  const KeyResult r = NormalizeKey(spec.key_kind, spec.max_key_len, key.data(), key.size(), norm);
  if (!r.ok()) return true;  // no lookup can have cached it
  ++stats_.invalidations_key;
  const std::string k(norm, r.len);
  writer_->Invalidate(static_cast<uint32_t>(id), k);
  const size_t source = config_.namespaces[static_cast<size_t>(id)].source_index;
  loaders_[source]->Revoke(static_cast<uint32_t>(id), k);
  // Fills from a standby beginning from now on wait for this change.
  listeners_[source]->marker().Applied();
  return true;
}

void Daemon::InvalidateTenant(std::string_view tenant) {
  ++stats_.invalidations_tenant;
  writer_->InvalidateTenant(tenant);
  // A tenant id is not tied to a source: any source's change may be it.
  for (auto& l : listeners_) l->marker().Applied();
}

void Daemon::Flush(const std::string& why) {
  ++stats_.flushes;
  const uint64_t epoch = writer_->Flush();
  for (auto& l : listeners_) l->marker().Applied();
  // Any role can NOTIFY a flush: one line a second at most, with a count.
  if (flush_log_.Admit()) spdlog::info("cache flushed (epoch {}): {}{}", epoch, why, flush_log_.suffix());
}

void Daemon::Lookup(std::string_view ns, std::string_view key, LookupCallback cb) {
  ++stats_.lookups;
  const int id = writer_->FindNamespace(ns);
  if (id < 0) {
    cb(LookupAnswer{TC_E_NO_NAMESPACE, "", "no namespace " + std::string(ns)});
    return;
  }
  const auto& spec = writer_->namespace_spec(static_cast<uint32_t>(id));
  char norm[layout::kMaxKeyLen + 8];
  const KeyResult r = NormalizeKey(spec.key_kind, spec.max_key_len, key.data(), key.size(), norm);
  if (!r.ok()) {
    cb(LookupAnswer{TC_E_INVALID_KEY, "", r.error});
    return;
  }
  // Clients ask after a miss, but a fill may have landed since (the usual
  // tail of a stampede): answer from the cache then, as a reader would.
  if (reader_ != nullptr) {
    tc_value v;
    const int st = tc_cache_get(reader_, static_cast<tc_ns>(id), norm, r.len, &v);
    if (st == TC_FOUND || st == TC_NOT_FOUND) {
      ++stats_.answered_cached;
      if (st == TC_NOT_FOUND) {
        cb(LookupAnswer{TC_NOT_FOUND, "", ""});
        return;
      }
      ValueMeta vm;
      std::memcpy(&vm, &v.priv_reserved[0], sizeof vm);
      cb(LookupAnswer{
          TC_FOUND,
          protocol::EncodeValue(vm.key_len, vm.tenant_len, static_cast<uint16_t>(vm.field_count),
                                std::string_view(reinterpret_cast<const char*>(v.priv_data), v.priv_len)),
          ""});
      return;
    }
  }
  loaders_[config_.namespaces[static_cast<size_t>(id)].source_index]->Lookup(
      static_cast<uint32_t>(id), std::string(norm, r.len), std::move(cb));
}

namespace {

void Fold(const protocol::Report& r, protocol::Report* into) {
  into->hits += r.hits;
  into->negative_hits += r.negative_hits;
  into->misses += r.misses;
  into->unavailable += r.unavailable;
}

}  // namespace

void Daemon::ClientReport(uint32_t peer_pid, const protocol::Report& report) {
  constexpr size_t kMaxReports = 4096;
  const auto key = std::make_tuple(peer_pid, report.pid, report.handle);
  if (reports_.count(key) == 0 && reports_.size() >= kMaxReports) {
    Fold(reports_.begin()->second, &retired_);
    reports_.erase(reports_.begin());
  }
  reports_[key] = report;
}

void Daemon::ForgetExitedClients(const std::set<uint32_t>& connected) {
  uint32_t checked = 0;
  bool gone = false;
  for (auto it = reports_.begin(); it != reports_.end();) {
    const uint32_t pid = std::get<0>(it->first);
    if (pid == 0 || connected.count(pid) != 0) {
      ++it;
      continue;
    }
    // One kill() per process, not per handle: the map is ordered by pid.
    if (pid != checked) {
      checked = pid;
      gone = kill(static_cast<pid_t>(pid), 0) != 0 && errno == ESRCH;
    }
    if (!gone) {
      ++it;
      continue;
    }
    Fold(it->second, &retired_);
    it = reports_.erase(it);
  }
}

size_t Daemon::ReportingClients() const {
  size_t n = 0;
  std::pair<uint32_t, uint32_t> last{0, 0};
  for (const auto& [k, r] : reports_) {
    const std::pair<uint32_t, uint32_t> process{std::get<0>(k), std::get<1>(k)};
    if (n == 0 || process != last) ++n;
    last = process;
  }
  return n;
}

std::string Daemon::StatsJson() const {
  const WriterStats w = writer_->stats();
  protocol::Report clients = retired_;
  for (const auto& [k, r] : reports_) Fold(r, &clients);
  const uint64_t reads = clients.hits + clients.negative_hits + clients.misses;
  size_t pending = 0;
  size_t broken = 0;
  size_t standby_loaders = 0;
  uint64_t lag_bytes = 0, probes = 0;
  double lag_seconds = 0;
  for (size_t i = 0; i < loaders_.size(); ++i) {
    const auto& l = loaders_[i];
    pending += l->pending();
    broken += l->broken();
    // The worst source's lag: the daemon log names the source of a timeout.
    standby_loaders += l->standby_loaders();
    lag_bytes = std::max(lag_bytes, l->replica_lag_bytes());
    lag_seconds = std::max(lag_seconds, l->replica_lag_seconds());
    probes += listeners_[i]->marker().probes();
  }
  size_t behind_pooler = 0, shared = 0, leader_slots = 0, relays = 0, subscribers = 0, redis_ready = 0,
         joined = 0;
  uint64_t untruncated = 0, unseen_before = 0;
  for (const auto& l : listeners_) {
    untruncated += l->untruncated_partitions();
    unseen_before += l->unseen_before_triggers();
    behind_pooler += l->behind_pooler() ? 1 : 0;
    shared += l->shares_heartbeats() ? 1 : 0;
    leader_slots += static_cast<size_t>(l->leader_slots());
    relays += l->relays() ? 1 : 0;
    subscribers += l->subscribes() ? 1 : 0;
    redis_ready += l->redis_ready() ? 1 : 0;
    joined += l->joined_sessions();
  }
  std::ostringstream o;
  o << "{\"synced\":" << (synced() ? "true" : "false") << ",\"epoch\":" << writer_->epoch()
    << ",\"entries\":" << w.entries << ",\"slots\":" << w.slots << ",\"capacity\":" << config_.capacity
    << ",\"file_bytes\":" << writer_->file_bytes() << ",\"huge_page_bytes\":" << writer_->huge_page_bytes()
    << ",\"hits\":" << clients.hits << ",\"negative_hits\":" << clients.negative_hits
    << ",\"misses\":" << clients.misses << ",\"unavailable_reads\":" << clients.unavailable
    << ",\"hit_rate\":"
    << (reads == 0 ? 0.0
                   : static_cast<double>(clients.hits + clients.negative_hits) / static_cast<double>(reads))
    << ",\"reporting_clients\":" << ReportingClients() << ",\"lookups\":" << stats_.lookups
    << ",\"fills\":" << stats_.fills << ",\"fill_errors\":" << stats_.fill_errors
    << ",\"fill_timeouts\":" << stats_.fill_timeouts << ",\"coalesced\":" << stats_.coalesced
    << ",\"answered_cached\":" << stats_.answered_cached << ",\"busy\":" << stats_.busy
    << ",\"leases_revoked\":" << stats_.leases_revoked << ",\"uncached_answers\":" << stats_.uncached_answers
    << ",\"pending_fills\":" << pending << ",\"broken_namespaces\":" << broken
    << ",\"listeners_behind_pooler\":" << behind_pooler
    << ",\"partitions_without_truncate_trigger\":" << untruncated
    << ",\"unseen_before_update_triggers\":" << unseen_before << ",\"notifications\":" << stats_.notifications
    << ",\"malformed_notifications\":" << stats_.malformed_notifications
    << ",\"unknown_namespace_messages\":" << stats_.unknown_namespace_messages
    << ",\"invalidations_key\":" << stats_.invalidations_key
    << ",\"invalidations_tenant\":" << stats_.invalidations_tenant << ",\"flushes\":" << stats_.flushes
    << ",\"evictions\":" << w.evictions << ",\"reclaimed\":" << w.reclaimed << ",\"puts\":" << w.puts
    << ",\"negative_puts\":" << w.negative_puts << ",\"too_large\":" << w.too_large
    << ",\"reconnects\":" << stats_.reconnects << ",\"heartbeats_sent\":" << stats_.heartbeats_sent
    << ",\"heartbeats_received\":" << stats_.heartbeats_received
    << ",\"heartbeats_rejected\":" << stats_.heartbeats_rejected << ",\"sources\":" << listeners_.size()
    << ",\"shared_heartbeat_sources\":" << shared << ",\"heartbeat_leader_slots\":" << leader_slots
    << ",\"relay_sources\":" << relays << ",\"subscriber_sources\":" << subscribers
    << ",\"redis_connected\":" << redis_ready << ",\"joined_relay_sessions\":" << joined
    << ",\"relayed_published\":" << stats_.relayed_published
    << ",\"relayed_notifications\":" << stats_.relayed_notifications
    << ",\"relay_sessions\":" << stats_.relay_sessions << ",\"relayed_received\":" << stats_.relayed_received
    << ",\"relayed_rejected\":" << stats_.relayed_rejected << ",\"relay_gaps\":" << stats_.relay_gaps
    << ",\"standby_loaders\":" << standby_loaders << ",\"replica_lag_bytes\":" << lag_bytes
    << ",\"replica_lag_seconds\":" << lag_seconds << ",\"replica_waits\":" << stats_.replica_waits
    << ",\"replica_timeouts\":" << stats_.replica_timeouts << ",\"wal_position_probes\":" << probes
    << ",\"control_connections\":" << stats_.control_connections
    << ",\"control_errors\":" << stats_.control_errors << ",\"control_refused\":" << stats_.control_refused
    << ",\"control_full\":" << stats_.control_full
    << ",\"control_accept_errors\":" << stats_.control_accept_errors
    << ",\"control_timeouts\":" << stats_.control_timeouts
    << ",\"control_idle_closed\":" << stats_.control_idle_closed
    << ",\"control_rate_limited\":" << stats_.control_rate_limited
    << ",\"control_log_suppressed\":" << stats_.control_log_suppressed
    << ",\"control_clients\":" << stats_.control_clients
    << ",\"control_max_clients\":" << stats_.control_max_clients
    << ",\"notification_queue_usage\":" << stats_.notification_queue_usage
    << ",\"log_prune_runs\":" << stats_.log_prune_runs << ",\"log_pruned_rows\":" << stats_.log_pruned_rows
    << ",\"log_prune_errors\":" << stats_.log_prune_errors << ",\"log_prune_age_seconds\":"
    << (stats_.last_log_prune == std::chrono::steady_clock::time_point{}
            ? -1.0
            : std::chrono::duration<double>(std::chrono::steady_clock::now() - stats_.last_log_prune).count())
    << ",\"unsynced_seconds\":" << std::chrono::duration<double>(stats_.unsynced_time).count() << "}";
  return o.str();
}

std::string Daemon::StatusLine() const {
  const WriterStats w = writer_->stats();
  std::ostringstream o;
  o << (synced() ? "synced" : "NOT synced (readers fail closed)") << "; " << w.entries << " entries; "
    << stats_.fills << " fills, " << stats_.coalesced << " coalesced; " << stats_.reconnects << " reconnects";
  return o.str();
}

}  // namespace tenantcache
