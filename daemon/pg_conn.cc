#include "pg_conn.h"

#include <cstdlib>
#include <utility>

#include "uv_handle.h"

namespace tenantcache {

PgConn::PgConn(uv_loop_t* loop, std::string name) : loop_(loop), name_(std::move(name)) {}

PgConn::~PgConn() {
  *alive_ = false;
  CancelResolution(resolving_);
  ClosePoll();  // rule 1: before PQfinish
  if (conn_ != nullptr) PQfinish(conn_);
}

void PgConn::StopPoll() {
  if (poll_ != nullptr) uv_poll_stop(poll_);
}

void PgConn::ClosePoll() {
  if (poll_ == nullptr) return;
  uv_poll_stop(poll_);
  poll_->data = nullptr;
  CloseAndDelete(poll_);
  poll_ = nullptr;
  poll_fd_ = -1;
}

void PgConn::Watch(int events) {
  const int fd = PQsocket(conn_);
  if (fd < 0) {
    Fail("connection has no socket");
    return;
  }
  if (poll_ != nullptr && poll_fd_ != fd) ClosePoll();  // rule 1: the socket changed
  if (poll_ == nullptr) {
    poll_ = new uv_poll_t;
    if (uv_poll_init_socket(loop_, poll_, fd) != 0) {
      delete poll_;
      poll_ = nullptr;
      Fail("cannot watch the connection's socket");
      return;
    }
    poll_->data = this;
    poll_fd_ = fd;
    poll_events_ = 0;
  }
  // libuv re-registers the descriptor with epoll on every uv_poll_start (a
  // DEL and an ADD): two system calls per query on the miss path when the
  // interest has not changed, which is the usual case.
  if (events == poll_events_ && uv_is_active(reinterpret_cast<uv_handle_t*>(poll_)) != 0) return;
  uv_poll_start(poll_, events, &PgConn::OnPoll);
  poll_events_ = events;
}

void PgConn::Connect(const std::string& conninfo) {
  Disconnect("reconnecting");
  // Host names first, off the loop (resolver.h); then libpq, given the
  // addresses, never blocks in a lookup.
  state_ = State::kResolving;
  // Done at once (nothing to resolve) the callback may already have started
  // another attempt: only a pending resolution is recorded.
  Resolution* pending =
      ResolveConninfo(loop_, conninfo, name_, [this](ConnParams params, const std::string& error) {
        resolving_ = nullptr;
        if (!error.empty()) {
          Fail(error);
          return;
        }
        Start(std::move(params));
      });
  if (pending != nullptr) resolving_ = pending;
}

void PgConn::Start(ConnParams params) {
  // fallback_application_name shows who this is in pg_stat_activity.
  params.keys.emplace_back("fallback_application_name");
  params.values.push_back("tenantcached " + name_);
  std::vector<const char*> keys, values;
  for (size_t i = 0; i < params.keys.size(); ++i) {
    keys.push_back(params.keys[i].c_str());
    values.push_back(params.values[i].c_str());
  }
  keys.push_back(nullptr);
  values.push_back(nullptr);
  conn_ = PQconnectStartParams(keys.data(), values.data(), params.expand_dbname ? 1 : 0);
  if (conn_ == nullptr) {
    Fail("out of memory");
    return;
  }
  if (PQstatus(conn_) == CONNECTION_BAD) {
    Fail(PQerrorMessage(conn_));
    return;
  }
  state_ = State::kConnecting;
  Watch(UV_WRITABLE);
}

void PgConn::ContinueConnect() {
  StopPoll();  // rule 1
  switch (PQconnectPoll(conn_)) {
    case PGRES_POLLING_READING:
      Watch(UV_READABLE);
      return;
    case PGRES_POLLING_WRITING:
      Watch(UV_WRITABLE);
      return;
    case PGRES_POLLING_OK:
      if (PQsetnonblocking(conn_, 1) != 0) {
        Fail(PQerrorMessage(conn_));
        return;
      }
      state_ = State::kReady;
      Watch(UV_READABLE);  // rule 2
      if (!session_setup_.empty()) {
        SetUpSession();
        return;
      }
      if (on_state_) on_state_("");
      return;
    default:
      Fail(PQerrorMessage(conn_));
      return;
  }
}

// Connected but not yet reported: busy (so not idle) with the setup, whose
// success reports the connection.
void PgConn::SetUpSession() {
  Query(session_setup_, {}, [this](const std::vector<PgResult>& results, const std::string& error) {
    if (state_ == State::kDisconnected) return;  // dropped meanwhile: its reason was reported
    std::string e = error;
    for (const auto& r : results) {
      const auto status = PQresultStatus(r.get());
      if (e.empty() && status != PGRES_COMMAND_OK && status != PGRES_TUPLES_OK)
        e = PQresultErrorMessage(r.get());
    }
    if (!e.empty()) {
      Fail("cannot set up the session (" + session_setup_ + "): " + e);
      return;
    }
    if (on_state_) on_state_("");
  });
}

void PgConn::Disconnect(const std::string& why) {
  CancelResolution(std::exchange(resolving_, nullptr));
  ClosePoll();
  if (conn_ != nullptr) {
    PQfinish(conn_);
    conn_ = nullptr;
  }
  const bool had_query = static_cast<bool>(pending_);
  state_ = State::kDisconnected;
  pipeline_ = false;
  if (had_query) Finish(why);
}

void PgConn::Fail(const std::string& error) {
  std::string msg = error;
  while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' ')) msg.pop_back();
  if (msg.empty()) msg = "connection lost";
  const auto alive = alive_;
  Disconnect(msg);
  if (*alive && on_state_) on_state_(msg);
}

void PgConn::Finish(const std::string& error) {
  auto cb = std::exchange(pending_, nullptr);
  auto results = std::exchange(results_, {});
  if (state_ == State::kBusy) state_ = State::kReady;
  if (cb) cb(results, error);
}

bool PgConn::Sent(int ok, ResultCallback cb) {
  if (ok == 0) {
    const std::string err = PQerrorMessage(conn_);
    cb({}, err.empty() ? "cannot send query" : err);
    return false;
  }
  pending_ = std::move(cb);
  state_ = State::kBusy;
  Flush();
  return true;
}

void PgConn::Query(const std::string& sql, const std::vector<std::optional<std::string>>& params,
                   ResultCallback cb) {
  if (!idle()) {
    cb({}, connected() ? "connection busy" : "not connected");
    return;
  }
  if (params.empty()) {
    Sent(PQsendQuery(conn_, sql.c_str()), std::move(cb));
    return;
  }
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  Sent(PQsendQueryParams(conn_, sql.c_str(), static_cast<int>(values.size()), nullptr, values.data(), nullptr,
                         nullptr, 0),
       std::move(cb));
}

void PgConn::PrepareAndDescribe(const std::string& stmt, const std::string& sql, ResultCallback cb) {
  if (!idle()) {
    cb({}, connected() ? "connection busy" : "not connected");
    return;
  }
  const bool sent = PQenterPipelineMode(conn_) != 0 &&
                    PQsendPrepare(conn_, stmt.c_str(), sql.c_str(), 0, nullptr) != 0 &&
                    PQsendDescribePrepared(conn_, stmt.c_str()) != 0 && PQpipelineSync(conn_) != 0;
  if (!sent) {
    // Part of the pipeline may be queued: the connection is of no further use.
    std::string err = PQerrorMessage(conn_);
    if (err.empty()) err = "cannot send query";
    const auto alive = alive_;
    Fail(err);
    if (*alive) cb({}, err);
    return;
  }
  pipeline_ = true;
  between_ = false;
  Sent(1, std::move(cb));
}

void PgConn::ServerPid(std::function<void(int pid, const std::string& error)> cb) {
  Query("SELECT pg_backend_pid()", {},
        [cb = std::move(cb)](const std::vector<PgResult>& results, const std::string& error) {
          if (!error.empty()) {
            cb(0, error);
            return;
          }
          const PGresult* r = results.empty() ? nullptr : results.back().get();
          if (r == nullptr || PQresultStatus(r) != PGRES_TUPLES_OK || PQntuples(r) != 1) {
            std::string msg = r != nullptr ? PQresultErrorMessage(r) : "no result";
            while (!msg.empty() && msg.back() == '\n') msg.pop_back();
            cb(0, "SELECT pg_backend_pid() failed: " + msg);
            return;
          }
          cb(std::atoi(PQgetvalue(r, 0, 0)), "");
        });
}

void PgConn::QueryPrepared(const std::string& stmt, const std::vector<std::optional<std::string>>& params,
                           ResultCallback cb) {
  if (!idle()) {
    cb({}, connected() ? "connection busy" : "not connected");
    return;
  }
  std::vector<const char*> values;
  values.reserve(params.size());
  for (const auto& p : params) values.push_back(p ? p->c_str() : nullptr);
  Sent(PQsendQueryPrepared(conn_, stmt.c_str(), static_cast<int>(values.size()), values.data(), nullptr,
                           nullptr, 0),
       std::move(cb));
}

// The Sync's result came: every result of the pipeline is in.
void PgConn::EndPipeline() {
  pipeline_ = false;
  if (PQexitPipelineMode(conn_) == 0) {
    Fail(PQerrorMessage(conn_));
    return;
  }
  Finish("");
}

void PgConn::Flush() {
  const int r = PQflush(conn_);
  if (r < 0) {
    Fail(PQerrorMessage(conn_));
    return;
  }
  Watch(r == 1 ? (UV_READABLE | UV_WRITABLE) : UV_READABLE);  // rule 2
}

void PgConn::ReadInput() {
  if (PQconsumeInput(conn_) == 0) {
    Fail(PQerrorMessage(conn_));
    return;
  }
  const auto alive = alive_;
  // Rule 3: every notification first.
  while (PGnotify* n = PQnotifies(conn_)) {
    const std::string channel = n->relname, payload = n->extra;
    PQfreemem(n);
    if (on_notify_) on_notify_(channel, payload);
    if (!*alive || conn_ == nullptr) return;
  }
  if (state_ != State::kBusy) return;
  while (PQisBusy(conn_) == 0) {
    PGresult* r = PQgetResult(conn_);
    if (r == nullptr) {
      if (!pipeline_) {
        Finish("");
        return;
      }
      // In a pipeline NULL ends one query's results; two in a row mean that
      // nothing is queued any more, so the Sync's result will never come.
      if (std::exchange(between_, true)) {
        Fail("the pipeline ended without its Sync");
        return;
      }
      continue;
    }
    between_ = false;
    const auto st = PQresultStatus(r);
    if (st == PGRES_PIPELINE_SYNC) {
      PQclear(r);
      EndPipeline();
      return;
    }
    results_.emplace_back(r);
    if (st == PGRES_COPY_IN || st == PGRES_COPY_OUT || st == PGRES_COPY_BOTH) {
      Fail("COPY is not supported on this connection");
      return;
    }
  }
}

void PgConn::OnPoll(uv_poll_t* handle, int status, int events) {
  auto* self = static_cast<PgConn*>(handle->data);
  if (self == nullptr) return;
  if (status < 0 && status != UV_EBADF) {
    self->Fail(std::string("socket error: ") + uv_strerror(status));
    return;
  }
  if (self->state_ == State::kConnecting) {
    self->ContinueConnect();
    return;
  }
  const auto alive = self->alive_;
  if ((events & UV_WRITABLE) != 0 && self->state_ == State::kBusy) {
    self->Flush();
    if (!*alive || self->conn_ == nullptr) return;
  }
  if ((events & UV_READABLE) != 0 || status == UV_EBADF) self->ReadInput();
}

}  // namespace tenantcache
