#include "support/pgbouncer.h"

#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <thread>
#include <vector>

namespace tenantcache::test {
namespace {

// The unprivileged user it runs as when the tests run as root.
const passwd* PostgresUser() {
  if (geteuid() != 0) return nullptr;
  const passwd* pw = getpwnam("postgres");
  if (pw == nullptr) throw PgError("running as root but there is no 'postgres' user to run pgbouncer as");
  return pw;
}

}  // namespace

PgBouncer::PgBouncer(const PgCluster& cluster, int pool_size) {
  const char* bin = std::getenv("TC_PGBOUNCER");
  binary_ = bin != nullptr && *bin != '\0' ? bin : "/usr/sbin/pgbouncer";
  if (access(binary_.c_str(), X_OK) != 0)
    throw PgError(binary_ + " is not installed (apt-get install pgbouncer, or set TC_PGBOUNCER)");
  root_ = ServerRoot("tc-bouncer", 0755);
  socket_dir_ = root_ + "/sock";
  ini_ = root_ + "/pgbouncer.ini";
  log_file_ = root_ + "/pgbouncer.log";
  port_ = FreePort();
  // trust still wants each user named in auth_file.
  std::ofstream(root_ + "/userlist.txt") << "\"postgres\" \"\"\n";
  std::ofstream(ini_) << "[databases]\n"
                      << "* = host=" << cluster.socket_dir() << " port=" << cluster.port() << "\n\n"
                      << "[pgbouncer]\n"
                      << "pool_mode = transaction\n"
                      << "unix_socket_dir = " << socket_dir_ << "\n"
                      << "listen_port = " << port_ << "\n"
                      << "auth_type = trust\n"
                      << "auth_file = " << root_ << "/userlist.txt\n"
                      << "default_pool_size = " << pool_size << "\n"
                      << "max_client_conn = 500\n"
                      << "logfile = " << log_file_ << "\n"
                      << "pidfile = " << root_ << "/pgbouncer.pid\n"
                      << "admin_users = postgres\n"
                      << "server_login_retry = 1\n";
  if (const passwd* pw = PostgresUser()) {
    for (const auto& p : {ini_, root_ + "/userlist.txt"})
      if (chown(p.c_str(), pw->pw_uid, pw->pw_gid) != 0)
        throw PgError("chown " + p + ": " + std::strerror(errno));
  }
  Start();
}

PgBouncer::~PgBouncer() {
  Stop();
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
}

std::string PgBouncer::Conninfo(const std::string& dbname, const std::string& user) const {
  return "host=" + socket_dir_ + " port=" + std::to_string(port_) + " dbname=" + dbname + " user=" + user +
         " connect_timeout=10";
}

std::string PgBouncer::Log() const {
  try {
    return ReadFile(log_file_);
  } catch (...) {
    return "(no pgbouncer log)";
  }
}

void PgBouncer::Start() {
  if (pid_ > 0) return;
  const passwd* pw = PostgresUser();
  const pid_t pid = fork();
  if (pid < 0) throw PgError("fork: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    if (pw != nullptr && (setgroups(0, nullptr) != 0 || setgid(pw->pw_gid) != 0 || setuid(pw->pw_uid) != 0))
      _exit(126);
    // Its own output goes to the logfile; stdout/stderr keep the test's clean.
    if (freopen("/dev/null", "w", stdout) == nullptr) _exit(125);
    execl(binary_.c_str(), "pgbouncer", "-q", ini_.c_str(), static_cast<char*>(nullptr));
    _exit(127);
  }
  pid_ = pid;
  // Ready when a query through it is answered by PostgreSQL.
  const std::string conninfo = Conninfo("postgres") + " connect_timeout=2";
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(20);
  std::string last;
  while (std::chrono::steady_clock::now() < deadline) {
    int status = 0;
    if (waitpid(pid_, &status, WNOHANG) == pid_) {
      pid_ = -1;
      throw PgError("pgbouncer exited at start (status " + std::to_string(status) + "):\n" + Log());
    }
    PGconn* c = PQconnectdb(conninfo.c_str());
    if (PQstatus(c) == CONNECTION_OK) {
      PGresult* r = PQexec(c, "SELECT 1");
      const bool ok = PQresultStatus(r) == PGRES_TUPLES_OK;
      last = PQerrorMessage(c);
      PQclear(r);
      PQfinish(c);
      if (ok) return;
    } else {
      last = PQerrorMessage(c);
      PQfinish(c);
    }
    // Polling a process that is starting: nothing to wait on but its socket.
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  Stop();
  throw PgError("pgbouncer did not answer within 20 s (" + last + "):\n" + Log());
}

void PgBouncer::Stop() {
  if (pid_ <= 0) return;
  kill(pid_, SIGTERM);
  int status = 0;
  while (waitpid(pid_, &status, 0) < 0 && errno == EINTR) {
  }
  pid_ = -1;
}

void PgBouncer::Restart() {
  Stop();
  Start();
}

}  // namespace tenantcache::test
