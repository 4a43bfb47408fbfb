#include "control.h"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "daemon.h"
#include "protocol.h"
#include "tenantcache/tenantcache.h"
#include "uv_handle.h"

namespace tenantcache {
namespace {

constexpr const char* kRateLimited = "rate limited: retry later";

}  // namespace

struct ControlServer::Client : std::enable_shared_from_this<Client> {
  ControlServer* server = nullptr;
  uv_pipe_t* pipe = nullptr;
  std::string who;   // "pid P uid U", for warnings
  uint32_t pid = 0;  // the peer's pid (SO_PEERCRED), 0 if the kernel could not name it
  std::string in;
  char read_buf[16 * 1024];
  size_t queued = 0;  // bytes written but not yet flushed
  std::string frame;  // the answer being sent (reused)
  bool closed = false;
  uint64_t last_read_ms = 0;      // loop time of the last bytes received
  uint64_t partial_since_ms = 0;  // loop time an incomplete request began; 0: none

  void Close(const char* why) {
    if (closed) return;
    closed = true;
    if (why != nullptr) {
      ++server->daemon_->stats().control_errors;
      spdlog::debug("control client {} closed: {}", who, why);
    }
    uv_read_stop(reinterpret_cast<uv_stream_t*>(pipe));
    pipe->data = nullptr;
    CloseAndDelete(pipe);
    pipe = nullptr;
    // The erase may destroy this client: nothing of it is used after.
    ControlServer* s = server;
    s->clients_.erase(shared_from_this());
    s->daemon_->stats().control_clients = s->clients_.size();
  }

  void Send(uint8_t op, int16_t status, uint32_t id, std::string_view payload) {
    if (closed) return;
    frame.clear();
    protocol::AppendFrame(&frame, op, status, id, payload);
    auto* stream = reinterpret_cast<uv_stream_t*>(pipe);
    size_t sent = 0;
    // With nothing queued (so in order), the answer is written at once: no
    // request to allocate, and no change of the socket's poll events.
    if (queued == 0) {
      uv_buf_t now = uv_buf_init(frame.data(), static_cast<unsigned>(frame.size()));
      const int n = uv_try_write(stream, &now, 1);
      if (n == static_cast<int>(frame.size())) return;
      if (n >= 0) {
        sent = static_cast<size_t>(n);
      } else if (n != UV_EAGAIN) {
        return Close("write failed");
      }
    }
    struct Write {
      uv_write_t req;
      std::string data;
      std::weak_ptr<Client> client;
    };
    auto* w = new Write;
    w->data.assign(frame, sent);
    w->client = weak_from_this();
    queued += w->data.size();
    if (queued > kMaxQueuedBytes) {
      delete w;
      Close("client does not read its answers");
      return;
    }
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    const int rc = uv_write(&w->req, stream, &buf, 1, [](uv_write_t* req, int write_status) {
      auto* wr = static_cast<Write*>(req->data);
      if (auto c = wr->client.lock()) {
        c->queued -= wr->data.size();
        if (write_status < 0) c->Close("write failed");
      }
      delete wr;
    });
    if (rc != 0) {
      queued -= w->data.size();
      delete w;
      Close("write failed");
    }
  }

  void Handle(const protocol::Frame& f) {
    Daemon* d = server->daemon_;
    const uint32_t id = f.request_id;
    const uint8_t op = f.op;
    switch (op) {
      case protocol::kLookup: {
        std::string_view ns, key;
        if (!protocol::ParseKeyPayload(f.payload, &ns, &key)) return Close("malformed lookup");
        d->Lookup(ns, key, [weak = weak_from_this(), id](const LookupAnswer& a) {
          if (auto c = weak.lock())
            c->Send(protocol::kLookup, static_cast<int16_t>(a.status), id,
                    a.status == TC_FOUND ? a.value : a.message);
        });
        return;
      }
      case protocol::kInvalidate: {
        std::string_view ns, key;
        if (!protocol::ParseKeyPayload(f.payload, &ns, &key)) return Close("malformed invalidate");
        if (!server->Admit(op, who)) return Send(op, TC_E_BUSY, id, kRateLimited);
        d->InvalidateKey(ns, key);
        return Send(op, 0, id, "");
      }
      case protocol::kInvalidateTenant: {
        std::string_view tenant;
        if (!protocol::ParseTenantPayload(f.payload, &tenant)) return Close("malformed invalidate-tenant");
        if (!server->Admit(op, who)) return Send(op, TC_E_BUSY, id, kRateLimited);
        d->InvalidateTenant(tenant);
        return Send(op, 0, id, "");
      }
      case protocol::kFlush:
        if (!server->Admit(op, who)) return Send(op, TC_E_BUSY, id, kRateLimited);
        d->Flush("requested through the control socket");
        return Send(op, 0, id, "");
      case protocol::kStats:
        return Send(op, 0, id, d->StatsJson());
      case protocol::kReport: {
        protocol::Report r;
        if (!protocol::ParseReport(f.payload, &r)) return Close("malformed report");
        d->ClientReport(pid, r);
        return;  // never answered
      }
      default:
        return Close("unknown operation");
    }
  }

  void Read(ssize_t nread, const uv_buf_t* buf) {
    if (nread < 0) {
      Close(nread == UV_EOF ? nullptr : "read error");
      return;
    }
    last_read_ms = uv_now(pipe->loop);
    in.append(buf->base, static_cast<size_t>(nread));
    auto self = shared_from_this();  // Handle may close us
    size_t used = 0;
    while (!closed) {
      protocol::Frame f;
      size_t n = 0;
      const char* err = nullptr;
      const auto p =
          protocol::ParseFrame(std::string_view(in).substr(used), protocol::kMaxRequest, &f, &n, &err);
      if (p == protocol::Parse::kNeedMore) break;
      if (p == protocol::Parse::kBad) return Close(err);
      Handle(f);
      used += n;
    }
    if (closed) return;
    in.erase(0, used);
    // The clock of an incomplete request starts with its first byte and is
    // not reset by more bytes: a request trickled byte by byte times out too.
    if (in.empty())
      partial_since_ms = 0;
    else if (used != 0 || partial_since_ms == 0)
      partial_since_ms = last_read_ms;
  }
};

ControlServer::ControlServer(Daemon* daemon, ControlLimits limits)
    : daemon_(daemon),
      limits_(limits),
      flush_bucket_{limits.flush, limits.flush.burst},
      tenant_bucket_{limits.invalidate_tenant, limits.invalidate_tenant.burst},
      key_bucket_{limits.invalidate_key, limits.invalidate_key.burst} {}

ControlServer::~ControlServer() { Stop(); }

void ControlServer::Start() {
  const std::string& path = daemon_->config().control_socket;
  ResolveGroups();
  server_ = new uv_pipe_t;
  uv_pipe_init(daemon_->loop(), server_, 0);
  server_->data = this;
  // A socket file left by a previous run (nobody listening) is replaced.
  struct stat st;
  if (lstat(path.c_str(), &st) == 0 && S_ISSOCK(st.st_mode)) unlink(path.c_str());
  int rc = uv_pipe_bind(server_, path.c_str());
  if (rc == 0)
    rc = chmod(path.c_str(), daemon_->config().control_mode) == 0 ? 0 : uv_translate_sys_error(errno);
  if (rc == 0) {
    if (!daemon_->config().cache_group.empty()) {
      if (const group* g = getgrnam(daemon_->config().cache_group.c_str())) {
        if (chown(path.c_str(), static_cast<uid_t>(-1), g->gr_gid) != 0) rc = uv_translate_sys_error(errno);
      }
    }
  }
  // The kernel's own cap (net.core.somaxconn): a burst of misses from many
  // workers waits in the backlog instead of failing to connect (TC_E_BUSY).
  if (rc == 0)
    rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_), SOMAXCONN, &ControlServer::OnConnection);
  if (rc != 0) {
    CloseAndDelete(server_);
    server_ = nullptr;
    throw std::runtime_error("control socket " + path + ": " + uv_strerror(rc));
  }
  const uint64_t now = uv_now(daemon_->loop());
  for (Bucket* b : {&flush_bucket_, &tenant_bucket_, &key_bucket_}) b->last_ms = now;
  daemon_->stats().control_max_clients = max_clients();
  // Often enough that a timeout is enforced within a second of its bound.
  const auto period = static_cast<uint64_t>(std::clamp<int64_t>(
      std::min(limits_.partial_frame_timeout, limits_.idle_timeout).count() / 4, 1, 1000));
  sweep_timer_ = NewTimer(daemon_->loop(), this);
  uv_timer_start(
      sweep_timer_, [](uv_timer_t* t) { static_cast<ControlServer*>(t->data)->Sweep(); }, period, period);
}

void ControlServer::Stop() {
  while (!clients_.empty()) (*clients_.begin())->Close(nullptr);
  CloseTimer(sweep_timer_);
  if (server_ != nullptr) {
    CloseAndDelete(server_);
    server_ = nullptr;
    unlink(daemon_->config().control_socket.c_str());
  }
}

void ControlServer::Reload() {
  ResolveGroups();
  SetClientBudget(client_budget_);
}

size_t ControlServer::max_clients() const {
  return std::min(static_cast<size_t>(daemon_->config().max_clients), client_budget_);
}

void ControlServer::SetClientBudget(size_t descriptors) {
  client_budget_ = descriptors;
  const auto configured = static_cast<size_t>(daemon_->config().max_clients);
  if (configured > descriptors && warned_max_clients_ != configured) {
    spdlog::warn(
        "control.max_clients = {} exceeds what RLIMIT_NOFILE leaves for clients: serving at most {} "
        "(raise LimitNOFILE= by {} or lower max_clients)",
        configured, descriptors, configured - descriptors);
  }
  warned_max_clients_ = configured > descriptors ? configured : 0;
  daemon_->stats().control_max_clients = max_clients();
}

// Group names become ids once per (re)load, so that checking a peer costs no
// name-service lookup (NSS may be LDAP or sssd: slow, and a peer could make
// us call it at will).
void ControlServer::ResolveGroups() {
  allowed_gids_.clear();
  member_uids_.clear();
  for (const auto& name : daemon_->config().allowed_groups) {
    const group* g = getgrnam(name.c_str());
    if (g == nullptr) {
      spdlog::warn("control.allowed_groups: no group named \"{}\": it admits nobody", name);
      continue;
    }
    allowed_gids_.push_back(g->gr_gid);
    std::vector<std::string> members;
    for (char** m = g->gr_mem; m != nullptr && *m != nullptr; ++m) members.emplace_back(*m);
    for (const auto& m : members)
      if (const passwd* pw = getpwnam(m.c_str())) member_uids_.push_back(pw->pw_uid);
  }
}

bool ControlServer::Allowed(int fd, std::string* who, uint32_t* pid, bool* operator_peer) {
  ucred cred{};
  socklen_t len = sizeof cred;
  *operator_peer = false;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *who = "unknown peer";
    return false;
  }
  *pid = cred.pid > 0 ? static_cast<uint32_t>(cred.pid) : 0;
  *who = "pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid);
  *operator_peer = cred.uid == 0 || cred.uid == getuid();
  if (daemon_->config().allowed_groups.empty() || *operator_peer) return true;
  const auto allowed = [this](gid_t gid) {
    return std::find(allowed_gids_.begin(), allowed_gids_.end(), gid) != allowed_gids_.end();
  };
  if (allowed(cred.gid)) return true;
  if (!peergroups_missing_) {
    // The groups the peer's process had when it connected, from the kernel.
    std::vector<gid_t> groups(64);
    len = static_cast<socklen_t>(groups.size() * sizeof(gid_t));
    int rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
    if (rc != 0 && errno == ERANGE) {
      groups.resize(len / sizeof(gid_t));
      rc = getsockopt(fd, SOL_SOCKET, SO_PEERGROUPS, groups.data(), &len);
    }
    if (rc == 0) {
      groups.resize(len / sizeof(gid_t));
      return std::any_of(groups.begin(), groups.end(), allowed);
    }
    if (errno != ENOPROTOOPT) return false;
    peergroups_missing_ = true;
    spdlog::warn(
        "control socket: the kernel has no SO_PEERGROUPS (Linux < 4.13); allowed_groups admits a peer by "
        "its primary group or by the groups' member lists as of the last (re)load");
  }
  return std::find(member_uids_.begin(), member_uids_.end(), cred.uid) != member_uids_.end();
}

void ControlServer::Warn(LogLimiter* limiter, const std::string& message) {
  if (limiter->Admit())
    spdlog::warn("{}{}", message, limiter->suffix());
  else
    ++daemon_->stats().control_log_suppressed;
}

bool ControlServer::Admit(uint8_t op, const std::string& who) {
  Bucket* b = op == protocol::kFlush              ? &flush_bucket_
              : op == protocol::kInvalidateTenant ? &tenant_bucket_
                                                  : &key_bucket_;
  const uint64_t now = uv_now(daemon_->loop());
  b->tokens = std::min(b->limit.burst,
                       b->tokens + static_cast<double>(now - b->last_ms) * b->limit.per_second / 1000.0);
  b->last_ms = now;
  if (b->tokens >= 1) {
    b->tokens -= 1;
    return true;
  }
  ++daemon_->stats().control_rate_limited;
  const char* name = op == protocol::kFlush              ? "flush"
                     : op == protocol::kInvalidateTenant ? "invalidate-tenant"
                                                         : "invalidate";
  Warn(&rate_limited_, fmt::format("control socket: {} from {} answered busy: more than {} a second "
                                   "(bursts of {}) are not applied",
                                   name, who, b->limit.per_second, b->limit.burst));
  return false;
}

void ControlServer::Sweep() {
  const uint64_t now = uv_now(daemon_->loop());
  const auto partial = static_cast<uint64_t>(limits_.partial_frame_timeout.count());
  const auto idle = static_cast<uint64_t>(limits_.idle_timeout.count());
  std::vector<std::shared_ptr<Client>> expired;
  for (const auto& c : clients_)
    if ((c->partial_since_ms != 0 && now - c->partial_since_ms >= partial) || now - c->last_read_ms >= idle)
      expired.push_back(c);
  for (const auto& c : expired) {
    if (c->partial_since_ms != 0 && now - c->partial_since_ms >= partial) {
      ++daemon_->stats().control_timeouts;
      Warn(&timed_out_, fmt::format("control socket: closed {}: its request was incomplete for {} ms", c->who,
                                    limits_.partial_frame_timeout.count()));
    } else {
      ++daemon_->stats().control_idle_closed;
      spdlog::debug("control client {} closed: idle for {} s", c->who, idle / 1000);
    }
    c->Close(nullptr);
  }
  std::set<uint32_t> connected;
  for (const auto& c : clients_) connected.insert(c->pid);
  daemon_->ForgetExitedClients(connected);
  // A flood that stopped is still summed up, one interval after its last
  // warning.
  for (LogLimiter* t : {&refused_, &full_, &accept_failed_, &timed_out_, &rate_limited_})
    if (const std::string summary = t->TakeSummary(); !summary.empty())
      spdlog::warn("control socket: {}", summary);
}

void ControlServer::OnConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<ControlServer*>(server->data);
  if (self == nullptr) return;
  Stats& stats = self->daemon_->stats();
  if (status < 0) {
    // EMFILE/ENFILE: libuv accepted and closed the connection to keep the
    // listener from spinning; the client saw it closed.
    ++stats.control_accept_errors;
    self->Warn(&self->accept_failed_,
               fmt::format("control socket: cannot accept a connection: {} ({} clients connected, "
                           "max_clients {}); raise LimitNOFILE= or lower max_clients",
                           uv_strerror(status), self->clients_.size(), self->max_clients()));
    return;
  }
  auto* pipe = new uv_pipe_t;
  uv_pipe_init(server->loop, pipe, 0);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(pipe)) != 0) {
    CloseAndDelete(pipe);
    return;
  }
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(pipe), &fd);
  std::string who;
  uint32_t pid = 0;
  bool operator_peer = false;
  if (!self->Allowed(fd, &who, &pid, &operator_peer)) {
    ++stats.control_refused;
    self->Warn(&self->refused_, fmt::format("control socket: refused {} (not in allowed_groups)", who));
    CloseAndDelete(pipe);
    return;
  }
  if (self->clients_.size() >= self->max_clients() + (operator_peer ? kOperatorReserve : 0)) {
    ++stats.control_full;
    self->Warn(&self->full_, fmt::format("control socket: refused {}: max_clients ({}) connections are open",
                                         who, self->max_clients()));
    CloseAndDelete(pipe);
    return;
  }
  ++stats.control_connections;
  auto client = std::make_shared<Client>();
  client->server = self;
  client->pipe = pipe;
  client->who = std::move(who);
  client->pid = pid;
  client->last_read_ms = uv_now(server->loop);
  pipe->data = client.get();
  self->clients_.insert(client);
  stats.control_clients = self->clients_.size();
  uv_read_start(
      reinterpret_cast<uv_stream_t*>(pipe),
      [](uv_handle_t* handle, size_t, uv_buf_t* buf) {
        // One read at a time per stream: the client's own buffer serves.
        auto* c = static_cast<Client*>(handle->data);
        *buf = uv_buf_init(c->read_buf, sizeof c->read_buf);
      },
      [](uv_stream_t* stream, ssize_t nread, const uv_buf_t* buf) {
        if (auto* c = static_cast<Client*>(stream->data)) c->Read(nread, buf);
      });
}

}  // namespace tenantcache
