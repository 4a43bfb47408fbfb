#include "replica.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <charconv>

#include "daemon.h"
#include "uv_handle.h"

namespace tenantcache {
namespace {

// The page header sizes of PostgreSQL's WAL (SizeOfXLogShortPHD and
// SizeOfXLogLongPHD, the latter on the first page of a segment).
constexpr uint64_t kShortPageHeader = 24;
constexpr uint64_t kLongPageHeader = 40;

// The insert position, with the page and segment sizes needed to put a
// position just past a page header back on the page boundary (replica.h).
constexpr const char* kProbeQuery =
    "SELECT pg_current_wal_insert_lsn()::text, current_setting('wal_block_size'), "
    "pg_size_bytes(current_setting('wal_segment_size'))";

uint64_t Number(std::string_view text) {
  uint64_t v = 0;
  const auto r = std::from_chars(text.data(), text.data() + text.size(), v);
  return r.ec == std::errc() && r.ptr == text.data() + text.size() ? v : 0;
}

std::string Text(const PGresult* r, int col) {
  if (PQntuples(r) != 1 || col >= PQnfields(r) || PQgetisnull(r, 0, col)) return {};
  return PQgetvalue(r, 0, col);
}

}  // namespace

const char* const kReplayStateQuery = "SELECT pg_is_in_recovery(), pg_last_wal_replay_lsn()::text";

uint64_t ParseLsn(std::string_view text) {
  const size_t slash = text.find('/');
  if (slash == std::string_view::npos || slash == 0 || slash > 8 || text.size() - slash - 1 == 0 ||
      text.size() - slash - 1 > 8)
    return 0;
  uint64_t hi = 0, lo = 0;
  const auto a = std::from_chars(text.data(), text.data() + slash, hi, 16);
  const auto b = std::from_chars(text.data() + slash + 1, text.data() + text.size(), lo, 16);
  if (a.ec != std::errc() || a.ptr != text.data() + slash || b.ec != std::errc() ||
      b.ptr != text.data() + text.size())
    return 0;
  return hi << 32 | lo;
}

bool ReadReplayState(const std::vector<PgResult>& results, ReplayState* state, std::string* error) {
  const PGresult* r = results.empty() ? nullptr : results.back().get();
  if (r == nullptr || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1 || PQnfields(r) != 2) {
    std::string msg = r != nullptr ? PQresultErrorMessage(r) : "no result";
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    *error = msg.empty() ? "unexpected result" : msg;
    return false;
  }
  state->standby = Text(r, 0) == "t";
  state->replayed = ParseLsn(Text(r, 1));
  return true;
}

WalMarker::WalMarker(uv_loop_t* loop, std::string source_name)
    : loop_(loop), source_(std::move(source_name)), timer_(NewTimer(loop, this)) {}

WalMarker::~WalMarker() { CloseTimer(timer_); }

void WalMarker::Attach(PgConn* conn) {
  conn_ = conn;
  Schedule();
}

void WalMarker::Detach() { conn_ = nullptr; }

void WalMarker::set_wanted(bool wanted) {
  wanted_ = wanted;
  if (wanted_ && Unprobed()) Schedule();
}

void WalMarker::Applied() {
  ++applied_;
  if (wanted_) Schedule();
}

bool WalMarker::Unprobed() const { return probed_.empty() || probed_.back().first < applied_; }

void WalMarker::Required(uint64_t generation, Ready ready) {
  // While the listener is not synced, invalidations may be missing (they are
  // replayed or flushed at reconnect): no position proves anything then.
  if (conn_ != nullptr && !probed_.empty() && probed_.back().first >= generation) {
    // The first probe sent at or after `generation`; the oldest kept is one.
    const auto it = std::lower_bound(probed_.begin(), probed_.end(), generation,
                                     [](const auto& p, uint64_t g) { return p.first < g; });
    ready(it->second);
    return;
  }
  waiters_.emplace_back(generation, std::move(ready));
  Schedule();
}

void WalMarker::Refresh() {
  refresh_ = true;
  Schedule();
}

void WalMarker::Schedule() {
  if (timer_ == nullptr || in_flight_) return;
  uv_timer_start(
      timer_, [](uv_timer_t* t) { static_cast<WalMarker*>(t->data)->Send(); }, 0, 0);
}

void WalMarker::Send() {
  if (in_flight_ || conn_ == nullptr || !conn_->idle()) return;
  const bool needed = !waiters_.empty() || (wanted_ && Unprobed());
  if (!needed && !refresh_) return;
  refresh_ = false;
  in_flight_ = true;
  const uint64_t generation = applied_;
  conn_->Query(
      kProbeQuery, {}, [this, generation](const std::vector<PgResult>& results, const std::string& err) {
        in_flight_ = false;
        const PGresult* r = results.empty() ? nullptr : results.back().get();
        const uint64_t lsn = r != nullptr && PQresultStatus(r) == PGRES_TUPLES_OK ? ParseLsn(Text(r, 0)) : 0;
        if (lsn == 0) {
          // A lost connection is the listener's to report; it probes again once
          // synced. Anything else (a revoked EXECUTE, say) must be seen: the
          // fills of a standby wait for this and time out.
          if (err.empty() && error_log_.Admit()) {
            std::string msg = r != nullptr ? PQresultErrorMessage(r) : "no result";
            while (!msg.empty() && msg.back() == '\n') msg.pop_back();
            spdlog::warn(
                "source {}: cannot read the primary's WAL position, so fills from a standby wait: {}{}",
                source_, msg, error_log_.suffix());
          }
          return;
        }
        const uint64_t block = Number(Text(r, 1)), segment = Number(Text(r, 2));
        uint64_t at = lsn;
        if (segment != 0 && at % segment == kLongPageHeader)
          at -= kLongPageHeader;
        else if (block != 0 && at % block == kShortPageHeader)
          at -= kShortPageHeader;
        Answered(generation, at);
      });
}

double WalMarker::LagSeconds(uint64_t replayed) const {
  for (const auto& [at, lsn] : history_)
    if (lsn > replayed) return static_cast<double>(uv_now(loop_) - at) / 1000;
  return 0;
}

void WalMarker::Answered(uint64_t generation, uint64_t lsn) {
  ++probes_;
  latest_ = lsn;
  const uint64_t now = uv_now(loop_);
  if (history_.empty() ||
      (lsn > history_.back().second && now - history_.back().first >= kHistorySpacingMs)) {
    history_.emplace_back(now, lsn);
    if (history_.size() > kHistory) history_.pop_front();
  }
  if (probed_.empty() || generation > probed_.back().first) {
    probed_.emplace_back(generation, lsn);
    if (probed_.size() > kProbes) probed_.pop_front();
  }
  // Probes answer in the order they were sent: this is the first one sent
  // after every invalidation a waiter of generation <= `generation` needs.
  std::vector<Ready> ready;
  for (auto it = waiters_.begin(); it != waiters_.end();) {
    if (it->first > generation) {
      ++it;
      continue;
    }
    ready.push_back(std::move(it->second));
    it = waiters_.erase(it);
  }
  Schedule();  // invalidations applied meanwhile, or waiters still left
  for (auto& r : ready) r(lsn);
}

}  // namespace tenantcache
