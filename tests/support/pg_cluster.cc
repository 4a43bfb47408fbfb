#include "support/pg_cluster.h"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <pwd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <sstream>
#include <utility>

namespace tenantcache::test {
namespace {

// The newest installed server, unless TC_PG_BIN names one.
std::string FindBinDir() {
  if (const char* env = std::getenv("TC_PG_BIN"); env != nullptr && *env != '\0') return env;
  std::string best;
  int best_version = 0;
  std::error_code ec;
  for (const auto& e : std::filesystem::directory_iterator("/usr/lib/postgresql", ec)) {
    const int v = std::atoi(e.path().filename().c_str());
    if (v > best_version && std::filesystem::exists(e.path() / "bin" / "initdb")) {
      best_version = v;
      best = (e.path() / "bin").string();
    }
  }
  if (best.empty()) throw PgError("no PostgreSQL server found under /usr/lib/postgresql (set TC_PG_BIN)");
  return best;
}

}  // namespace

int FreePort() {
  const int fd = socket(AF_INET, SOCK_STREAM, 0);
  sockaddr_in addr{};
  addr.sin_family = AF_INET;
  addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  socklen_t len = sizeof addr;
  if (fd < 0 || bind(fd, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0 ||
      getsockname(fd, reinterpret_cast<sockaddr*>(&addr), &len) != 0) {
    if (fd >= 0) close(fd);
    throw PgError("cannot find a free port");
  }
  close(fd);
  return ntohs(addr.sin_port);
}

std::string ServerRoot(const std::string& prefix, unsigned socket_mode) {
  // Under TC_PG_ROOT (set by packaging/test.sh, which stops anything left
  // there if a test binary dies) or /tmp.
  const char* base = std::getenv("TC_PG_ROOT");
  std::string root = std::string(base != nullptr && *base != '\0' ? base : "/tmp") + "/" + prefix + "-XXXXXX";
  if (mkdtemp(root.data()) == nullptr) throw PgError("mkdtemp: " + std::string(std::strerror(errno)));
  const std::string socket_dir = root + "/sock";
  mkdir(socket_dir.c_str(), socket_mode);
  chmod(root.c_str(), 0755);
  if (geteuid() == 0) {
    const passwd* pw = getpwnam("postgres");
    if (pw == nullptr) throw PgError("running as root but there is no 'postgres' user to run servers as");
    if (chown(root.c_str(), pw->pw_uid, pw->pw_gid) != 0 ||
        chown(socket_dir.c_str(), pw->pw_uid, pw->pw_gid) != 0)
      throw PgError("chown " + root + ": " + std::strerror(errno));
  }
  return root;
}

namespace {}  // namespace

std::string ReadFile(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  if (!f) throw std::runtime_error("cannot read " + path);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

std::string SqlDir() { return TC_SOURCE_DIR "/sql"; }

PgCluster::PgCluster() : bin_dir_(FindBinDir()), root_(ServerRoot("tc-pg", 0700)) {
  data_dir_ = root_ + "/data";
  socket_dir_ = root_ + "/sock";
  log_file_ = root_ + "/server.log";
  Run({bin_dir_ + "/initdb", "-D", data_dir_, "-U", "postgres", "--auth=trust", "-E", "UTF8", "--locale=C",
       "-N"},
      "initdb");
  std::ofstream conf(data_dir_ + "/postgresql.conf", std::ios::app);
  conf << "\n# tenantcache test cluster\n"
       << "fsync = off\nfull_page_writes = off\nsynchronous_commit = off\n"
       << "listen_addresses = ''\nunix_socket_directories = '" << socket_dir_ << "'\n"
       << "max_connections = 200\nshared_preload_libraries = 'pg_stat_statements'\n"
       << "log_min_messages = warning\nlog_line_prefix = '%m [%p] '\n";
  conf.close();
  port_ = FreePort();
  Start();
}

PgCluster::~PgCluster() {
  try {
    Stop();
  } catch (...) {
  }
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
}

void PgCluster::Run(const std::vector<std::string>& args, const std::string& what) const {
  std::vector<std::string> full;
  if (geteuid() == 0) full = {"runuser", "-u", "postgres", "--"};
  full.insert(full.end(), args.begin(), args.end());
  const std::string out = root_ + "/" + what + ".out";
  const pid_t pid = fork();
  if (pid < 0) throw PgError("fork: " + std::string(std::strerror(errno)));
  if (pid == 0) {
    const int fd = open(out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0666);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
      close(fd);
    }
    std::vector<char*> argv;
    for (auto& a : full) argv.push_back(const_cast<char*>(a.c_str()));
    argv.push_back(nullptr);
    execvp(argv[0], argv.data());
    _exit(127);
  }
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    std::string output;
    try {
      output = ReadFile(out);
    } catch (...) {
    }
    throw PgError(what + " failed (status " + std::to_string(status) + "):\n" + output + LogTail(4000));
  }
}

void PgCluster::Start() {
  Run({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-l", log_file_, "-w", "-t", "60", "-o",
       "-p " + std::to_string(port_), "start"},
      "pg_ctl-start");
  running_ = true;
}

void PgCluster::Stop() {
  if (!running_) return;
  running_ = false;
  Run({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-m", "immediate", "-w", "stop"}, "pg_ctl-stop");
}

void PgCluster::Restart() {
  Run({bin_dir_ + "/pg_ctl", "-D", data_dir_, "-l", log_file_, "-m", "fast", "-w", "-t", "60", "-o",
       "-p " + std::to_string(port_), "restart"},
      "pg_ctl-restart");
  running_ = true;
}

std::string PgCluster::Conninfo(const std::string& dbname, const std::string& user) const {
  return "host=" + socket_dir_ + " port=" + std::to_string(port_) + " dbname=" + dbname + " user=" + user +
         " connect_timeout=10";
}

std::string PgCluster::CreateDatabase() {
  const std::string name = "test_" + std::to_string(getpid()) + "_" + std::to_string(next_db_++);
  PgConn c(Conninfo());
  c.Exec("CREATE DATABASE " + name + " TEMPLATE template0 ENCODING 'UTF8'");
  return name;
}

std::string PgCluster::LogTail(size_t bytes, size_t since) const {
  std::string log;
  try {
    log = ReadFile(log_file_);
  } catch (...) {
    return "(no server log)";
  }
  log = since < log.size() ? log.substr(since) : "";
  if (log.size() > bytes) log = "..." + log.substr(log.size() - bytes);
  return log;
}

size_t PgCluster::LogSize() const {
  struct stat st;
  return stat(log_file_.c_str(), &st) == 0 ? static_cast<size_t>(st.st_size) : 0;
}

PgCluster& SharedCluster() {
  static PgCluster* cluster = new PgCluster();  // stopped by PgEnvironment or at exit
  static const bool registered = [] {
    std::atexit([] { delete cluster; });
    return true;
  }();
  (void)registered;
  return *cluster;
}

PgConn::PgConn(const std::string& conninfo) : conn_(PQconnectdb(conninfo.c_str())) {
  if (PQstatus(conn_) != CONNECTION_OK) {
    const std::string msg = PQerrorMessage(conn_);
    PQfinish(conn_);
    throw PgError("connect: " + msg);
  }
  PQsetNoticeProcessor(
      conn_, [](void*, const char*) {}, nullptr);
}

PgConn::~PgConn() { PQfinish(conn_); }

std::vector<std::vector<std::string>> PgConn::Exec(const std::string& sql) {
  if (PQsendQuery(conn_, sql.c_str()) == 0) throw PgError(PQerrorMessage(conn_));
  std::vector<std::vector<std::string>> rows;
  std::string error;
  while (PGresult* r = PQgetResult(conn_)) {
    const auto st = PQresultStatus(r);
    if (st == PGRES_FATAL_ERROR || st == PGRES_BAD_RESPONSE || st == PGRES_NONFATAL_ERROR) {
      if (error.empty()) error = PQresultErrorMessage(r);
    } else if (st == PGRES_TUPLES_OK) {
      rows.clear();
      for (int i = 0; i < PQntuples(r); ++i) {
        std::vector<std::string> row;
        for (int j = 0; j < PQnfields(r); ++j)
          row.push_back(PQgetisnull(r, i, j) ? "<null>"
                                             : std::string(PQgetvalue(r, i, j), PQgetlength(r, i, j)));
        rows.push_back(std::move(row));
      }
    }
    PQclear(r);
  }
  if (!error.empty()) throw PgError(error);
  return rows;
}

std::string PgConn::Scalar(const std::string& sql) {
  const auto rows = Exec(sql);
  if (rows.size() != 1 || rows[0].size() != 1) throw PgError("expected one value from: " + sql);
  return rows[0][0];
}

std::string PgConn::ExecError(const std::string& sql) {
  try {
    Exec(sql);
  } catch (const PgError& e) {
    return e.what();
  }
  throw PgError("expected an error from: " + sql);
}

PgListener::PgListener(const std::string& conninfo, const std::string& channel) : conn_(conninfo) {
  conn_.Exec("LISTEN " + channel);
}

void PgListener::Poll(std::chrono::milliseconds timeout) {
  pollfd p{PQsocket(conn_.get()), POLLIN, 0};
  if (poll(&p, 1, static_cast<int>(timeout.count())) > 0) PQconsumeInput(conn_.get());
  while (PGnotify* n = PQnotifies(conn_.get())) {
    pending_.emplace_back(n->extra);
    PQfreemem(n);
  }
}

std::vector<std::string> PgListener::Drain(std::chrono::milliseconds wait) {
  const auto deadline = std::chrono::steady_clock::now() + wait;
  for (auto now = std::chrono::steady_clock::now(); now < deadline; now = std::chrono::steady_clock::now())
    Poll(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
         std::chrono::milliseconds(1));
  Poll(std::chrono::milliseconds(0));
  return std::exchange(pending_, {});
}

std::vector<std::string> PgListener::WaitFor(size_t n, std::chrono::milliseconds deadline_in) {
  const auto deadline = std::chrono::steady_clock::now() + deadline_in;
  Poll(std::chrono::milliseconds(0));
  for (auto now = std::chrono::steady_clock::now(); pending_.size() < n && now < deadline;
       now = std::chrono::steady_clock::now())
    Poll(std::chrono::duration_cast<std::chrono::milliseconds>(deadline - now) +
         std::chrono::milliseconds(1));
  return std::exchange(pending_, {});
}

}  // namespace tenantcache::test
