#include "support/standby.h"

#include <pwd.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>

#include "support/test_cache.h"

namespace tenantcache::test {
namespace {

// Server tools refuse root: run them as the cluster's owner then.
std::string AsOwner(const std::string& command) {
  return geteuid() == 0 ? "runuser -u postgres -- " + command : command;
}

}  // namespace

Standby::Standby(const PgCluster& primary, std::chrono::milliseconds apply_delay) : primary_(primary) {
  root_ = ServerRoot("tc-standby", 0700);
  data_dir_ = root_ + "/data";
  socket_dir_ = root_ + "/sock";
  log_file_ = root_ + "/server.log";
  // The primary's own socket directory is private (0700): the base backup
  // and the WAL receiver connect there as postgres. A fast checkpoint, or
  // the backup waits for a spread one; no fsync of a throwaway copy.
  Run(primary.bin_dir() + "/pg_basebackup -D " + data_dir_ + " -R -X stream -c fast --no-sync -h " +
          primary.socket_dir() + " -p " + std::to_string(primary.port()) + " -U postgres",
      "pg_basebackup");
  // Later lines win over the primary's copied settings.
  std::ofstream conf(data_dir_ + "/postgresql.conf", std::ios::app);
  conf << "\n# tenantcache test standby\nunix_socket_directories = '" << socket_dir_
       << "'\nhot_standby = on\nrecovery_min_apply_delay = '" << apply_delay.count() << "ms'\n";
  conf.close();
  // Any port: nothing listens on TCP, and the socket directory is its own.
  port_ = primary.port() + 1;
  Run(primary.bin_dir() + "/pg_ctl -D " + data_dir_ + " -l " + log_file_ + " -w -t 60 -o '-p " +
          std::to_string(port_) + "' start",
      "pg_ctl start");
  running_ = true;
  if (!WaitFor(
          [&] { return Poll("SELECT count(*) FROM pg_stat_wal_receiver WHERE status = 'streaming'") == "1"; },
          std::chrono::seconds(30)))
    throw PgError("the standby does not stream from the primary:\n" + LogTail());
}

Standby::~Standby() {
  if (running_) {
    try {
      Run(primary_.bin_dir() + "/pg_ctl -D " + data_dir_ + " -m immediate -w stop", "pg_ctl stop");
    } catch (...) {
    }
  }
  std::error_code ec;
  std::filesystem::remove_all(root_, ec);
}

void Standby::Run(const std::string& command, const std::string& what) const {
  const CommandResult r = RunCommand(AsOwner(command));
  if (r.exit_code != 0)
    throw PgError(what + " failed (exit " + std::to_string(r.exit_code) + "): " + r.output + "\n" +
                  LogTail());
}

std::string Standby::Admin(const std::string& sql) const {
  PgConn c(Conninfo("postgres"));
  return c.Scalar(sql);
}

std::string Standby::Poll(const std::string& sql) const {
  try {
    return Admin(sql);
  } catch (const PgError&) {
    return "";
  }
}

std::string Standby::Conninfo(const std::string& dbname, const std::string& user) const {
  return "host=" + socket_dir_ + " port=" + std::to_string(port_) + " dbname=" + dbname + " user=" + user +
         " connect_timeout=10";
}

void Standby::SetApplyDelay(std::chrono::milliseconds delay) {
  std::ofstream(data_dir_ + "/postgresql.conf", std::ios::app)
      << "recovery_min_apply_delay = '" << delay.count() << "ms'\n";
  Run(primary_.bin_dir() + "/pg_ctl -D " + data_dir_ + " reload", "pg_ctl reload");
  if (!WaitFor([&] {
        return Poll("SELECT setting FROM pg_settings WHERE name = 'recovery_min_apply_delay'") ==
               std::to_string(delay.count());
      }))
    throw PgError("recovery_min_apply_delay did not change:\n" + LogTail());
}

void Standby::PauseReplay() {
  Admin("SELECT pg_wal_replay_pause()");
  if (!WaitFor([&] { return Poll("SELECT pg_get_wal_replay_pause_state()") == "paused"; }))
    throw PgError("replay did not pause:\n" + LogTail());
}

void Standby::ResumeReplay() {
  Admin("SELECT pg_wal_replay_resume()");
  if (!WaitFor([&] { return Poll("SELECT pg_get_wal_replay_pause_state()") == "not paused"; }))
    throw PgError("replay did not resume:\n" + LogTail());
}

// A transaction of our own, committed now: once the standby knows it
// committed, it has replayed everything committed before it.
bool Standby::CatchUp(std::chrono::milliseconds timeout) {
  PgConn p(primary_.Conninfo());
  const std::string xid = p.Scalar("SELECT txid_current()::text");
  return WaitFor([&] { return Poll("SELECT txid_status(" + xid + ")") == "committed"; }, timeout);
}

std::string Standby::LogTail(size_t bytes) const {
  std::string log;
  try {
    log = ReadFile(log_file_);
  } catch (...) {
    return "(no standby log)";
  }
  return log.size() > bytes ? "..." + log.substr(log.size() - bytes) : log;
}

}  // namespace tenantcache::test
