#include "control.h"

#include <grp.h>
#include <pwd.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <stdexcept>
#include <vector>

#include "daemon.h"
#include "protocol.h"
#include "tenantcache/tenantcache.h"
#include "uv_handle.h"

namespace tenantcache {

struct ControlServer::Client : std::enable_shared_from_this<Client> {
  ControlServer* server = nullptr;
  uv_pipe_t* pipe = nullptr;
  std::string in;
  char read_buf[16 * 1024];
  size_t queued = 0;  // bytes written but not yet flushed
  bool closed = false;

  void Close(const char* why) {
    if (closed) return;
    closed = true;
    if (why != nullptr) {
      ++server->daemon_->stats().control_errors;
      spdlog::debug("control client closed: {}", why);
    }
    uv_read_stop(reinterpret_cast<uv_stream_t*>(pipe));
    pipe->data = nullptr;
    CloseAndDelete(pipe);
    pipe = nullptr;
    server->clients_.erase(shared_from_this());
  }

  void Send(uint8_t op, int16_t status, uint32_t id, std::string_view payload) {
    if (closed) return;
    struct Write {
      uv_write_t req;
      std::string data;
      std::weak_ptr<Client> client;
    };
    auto* w = new Write;
    protocol::AppendFrame(&w->data, op, status, id, payload);
    w->client = weak_from_this();
    queued += w->data.size();
    if (queued > kMaxQueuedBytes) {
      delete w;
      Close("client does not read its answers");
      return;
    }
    w->req.data = w;
    uv_buf_t buf = uv_buf_init(w->data.data(), static_cast<unsigned>(w->data.size()));
    const int rc = uv_write(&w->req, reinterpret_cast<uv_stream_t*>(pipe), &buf, 1,
                            [](uv_write_t* req, int write_status) {
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
        d->InvalidateKey(ns, key);
        return Send(op, 0, id, "");
      }
      case protocol::kInvalidateTenant: {
        std::string_view tenant;
        if (!protocol::ParseTenantPayload(f.payload, &tenant)) return Close("malformed invalidate-tenant");
        d->InvalidateTenant(tenant);
        return Send(op, 0, id, "");
      }
      case protocol::kFlush:
        d->Flush("requested through the control socket");
        return Send(op, 0, id, "");
      case protocol::kStats:
        return Send(op, 0, id, d->StatsJson());
      case protocol::kReport: {
        protocol::Report r;
        if (!protocol::ParseReport(f.payload, &r)) return Close("malformed report");
        d->ClientReport(r);
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
    if (!closed) in.erase(0, used);
  }
};

ControlServer::ControlServer(Daemon* daemon) : daemon_(daemon) {}

ControlServer::~ControlServer() { Stop(); }

void ControlServer::Start() {
  const std::string& path = daemon_->config().control_socket;
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
  if (rc == 0) rc = uv_listen(reinterpret_cast<uv_stream_t*>(server_), 128, &ControlServer::OnConnection);
  if (rc != 0) {
    CloseAndDelete(server_);
    server_ = nullptr;
    throw std::runtime_error("control socket " + path + ": " + uv_strerror(rc));
  }
}

void ControlServer::Stop() {
  while (!clients_.empty()) (*clients_.begin())->Close(nullptr);
  if (server_ != nullptr) {
    CloseAndDelete(server_);
    server_ = nullptr;
    unlink(daemon_->config().control_socket.c_str());
  }
}

bool ControlServer::Allowed(int fd, std::string* who) const {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    *who = "unknown peer";
    return false;
  }
  *who = "pid " + std::to_string(cred.pid) + " uid " + std::to_string(cred.uid);
  const auto& groups = daemon_->config().allowed_groups;
  if (groups.empty() || cred.uid == 0 || cred.uid == getuid()) return true;
  // The peer's primary group and, through its user, its supplementary groups.
  std::vector<gid_t> peer_groups{cred.gid};
  if (const passwd* pw = getpwuid(cred.uid)) {
    int n = 64;
    std::vector<gid_t> list(static_cast<size_t>(n));
    if (getgrouplist(pw->pw_name, pw->pw_gid, list.data(), &n) >= 0)
      peer_groups.insert(peer_groups.end(), list.begin(), list.begin() + n);
  }
  for (const auto& name : groups) {
    const group* g = getgrnam(name.c_str());
    if (g == nullptr) continue;
    for (gid_t gid : peer_groups)
      if (gid == g->gr_gid) return true;
  }
  return false;
}

void ControlServer::OnConnection(uv_stream_t* server, int status) {
  auto* self = static_cast<ControlServer*>(server->data);
  if (self == nullptr || status < 0) return;
  auto* pipe = new uv_pipe_t;
  uv_pipe_init(server->loop, pipe, 0);
  if (uv_accept(server, reinterpret_cast<uv_stream_t*>(pipe)) != 0) {
    CloseAndDelete(pipe);
    return;
  }
  uv_os_fd_t fd;
  uv_fileno(reinterpret_cast<uv_handle_t*>(pipe), &fd);
  std::string who;
  const bool too_many = self->clients_.size() >= static_cast<size_t>(self->daemon_->config().max_clients);
  if (too_many || !self->Allowed(fd, &who)) {
    ++self->daemon_->stats().control_errors;
    spdlog::warn("control socket: refused {} ({})", who,
                 too_many ? "too many clients" : "not in allowed_groups");
    CloseAndDelete(pipe);
    return;
  }
  ++self->daemon_->stats().control_connections;
  auto client = std::make_shared<Client>();
  client->server = self;
  client->pipe = pipe;
  pipe->data = client.get();
  self->clients_.insert(client);
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
