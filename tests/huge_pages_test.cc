// Huge pages for the cache file: the daemon asks for 2 MiB pages and says,
// in its log, in `tenantcachectl status` and in its statistics, whether it got
// them; readers mapping the file get the same pages. The test puts the
// daemon's directory on a private tmpfs mounted with huge=advise (which gives
// them to a mapping that asks) or huge=never (the default of /dev/shm, which
// refuses them), so it needs root (CAP_SYS_ADMIN) for the mount.
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <string>

#include "support/fleet_test.h"

namespace tenantcache::test {
namespace {

constexpr uint64_t kHugePage = 2 << 20;

CommandResult RunCtl(const std::string& args) { return RunCommand(std::string(TC_CTL_BIN) + " " + args); }

// A tmpfs mounted at a new directory `path` for the object's lifetime.
class TmpfsMount {
 public:
  TmpfsMount(std::string path, const std::string& huge) : path_(std::move(path)) {
    if (mkdir(path_.c_str(), 0700) != 0) {
      error_ = "mkdir: " + std::string(std::strerror(errno));
      return;
    }
    const std::string opts = "size=256m,mode=0700,huge=" + huge;
    if (mount("tmpfs", path_.c_str(), "tmpfs", 0, opts.c_str()) != 0)
      error_ = "mount -t tmpfs -o " + opts + ": " + std::strerror(errno);
  }
  ~TmpfsMount() {
    if (error_.empty()) umount2(path_.c_str(), MNT_DETACH);
    rmdir(path_.c_str());
  }
  const std::string& error() const { return error_; }
  const std::string& path() const { return path_; }

 private:
  std::string path_;
  std::string error_;
};

// Bytes of this process's mapping of `file` in 2 MiB pages (smaps).
uint64_t PmdMappedBytes(const std::string& file) {
  std::ifstream in("/proc/self/smaps");
  std::string line;
  bool inside = false;
  uint64_t kib = 0;
  while (std::getline(in, line)) {
    if (line.find(" " + file) != std::string::npos && line.size() >= file.size() &&
        line.compare(line.size() - file.size(), file.size(), file) == 0) {
      inside = true;
      continue;
    }
    if (inside && line.rfind("ShmemPmdMapped:", 0) == 0) {
      kib += std::stoull(line.substr(15));
      inside = false;
    }
  }
  return kib * 1024;
}

class HugePagesTest : public FleetTest {
 protected:
  // Starts the daemon in a directory on a tmpfs mounted with `huge`; false
  // (and the test skipped) when this process may not mount.
  bool StartOn(const std::string& huge) {
    mount_ = std::make_unique<TmpfsMount>(dir_.File("tmpfs"), huge);
    if (!mount_->error().empty()) return false;
    daemon_ = std::make_unique<DaemonProcess>(mount_->path(), FleetConfig(mount_->path(), Conninfo()));
    return true;
  }

  std::unique_ptr<TmpfsMount> mount_;
};

TEST_F(HugePagesTest, ReportsTwoMegabytePagesWhenTheFilesystemGivesThem) {
  if (!StartOn("advise")) GTEST_SKIP() << "needs root to mount a tmpfs: " << mount_->error();
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();

  auto stats = DaemonStats(*daemon_);
  const uint64_t file_bytes = std::stoull(stats["file_bytes"]);
  const uint64_t huge_bytes = std::stoull(stats["huge_page_bytes"]);
  // Every whole 2 MiB of the file; the tail past the last boundary may stay small.
  EXPECT_GE(huge_bytes, file_bytes / kHugePage * kHugePage) << "file " << file_bytes;
  EXPECT_LE(huge_bytes, (file_bytes + kHugePage - 1) / kHugePage * kHugePage);
  EXPECT_NE(daemon_->Log().find("in 2 MiB pages"), std::string::npos) << daemon_->Log();

  const CommandResult status = RunCtl("--cache " + daemon_->cache_path() + " status");
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("huge pages      yes: "), std::string::npos) << status.output;
  const CommandResult prom = RunCtl("--cache " + daemon_->cache_path() + " stats --format prometheus");
  EXPECT_NE(prom.output.find("# TYPE tenantcache_huge_page_bytes gauge\ntenantcache_huge_page_bytes " +
                             std::to_string(huge_bytes) + "\n"),
            std::string::npos)
      << prom.output;

  // A reader's own mapping uses the daemon's 2 MiB pages: the header it
  // reads on open lies in the first one.
  ASSERT_EQ(tc_cache_open(daemon_->cache_path().c_str(), &cache_), 0);
  tc_info info;
  ASSERT_EQ(tc_cache_info(cache_, &info), 0);
  EXPECT_GE(PmdMappedBytes(daemon_->cache_path()), kHugePage);
}

TEST_F(HugePagesTest, SaysHowToGetHugePagesWhenTheFilesystemRefusesThem) {
  if (!StartOn("never")) GTEST_SKIP() << "needs root to mount a tmpfs: " << mount_->error();
  ASSERT_TRUE(daemon_->WaitReady()) << daemon_->Log();

  EXPECT_EQ(DaemonStats(*daemon_)["huge_page_bytes"], "0");
  const std::string log = daemon_->Log();
  EXPECT_NE(log.find("in 4 KiB pages"), std::string::npos) << log;
  EXPECT_NE(log.find("mount -o remount,huge=advise /dev/shm"), std::string::npos) << log;
  const CommandResult status = RunCtl("--cache " + daemon_->cache_path() + " status");
  EXPECT_EQ(status.exit_code, 0) << status.output;
  EXPECT_NE(status.output.find("huge pages      no: 4 KiB pages"), std::string::npos) << status.output;
}

}  // namespace
}  // namespace tenantcache::test
