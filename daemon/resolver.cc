#include "resolver.h"

#include <arpa/inet.h>
#include <libpq-fe.h>
#include <netdb.h>
#include <netinet/in.h>
#include <spdlog/spdlog.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstdlib>
#include <map>
#include <memory>
#include <utility>

namespace tenantcache {
namespace {

std::vector<std::string> Split(const std::string& list) {
  std::vector<std::string> out;
  size_t start = 0;
  while (true) {
    const size_t comma = list.find(',', start);
    out.push_back(list.substr(start, comma == std::string::npos ? std::string::npos : comma - start));
    if (comma == std::string::npos) return out;
    start = comma + 1;
  }
}

std::string Join(const std::vector<std::string>& items) {
  std::string out;
  for (size_t i = 0; i < items.size(); ++i) out += (i == 0 ? "" : ",") + items[i];
  return out;
}

// What libpq itself connects to without a lookup: an empty entry (the
// default socket directory), a socket directory (absolute path, or "@" for
// Linux's abstract namespace), an IP address.
bool NeedsLookup(const std::string& host) {
  if (host.empty() || host[0] == '/' || host[0] == '@') return false;
  in6_addr addr;
  return inet_pton(AF_INET, host.c_str(), &addr) != 1 && inet_pton(AF_INET6, host.c_str(), &addr) != 1;
}

bool IsIpAddress(const std::string& host) {
  return !host.empty() && host[0] != '/' && host[0] != '@' && !NeedsLookup(host);
}

std::string AddressText(const sockaddr* sa) {
  char text[INET6_ADDRSTRLEN] = {};
  if (sa->sa_family == AF_INET)
    inet_ntop(AF_INET, &reinterpret_cast<const sockaddr_in*>(sa)->sin_addr, text, sizeof text);
  else if (sa->sa_family == AF_INET6)
    inet_ntop(AF_INET6, &reinterpret_cast<const sockaddr_in6*>(sa)->sin6_addr, text, sizeof text);
  return text;
}

// Appends "cannot resolve host name "NAME": WHY" to a "; "-separated list.
void AddFailure(std::string* list, const std::string& name, const std::string& why) {
  if (!list->empty()) list->append("; ");
  list->append("cannot resolve host name \"").append(name).append("\": ").append(why);
}

struct Lookup {
  uv_getaddrinfo_t req{};
  Resolution* owner = nullptr;
  std::string name;
  bool done = false;
};

}  // namespace

// One conninfo being resolved. Owns itself: deleted when its last lookup has
// returned (a lookup cannot be taken back from the thread pool once
// running), whether or not it was cancelled.
class Resolution {
 public:
  using Done = std::function<void(ConnParams, const std::string&)>;

  Resolution(std::string what, ConnParams base, std::vector<std::string> hosts,
             std::vector<std::string> ports)
      : what_(std::move(what)), base_(std::move(base)), hosts_(std::move(hosts)), ports_(std::move(ports)) {}
  void set_done(Done done) { done_ = std::move(done); }

  // Starts a lookup per distinct name; false (with `error`) when none could
  // be started.
  bool Start(uv_loop_t* loop, std::string* error) {
    for (const auto& h : hosts_) {
      if (!NeedsLookup(h) || lookups_.count(h) != 0) continue;
      auto lookup = std::make_unique<Lookup>();
      lookup->owner = this;
      lookup->name = h;
      lookup->req.data = lookup.get();
      addrinfo hints{};
      hints.ai_family = AF_UNSPEC;
      hints.ai_socktype = SOCK_STREAM;
      const int rc = uv_getaddrinfo(loop, &lookup->req, &Resolution::OnResolved, h.c_str(), nullptr, &hints);
      if (rc != 0) {
        failures_[h] = uv_strerror(rc);
        continue;
      }
      ++outstanding_;
      lookups_[h] = std::move(lookup);
    }
    if (outstanding_ > 0) return true;
    for (const auto& [name, why] : failures_) AddFailure(error, name, why);
    return false;
  }

  void Cancel() {
    done_ = nullptr;
    for (auto& [name, lookup] : lookups_)
      if (!lookup->done) uv_cancel(reinterpret_cast<uv_req_t*>(&lookup->req));
  }

 private:
  static void OnResolved(uv_getaddrinfo_t* req, int status, addrinfo* res) {
    auto* lookup = static_cast<Lookup*>(req->data);
    Resolution* self = lookup->owner;
    lookup->done = true;
    if (status == 0) {
      std::vector<std::string>& addresses = self->addresses_[lookup->name];
      for (const addrinfo* ai = res; ai != nullptr && addresses.size() < kMaxAddresses; ai = ai->ai_next) {
        const std::string a = AddressText(ai->ai_addr);
        if (!a.empty() && std::find(addresses.begin(), addresses.end(), a) == addresses.end())
          addresses.push_back(a);
      }
      if (addresses.empty())
        self->failures_[lookup->name] = "no IPv4 or IPv6 address";
      else
        spdlog::debug("{}: resolved host name \"{}\" to {}", self->what_, lookup->name, Join(addresses));
    } else if (status != UV_ECANCELED) {
      self->failures_[lookup->name] = uv_strerror(status);
    }
    uv_freeaddrinfo(res);
    if (--self->outstanding_ > 0) return;
    if (self->done_) self->Finish();
    delete self;
  }

  // Every lookup has returned: host, hostaddr and port, aligned.
  void Finish() {
    std::vector<std::string> host, hostaddr, port;
    std::string failed;
    for (size_t i = 0; i < hosts_.size(); ++i) {
      const std::string& h = hosts_[i];
      const std::string p = ports_.size() == hosts_.size() ? ports_[i] : "";
      if (!NeedsLookup(h)) {
        host.push_back(h);
        hostaddr.push_back(IsIpAddress(h) ? h : "");
        port.push_back(p);
        continue;
      }
      const auto f = failures_.find(h);
      if (f != failures_.end()) {
        if (failed.find("\"" + h + "\"") == std::string::npos) AddFailure(&failed, h, f->second);
        continue;
      }
      for (const auto& a : addresses_[h]) {
        host.push_back(h);
        hostaddr.push_back(a);
        port.push_back(p);
      }
    }
    if (host.empty()) {
      done_({}, failed);
      return;
    }
    if (!failed.empty()) spdlog::warn("{}: {}: trying the other hosts of the conninfo", what_, failed);
    ConnParams params = std::move(base_);
    params.keys.emplace_back("host");
    params.values.push_back(Join(host));
    params.keys.emplace_back("hostaddr");
    params.values.push_back(Join(hostaddr));
    if (ports_.size() == hosts_.size() && hosts_.size() > 1) {
      params.keys.emplace_back("port");
      params.values.push_back(Join(port));
    } else if (ports_.size() == 1) {
      params.keys.emplace_back("port");
      params.values.push_back(ports_[0]);
    }
    done_(std::move(params), "");
  }

  std::string what_;
  ConnParams base_;
  std::vector<std::string> hosts_, ports_;
  Done done_;
  int outstanding_ = 0;
  std::map<std::string, std::unique_ptr<Lookup>> lookups_;
  std::map<std::string, std::vector<std::string>> addresses_;
  std::map<std::string, std::string> failures_;
};

Resolution* ResolveConninfo(uv_loop_t* loop, const std::string& conninfo, const std::string& what,
                            std::function<void(ConnParams params, const std::string& error)> done) {
  // As given, for libpq to handle (and to report on) itself.
  ConnParams given;
  given.keys.emplace_back("dbname");
  given.values.push_back(conninfo);
  given.expand_dbname = true;

  char* parse_error = nullptr;
  PQconninfoOption* options = PQconninfoParse(conninfo.c_str(), &parse_error);
  if (options == nullptr) {
    // libpq says why when it is given the same string.
    if (parse_error != nullptr) PQfreemem(parse_error);
    done(std::move(given), "");
    return nullptr;
  }
  PQconninfoOption* defaults = PQconndefaults();
  // The value libpq would use: the conninfo's, else the environment's.
  const auto effective = [&](const char* key) -> std::string {
    for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o)
      if (std::string_view(o->keyword) == key && o->val != nullptr && o->val[0] != '\0') return o->val;
    for (const PQconninfoOption* o = defaults; o != nullptr && o->keyword != nullptr; ++o)
      if (std::string_view(o->keyword) == key && o->val != nullptr && o->val[0] != '\0') return o->val;
    return "";
  };
  const std::string host = effective("host"), hostaddr = effective("hostaddr"), port = effective("port");
  const bool service = !effective("service").empty() || std::getenv("PGSERVICE") != nullptr;
  ConnParams base;
  for (const PQconninfoOption* o = options; o->keyword != nullptr; ++o) {
    const std::string_view key = o->keyword;
    if (o->val == nullptr || key == "host" || key == "hostaddr" || key == "port") continue;
    base.keys.emplace_back(key);
    base.values.emplace_back(o->val);
  }
  PQconninfoFree(options);
  if (defaults != nullptr) PQconninfoFree(defaults);

  std::vector<std::string> hosts = Split(host);
  std::vector<std::string> ports = port.empty() ? std::vector<std::string>{} : Split(port);
  const bool any_name = std::any_of(hosts.begin(), hosts.end(), NeedsLookup);
  if (!any_name || !hostaddr.empty() || service || (ports.size() > 1 && ports.size() != hosts.size())) {
    done(std::move(given), "");
    return nullptr;
  }
  auto* r = new Resolution(what, std::move(base), std::move(hosts), std::move(ports));
  std::string error;
  if (!r->Start(loop, &error)) {
    delete r;
    done({}, error);
    return nullptr;
  }
  // Lookups report on the loop, never from within uv_getaddrinfo: `done` is
  // in place before the first can.
  r->set_done(std::move(done));
  return r;
}

void CancelResolution(Resolution* resolution) {
  if (resolution != nullptr) resolution->Cancel();
}

}  // namespace tenantcache
