#include "log_pruner.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdlib>

#include "daemon.h"

namespace tenantcache {
namespace {

using Clock = std::chrono::steady_clock;

// The longest pause between calls: a stopped daemon's claim, and so the
// log's size, is bounded by the retention, but a long retention should
// still be pruned in small steps.
constexpr std::chrono::minutes kLongestInterval{5};

}  // namespace

LogPruner::LogPruner(Daemon* daemon, size_t index, uint64_t seed)
    : daemon_(daemon), index_(index), rng_(seed) {
  Reschedule();
}

const SourceConfig& LogPruner::source() const { return daemon_->config().sources[index_]; }

void LogPruner::SetSchemaVersion(int version) {
  version_ = version;
  if (version_ >= 4 || source().log_retention.count() == 0 || hint_logged_) return;
  hint_logged_ = true;
  spdlog::warn(
      "source {}: log_retention is set, but the tenantcache schema is version {}: this daemon cannot prune "
      "tenantcache.invalidation_log, which grows until something prunes it. Upgrade the schema to version 4 "
      "(as the role that installed it: tenantcachectl install-sql --conninfo CONNINFO, or psql CONNINFO "
      "-v ON_ERROR_STOP=1 -f sql/install.sql), or prune by cron (SELECT tenantcache.prune_log('{} "
      "milliseconds')) and set log_retention = \"0s\"",
      source().name, version_, source().log_retention.count());
}

bool LogPruner::Due() const {
  return version_ >= 4 && source().log_retention.count() > 0 && Clock::now() >= due_;
}

std::chrono::milliseconds LogPruner::Interval() {
  const auto base = std::min<std::chrono::milliseconds>(source().log_retention / 10, kLongestInterval);
  std::uniform_real_distribution<double> jitter(0.75, 1.25);
  return std::chrono::milliseconds(
      std::max<int64_t>(1, static_cast<int64_t>(static_cast<double>(base.count()) * jitter(rng_))));
}

void LogPruner::Reschedule() { due_ = Clock::now() + Interval(); }

void LogPruner::Run(PgConn* conn, const std::string& id) {
  Reschedule();
  const std::string retention = std::to_string(source().log_retention.count()) + " milliseconds";
  conn->Query(
      "SELECT tenantcache.daemon_prune_log($1, $2::interval)", {id, retention},
      [this, conn](const std::vector<PgResult>& results, const std::string& err) {
        const PGresult* r = results.empty() ? nullptr : results.back().get();
        if (err.empty() && r != nullptr && PQresultStatus(r) == PGRES_TUPLES_OK && PQntuples(r) == 1) {
          const int64_t rows = std::strtoll(PQgetvalue(r, 0, 0), nullptr, 10);
          ++daemon_->stats().log_prune_runs;
          daemon_->stats().log_pruned_rows += static_cast<uint64_t>(rows);
          daemon_->stats().last_log_prune = Clock::now();
          // A full batch: more is waiting; go on at the next heartbeat.
          if (rows >= kBatch) due_ = Clock::now();
          spdlog::debug("source {}: pruned {} invalidation log row(s)", source().name, rows);
          return;
        }
        ++daemon_->stats().log_prune_errors;
        // A lost connection is the listener's to report.
        if (!err.empty() || !error_log_.Admit()) return;
        std::string why = r != nullptr ? PQresultErrorMessage(r) : "no result";
        while (!why.empty() && why.back() == '\n') why.pop_back();
        const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
        if (state != nullptr && std::string_view(state) == "42501")
          why += "; as the role that ran sql/install.sql, run: SELECT tenantcache.grant_daemon('" +
                 conn->user() + "')";
        spdlog::warn("source {}: cannot prune the invalidation log (log_retention): {}{}", source().name, why,
                     error_log_.suffix());
      });
}

}  // namespace tenantcache
