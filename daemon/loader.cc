#include "loader.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <string_view>

#include "entry.h"
#include "log_limit.h"
#include "protocol.h"
#include "query_check.h"
#include "tenantcache/tenantcache.h"
#include "uv_handle.h"

namespace tenantcache {
namespace {

std::string StatementName(uint32_t ns) { return "tenantcache_ns" + std::to_string(ns); }

std::string Quoted(const std::string& column) {
  std::string q = "\"";
  for (char c : column) q += c == '"' ? std::string("\"\"") : std::string(1, c);
  return q + "\"";
}

LookupAnswer Error(int status, std::string message) { return LookupAnswer{status, "", std::move(message)}; }

}  // namespace

LoaderPool::LoaderPool(Daemon* daemon, size_t index) : daemon_(daemon), index_(index) {
  const auto& nss = daemon->config().namespaces;
  for (uint32_t i = 0; i < nss.size(); ++i)
    if (nss[i].source_index == index) namespaces_.push_back(i);
  conns_.resize(static_cast<size_t>(source().loaders));
  for (size_t i = 0; i < conns_.size(); ++i) {
    conns_[i].pool = this;
    conns_[i].index = i;
  }
  if (const char* forced = std::getenv("TENANTCACHED_LOADER_STATEMENTS");
      forced != nullptr && *forced != '\0') {
    const std::string_view f(forced);
    if (f == "named")
      statements_ = Statements::kNamed;
    else if (f == "unnamed")
      statements_ = Statements::kUnnamed;
    else
      spdlog::error(
          "TENANTCACHED_LOADER_STATEMENTS=\"{}\" is neither \"named\" nor \"unnamed\": ignored, the loaders "
          "detect a pooler themselves",
          Printable(f));
  }
}

LoaderPool::~LoaderPool() {
  for (auto& c : conns_) {
    CloseTimer(c.retry);
    CloseTimer(c.replay_timer);
  }
  CloseTimer(lag_timer_);
}

void LoaderPool::Start() {
  stopped_ = false;
  if (namespaces_.empty()) return;  // a source no namespace queries needs no loaders
  for (size_t i = 0; i < conns_.size(); ++i) ConnectOne(i);
}

void LoaderPool::Stop() {
  stopped_ = true;
  CloseTimer(lag_timer_);
  for (auto& c : conns_) {
    CloseTimer(c.retry);
    CloseTimer(c.replay_timer);
    c.running.reset();
    if (c.pg) c.pg->Disconnect("stopping");
  }
  auto fills = std::exchange(fills_, {});
  queue_.clear();
  for (auto& [k, f] : fills) {
    CloseTimer(f->deadline);
    for (auto& w : f->waiters) w(Error(TC_E_UNAVAILABLE, "daemon stopping"));
  }
}

// The daemon's config is updated in place on reload, so this always shows the
// reloadable values in force.
const SourceConfig& LoaderPool::source() const { return daemon_->config().sources[index_]; }

void LoaderPool::ConnectOne(size_t i) {
  if (stopped_) return;
  Conn& c = conns_[i];
  c.prepared = false;
  if (!c.pg) {
    c.pg = std::make_unique<PgConn>(daemon_->loop(), "loader " + source().name + "#" + std::to_string(i));
    c.pg->set_on_state([this, i](const std::string& error) {
      if (!error.empty()) {
        Reconnect(i, error);
        return;
      }
      conns_[i].attempts = 0;
      Connected(i);
    });
  }
  c.pg->Connect(source().conninfo);
}

void LoaderPool::Connected(size_t i) {
  conns_[i].pg->ServerPid([this, i](int server_pid, const std::string& error) {
    if (stopped_) return;
    Conn& c = conns_[i];
    if (!error.empty()) {
      // A lost connection reconnects through on_state; one that cannot
      // answer the query must not stay connected unchecked.
      if (c.pg->connected()) Reconnect(i, error);
      return;
    }
    const int announced = c.pg->backend_pid();
    c.pooled =
        statements_ == Statements::kDetect ? server_pid != announced : statements_ == Statements::kUnnamed;
    if (logged_pooled_ != static_cast<int>(c.pooled)) {
      logged_pooled_ = static_cast<int>(c.pooled);
      if (statements_ != Statements::kDetect)
        spdlog::info(
            "source {}: the loaders use {} statements, as TENANTCACHED_LOADER_STATEMENTS says (no pooler "
            "detection)",
            source().name, c.pooled ? "unnamed" : "named");
      else if (c.pooled)
        spdlog::info(
            "source {}: the loaders reach PostgreSQL through a pooler (server pid {}, announced pid {}): "
            "each fill is one round trip of the unnamed statement and no session setting is made, so set "
            "statement_timeout on the database role if runaway queries must end on the server",
            source().name, server_pid, announced);
      else
        spdlog::info("source {}: the loaders reach PostgreSQL directly: named prepared statements",
                     source().name);
    }
    // Whether the server is a standby (daemon/replica.h). On a direct
    // connection the same round trip sets statement_timeout, so the server
    // ends a runaway query too, not only our deadline; behind a pooler
    // nothing may outlive a transaction.
    const std::string timeout =
        c.pooled || not_kept_
            ? ""
            : "SET statement_timeout = " + std::to_string(source().query_timeout.count()) + "; ";
    c.pg->Query(timeout + kReplayStateQuery, {},
                [this, i](const std::vector<PgResult>& results, const std::string& err) {
                  if (!err.empty()) return;  // the connection failed: Reconnect runs
                  std::string why;
                  if (!SetReplay(i, results, &why)) {
                    Reconnect(i, "cannot tell whether the server is a standby: " + why);
                    return;
                  }
                  PrepareNext(i, 0);
                });
  });
}

std::string LoaderPool::Statement(size_t i, uint32_t ns) const {
  return conns_[i].pooled || not_kept_ ? std::string() : StatementName(ns);
}

// Checks the namespaces' queries one after the other (one query in flight).
void LoaderPool::PrepareNext(size_t i, size_t k) {
  if (stopped_ || !conns_[i].pg->connected()) return;
  if (k == namespaces_.size()) {
    conns_[i].prepared = true;
    Dispatch();
    return;
  }
  const uint32_t ns = namespaces_[k];
  CheckStatement(conns_[i].pg.get(), Statement(i, ns), daemon_->config().namespaces[ns],
                 [this, i, k, ns](const StatementCheck& check) {
                   switch (check.kind) {
                     case StatementCheck::kConnectionFailed:
                       // A lost connection reconnects through on_state; one
                       // that answered nonsense must not stay unchecked.
                       if (conns_[i].pg->connected()) Reconnect(i, check.message);
                       return;
                     case StatementCheck::kNotKept:
                       // A statement of that name is already on this server
                       // connection: the same query again, unnamed.
                       StatementsNotKept(daemon_->config().namespaces[ns], check.message);
                       PrepareNext(i, k);
                       return;
                     case StatementCheck::kBroken:
                       SetBroken(ns, check.message);
                       break;
                     case StatementCheck::kSound:
                       SetBroken(ns, "");
                       break;
                   }
                   PrepareNext(i, k + 1);
                 });
}

// Not the query's fault: it is not marked broken, and fills go on with the
// unnamed statement, which needs no server connection to keep anything.
void LoaderPool::StatementsNotKept(const NamespaceConfig& ns, const std::string& message) {
  not_kept_ = true;
  if (!not_kept_log_.Admit()) return;
  spdlog::warn(
      "namespace {}: a prepared statement was not kept: {}: {}; the loaders of source {} use unnamed "
      "statements from now on{}",
      ns.name, kStatementNotKeptHint, Printable(message), source().name, not_kept_log_.suffix());
}

void LoaderPool::SetBroken(uint32_t ns, const std::string& error) {
  const std::string& name = daemon_->config().namespaces[ns].name;
  const auto it = broken_.find(ns);
  if (error.empty()) {
    if (it != broken_.end()) {
      spdlog::info("namespace {}: its query checks out now; lookups are filled again", name);
      broken_.erase(it);
    }
    return;
  }
  // Every loader connection checks: log what is new only.
  if (it != broken_.end() && it->second == error) return;
  spdlog::error("{}; lookups of namespace {} fail until the query or the schema is fixed", error, name);
  broken_[ns] = error;
}

void LoaderPool::FillError(const std::shared_ptr<Fill>& fill, const std::string& message) {
  ++daemon_->stats().fill_errors;
  // The message may quote a key a client sent: Printable keeps the line one line.
  if (fill_error_log_.Admit())
    spdlog::error("fill failed: {}{}", Printable(message, 400), fill_error_log_.suffix());
  Answer(fill, Error(TC_E_DAEMON, message));
}

void LoaderPool::Reconnect(size_t i, const std::string& why) {
  if (stopped_) return;
  Conn& c = conns_[i];
  c.prepared = false;
  CloseTimer(c.replay_timer);
  if (auto fill = std::exchange(c.running, nullptr)) {
    CloseTimer(fill->deadline);
    if (++fill->attempts < kMaxAttempts) {
      queue_.push_front(fill);
    } else {
      FillError(fill, "namespace " + daemon_->config().namespaces[fill->ns].name +
                          ": database connection lost: " + why);
    }
  }
  c.pg->Disconnect(why);
  const auto delay = static_cast<uint64_t>(std::min<int64_t>(
      source().reconnect_min.count() << std::min(c.attempts, 20), source().reconnect_max.count()));
  ++c.attempts;
  spdlog::warn("source {}: loader {} disconnected ({}); reconnecting in {} ms", source().name, i, why, delay);
  if (c.retry == nullptr) c.retry = NewTimer(daemon_->loop(), &c);
  uv_timer_start(
      c.retry,
      [](uv_timer_t* t) {
        auto* conn = static_cast<Conn*>(t->data);
        conn->pool->ConnectOne(conn->index);
      },
      delay, 0);
  Dispatch();
}

void LoaderPool::Lookup(uint32_t ns, const std::string& key, LookupCallback cb) {
  if (const auto b = broken_.find(ns); b != broken_.end()) {
    cb(Error(TC_E_DAEMON, b->second));
    Recheck();
    return;
  }
  const auto k = std::make_pair(ns, key);
  if (auto it = fills_.find(k); it != fills_.end()) {
    ++daemon_->stats().coalesced;
    it->second->waiters.push_back(std::move(cb));
    return;
  }
  if (fills_.size() >= static_cast<size_t>(source().queue_bound)) {
    ++daemon_->stats().busy;
    cb(Error(TC_E_BUSY, "fill queue full"));
    return;
  }
  auto fill = std::make_shared<Fill>();
  fill->ns = ns;
  fill->key = key;
  Begin(*fill);
  fill->waiters.push_back(std::move(cb));
  fills_.emplace(k, fill);
  queue_.push_back(std::move(fill));
  Dispatch();
}

// A namespace stays broken until a connection checks its query again, and a
// fix made in the database (a grant, a migration) must not need a restart: a
// lookup of a broken namespace reconnects one idle loader, at most once per
// reconnect_max, and its connect prepares and checks every query afresh.
void LoaderPool::Recheck() {
  const uint64_t now = uv_now(daemon_->loop());
  if (now < recheck_after_) return;
  for (size_t i = 0; i < conns_.size(); ++i) {
    Conn& c = conns_[i];
    if (!c.pg || !c.prepared || c.running || !c.pg->idle()) continue;
    recheck_after_ = now + static_cast<uint64_t>(source().reconnect_max.count());
    spdlog::info("source {}: loader {} reconnects to check the broken namespaces' queries again",
                 source().name, i);
    ConnectOne(i);
    return;
  }
}

void LoaderPool::Revoke(uint32_t ns, const std::string& key) {
  if (auto it = fills_.find(std::make_pair(ns, key)); it != fills_.end()) it->second->revoked = true;
}

void LoaderPool::Dispatch() {
  // Fills queued before a connection found their namespace's query broken
  // are answered with the reason, not run.
  for (auto it = queue_.begin(); it != queue_.end();) {
    const auto b = broken_.find((*it)->ns);
    if (b == broken_.end()) {
      ++it;
      continue;
    }
    auto fill = *it;
    it = queue_.erase(it);
    Answer(fill, Error(TC_E_DAEMON, b->second));
  }
  for (size_t i = 0; i < conns_.size() && !queue_.empty(); ++i) {
    Conn& c = conns_[i];
    if (!c.pg || !c.prepared || c.running || !c.pg->idle()) continue;
    auto fill = queue_.front();
    queue_.pop_front();
    Run(i, fill);
  }
}

void LoaderPool::Run(size_t i, const std::shared_ptr<Fill>& fill) {
  Conn& c = conns_[i];
  c.running = fill;
  // The lease is taken before the query is sent: on a primary now; on a
  // standby it was taken when the fill was queued, with its generation
  // (daemon/replica.h), unless it was revoked meanwhile.
  if (!c.replay.standby || fill->revoked) Begin(*fill);
  ++daemon_->stats().fills;
  fill->pool = this;
  fill->conn = i;
  if (fill->deadline == nullptr) fill->deadline = NewTimer(daemon_->loop(), fill.get());
  uv_timer_start(
      fill->deadline,
      [](uv_timer_t* t) {
        auto* f = static_cast<Fill*>(t->data);
        LoaderPool* self = f->pool;
        const size_t idx = f->conn;
        auto running = std::exchange(self->conns_[idx].running, nullptr);
        if (!running) return;
        CloseTimer(running->deadline);
        if (running->gated) {
          self->ReplicaTimeout(idx, running);
          return;
        }
        ++self->daemon_->stats().fill_timeouts;
        self->Answer(running, Error(TC_E_TIMEOUT, "query timed out"));
        self->Reconnect(idx, "query timed out");
      },
      static_cast<uint64_t>(source().query_timeout.count()), 0);
  Gate(i, fill);
}

void LoaderPool::Begin(Fill& fill) {
  fill.lease = daemon_->writer().BeginFill();
  fill.generation = daemon_->wal_marker(index_).generation();
  fill.revoked = false;
}

void LoaderPool::Send(size_t i, const std::shared_ptr<Fill>& fill) {
  auto done = [this, i, fill](const std::vector<PgResult>& results, const std::string& error) {
    Done(i, fill, results, error);
  };
  if (const std::string stmt = Statement(i, fill->ns); stmt.empty())
    conns_[i].pg->Query(daemon_->config().namespaces[fill->ns].query, {fill->key}, std::move(done));
  else
    conns_[i].pg->QueryPrepared(stmt, {fill->key}, std::move(done));
}

// The standby gate (daemon/replica.h): after the lease, the position the
// fill must see replayed; on a primary nothing happens here.
void LoaderPool::Gate(size_t i, const std::shared_ptr<Fill>& fill) {
  if (!conns_[i].replay.standby) {
    Send(i, fill);
    return;
  }
  fill->gated = true;
  fill->required = 0;
  fill->polls = 0;
  daemon_->wal_marker(index_).Required(fill->generation, [this, i, fill](uint64_t lsn) {
    if (conns_[i].running != fill) return;  // answered meanwhile (deadline, stop)
    fill->required = lsn;
    AwaitReplay(i, fill);
  });
}

void LoaderPool::AwaitReplay(size_t i, const std::shared_ptr<Fill>& fill) {
  Conn& c = conns_[i];
  // A promoted server is no longer in recovery: it has all it will have.
  if (!c.replay.standby || c.replay.replayed >= fill->required) {
    fill->gated = false;
    Send(i, fill);
    return;
  }
  if (fill->polls == 0) ++daemon_->stats().replica_waits;
  // At once, then 1, 2, 4, 8 ms, then every 10 ms: a standby keeping up
  // answers the first read; one that lags costs a small query per 10 ms.
  const uint64_t delay =
      fill->polls == 0 ? 0 : std::min<uint64_t>(uint64_t{1} << std::min(fill->polls - 1, 4), 10);
  ++fill->polls;
  if (c.replay_timer == nullptr) c.replay_timer = NewTimer(daemon_->loop(), &c);
  uv_timer_start(
      c.replay_timer,
      [](uv_timer_t* t) {
        auto* conn = static_cast<Conn*>(t->data);
        conn->pool->ReadReplay(conn->index);
      },
      delay, 0);
}

// A statement of its own, completed before the fill's starts: its replay
// position holds for the fill's snapshot (daemon/replica.h).
void LoaderPool::ReadReplay(size_t i) {
  Conn& c = conns_[i];
  auto fill = c.running;
  if (!fill || !fill->gated || !c.pg || !c.pg->idle()) return;
  c.pg->Query(kReplayStateQuery, {},
              [this, i, fill](const std::vector<PgResult>& results, const std::string& error) {
                if (!error.empty()) {  // the connection failed: run the fill elsewhere
                  Done(i, fill, results, error);
                  return;
                }
                std::string why;
                const bool read = SetReplay(i, results, &why);
                if (conns_[i].running != fill) {  // answered meanwhile: the connection is free again
                  Dispatch();
                  return;
                }
                if (!read) {
                  conns_[i].running.reset();
                  CloseTimer(fill->deadline);
                  FillError(fill, "namespace " + daemon_->config().namespaces[fill->ns].name +
                                      ": cannot read the standby's replay position: " + why);
                  Dispatch();
                  return;
                }
                AwaitReplay(i, fill);
              });
}

void LoaderPool::ReplicaTimeout(size_t i, const std::shared_ptr<Fill>& fill) {
  Conn& c = conns_[i];
  if (c.replay_timer != nullptr) uv_timer_stop(c.replay_timer);
  ++daemon_->stats().fill_timeouts;
  ++daemon_->stats().replica_timeouts;
  std::string why;
  if (fill->required == 0) {
    why =
        "the primary's WAL position after the last invalidation is not known (the listener is not synced, "
        "or its probe failed: see the log)";
  } else {
    char lag[32];
    std::snprintf(lag, sizeof lag, "%.1f", daemon_->wal_marker(index_).LagSeconds(c.replay.replayed));
    why = "the standby has not replayed past the last invalidation: it is " +
          std::to_string(fill->required - std::min(fill->required, c.replay.replayed)) +
          " bytes of WAL behind it, and at least " + lag + " s behind the primary";
  }
  const std::string message =
      "namespace " + daemon_->config().namespaces[fill->ns].name + ": no answer within query_timeout (" +
      std::to_string(source().query_timeout.count()) + " ms) from loader " + source().name + "#" +
      std::to_string(i) + ", on a hot standby: " + why + "; its rows could be older than a committed change";
  if (replica_log_.Admit()) spdlog::warn("source {}: {}{}", source().name, message, replica_log_.suffix());
  Answer(fill, Error(TC_E_TIMEOUT, message));
  Dispatch();
}

bool LoaderPool::SetReplay(size_t i, const std::vector<PgResult>& results, std::string* error) {
  ReplayState state;
  if (!ReadReplayState(results, &state, error)) return false;
  Conn& c = conns_[i];
  const bool was = c.replay.standby;
  c.replay = state;
  if (state.standby && !was)
    spdlog::info(
        "source {}: loader {} is on a hot standby: each fill waits until it has replayed past the last "
        "invalidation, at most query_timeout ({} ms)",
        source().name, i, source().query_timeout.count());
  else if (!state.standby && was)
    spdlog::info("source {}: loader {} is on a server no longer in recovery (promoted): fills run at once",
                 source().name, i);
  const bool any = standby_loaders() > 0;
  daemon_->wal_marker(index_).set_wanted(any);
  if (any && lag_timer_ == nullptr && !stopped_) {
    lag_timer_ = NewTimer(daemon_->loop(), this);
    uv_timer_start(
        lag_timer_, [](uv_timer_t* t) { static_cast<LoaderPool*>(t->data)->MonitorLag(); }, 1000, 1000);
  }
  return true;
}

// The gauges must follow a standby that lags while no fill waits on it:
// once a second, a fresh primary position and one idle connection's replay.
void LoaderPool::MonitorLag() {
  if (stopped_ || standby_loaders() == 0) return;
  daemon_->wal_marker(index_).Refresh();
  for (size_t i = 0; i < conns_.size(); ++i) {
    Conn& c = conns_[i];
    if (!c.pg || !c.prepared || c.running || !c.pg->idle() || !c.replay.standby) continue;
    c.pg->Query(kReplayStateQuery, {},
                [this, i](const std::vector<PgResult>& results, const std::string& err) {
                  std::string why;
                  if (err.empty()) SetReplay(i, results, &why);
                  Dispatch();
                });
    return;
  }
}

size_t LoaderPool::standby_loaders() const {
  size_t n = 0;
  for (const auto& c : conns_)
    if (c.pg && c.pg->connected() && c.replay.standby) ++n;
  return n;
}

bool LoaderPool::NewestReplay(uint64_t* replayed) const {
  bool any = false;
  *replayed = 0;
  for (const auto& c : conns_) {
    if (!c.pg || !c.pg->connected() || !c.replay.standby) continue;
    any = true;
    *replayed = std::max(*replayed, c.replay.replayed);
  }
  return any;
}

uint64_t LoaderPool::replica_lag_bytes() const {
  uint64_t replayed = 0;
  const uint64_t primary = daemon_->wal_marker(index_).latest();
  return NewestReplay(&replayed) && primary > replayed ? primary - replayed : 0;
}

double LoaderPool::replica_lag_seconds() const {
  uint64_t replayed = 0;
  return NewestReplay(&replayed) ? daemon_->wal_marker(index_).LagSeconds(replayed) : 0;
}

void LoaderPool::Done(size_t i, const std::shared_ptr<Fill>& fill, const std::vector<PgResult>& results,
                      const std::string& error) {
  if (conns_[i].running != fill) return;  // answered already (deadline)
  conns_[i].running.reset();
  CloseTimer(fill->deadline);
  if (!error.empty()) {  // the connection failed under the query: run it elsewhere
    if (++fill->attempts < kMaxAttempts) {
      queue_.push_front(fill);
    } else {
      FillError(fill, "namespace " + daemon_->config().namespaces[fill->ns].name + ": " + error);
    }
    Dispatch();
    return;
  }
  const auto& nc = daemon_->config().namespaces[fill->ns];
  const PGresult* r = results.empty() ? nullptr : results.back().get();
  if (StatementNotKept(r)) {  // the named statement is not on this server connection: run it unnamed
    std::string msg = PQresultErrorMessage(r);
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    StatementsNotKept(nc, msg);
    if (++fill->attempts < kMaxAttempts) {
      queue_.push_front(fill);
    } else {
      FillError(fill, "namespace " + nc.name + ": " + msg);
    }
    Dispatch();
    return;
  }
  if (r != nullptr && PQresultStatus(r) == PGRES_FATAL_ERROR) {
    const char* state = PQresultErrorField(r, PG_DIAG_SQLSTATE);
    if (state != nullptr && std::string_view(state) == "57014") {  // query_canceled: statement_timeout
      ++daemon_->stats().fill_timeouts;
      Answer(fill, Error(TC_E_TIMEOUT, "namespace " + nc.name + ": query timed out"));
      Dispatch();
      return;
    }
  }
  if (r == nullptr || PQresultStatus(r) != PGRES_TUPLES_OK) {
    std::string msg = r != nullptr ? PQresultErrorMessage(r) : "no result";
    while (!msg.empty() && msg.back() == '\n') msg.pop_back();
    FillError(fill, "namespace " + nc.name + ": " + msg);
    Dispatch();
    return;
  }
  auto& writer = daemon_->writer();
  const auto ttl = static_cast<uint64_t>(daemon_->config().ttl.count()) * 1'000'000;
  const auto negative_ttl = static_cast<uint64_t>(daemon_->config().negative_ttl.count()) * 1'000'000;
  LookupAnswer answer;
  PutResult put;
  if (PQntuples(r) == 0) {
    answer.status = TC_NOT_FOUND;
    put = fill->revoked ? PutResult::kRevoked
                        : writer.PutNegative(fill->ns, fill->key, negative_ttl, fill->lease);
  } else if (PQntuples(r) > 1) {
    FillError(fill, "namespace " + nc.name + ": the query returned " + std::to_string(PQntuples(r)) +
                        " rows for one key (it must return at most one)");
    Dispatch();
    return;
  } else {
    const int tenant_col = PQfnumber(r, Quoted(nc.tenant_column).c_str());
    if (tenant_col < 0 || PQgetisnull(r, 0, tenant_col)) {
      FillError(fill, "namespace " + nc.name + ": the query returned no (or a NULL) tenant column \"" +
                          nc.tenant_column + "\"");
      Dispatch();
      return;
    }
    EntryData entry;
    entry.tenant =
        std::string_view(PQgetvalue(r, 0, tenant_col), static_cast<size_t>(PQgetlength(r, 0, tenant_col)));
    for (const auto& f : nc.fields) {
      const int col = PQfnumber(r, Quoted(f).c_str());
      if (col < 0) {
        FillError(fill, "namespace " + nc.name + ": the query returned no column \"" + f + "\"");
        Dispatch();
        return;
      }
      if (PQgetisnull(r, 0, col))
        entry.fields.emplace_back(std::nullopt);
      else
        entry.fields.emplace_back(
            std::string_view(PQgetvalue(r, 0, col), static_cast<size_t>(PQgetlength(r, 0, col))));
    }
    answer.status = TC_FOUND;
    const size_t size = EncodedSize(fill->key, entry.tenant, entry.fields);
    if (size == 0) {
      FillError(fill, "namespace " + nc.name +
                          ": the value is too large for a cache slot (raise cache.slot_bytes)");
      Dispatch();
      return;
    }
    std::string data(size, '\0');
    EncodeEntry(fill->key, entry.tenant, entry.fields, reinterpret_cast<unsigned char*>(data.data()));
    answer.value = protocol::EncodeValue(static_cast<uint16_t>(fill->key.size()),
                                         static_cast<uint16_t>(entry.tenant.size()),
                                         static_cast<uint16_t>(entry.fields.size()), data);
    put = fill->revoked ? PutResult::kRevoked : writer.Put(fill->ns, fill->key, entry, ttl, fill->lease);
  }
  if (put == PutResult::kRevoked) {
    // A change committed while the query ran: what it read may be stale.
    ++daemon_->stats().leases_revoked;
    if (++fill->attempts < kMaxAttempts) {
      Begin(*fill);
      queue_.push_front(fill);
      Dispatch();
      return;
    }
    // On a primary the change that revoked it committed while the query
    // ran, so the row read is older than it by the query's time at most. On
    // a standby the fill's lease also spans its wait for the replay, up to
    // query_timeout: its row may be older than the change by more than the
    // bound, so it is not answered at all.
    if (conns_[i].replay.standby) {
      ++daemon_->stats().replica_timeouts;
      Answer(fill, Error(TC_E_TIMEOUT, "namespace " + nc.name + ": the key changed during each of " +
                                           std::to_string(kMaxAttempts) +
                                           " fills from the hot standby; not answered from it, since its "
                                           "row could be older than the change"));
      Dispatch();
      return;
    }
  }
  if (put != PutResult::kStored) ++daemon_->stats().uncached_answers;
  Answer(fill, answer);
  Dispatch();
}

void LoaderPool::Answer(const std::shared_ptr<Fill>& fill, const LookupAnswer& answer) {
  fills_.erase(std::make_pair(fill->ns, fill->key));
  auto waiters = std::exchange(fill->waiters, {});
  for (auto& w : waiters) w(answer);
}

}  // namespace tenantcache
