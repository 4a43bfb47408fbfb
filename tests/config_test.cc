// Configuration: durations, redaction of passwords, defaults, and that the
// README's reference table is the daemon's key table.
#include "config.h"

#include <gtest/gtest.h>

#include <cstdio>
#include <fstream>
#include <vector>

#include "support/pg_cluster.h"
#include "support/test_cache.h"

namespace tenantcache {
namespace {

TEST(Config, DurationsNeedAUnit) {
  EXPECT_EQ(ParseDuration("250ms"), Millis(250));
  EXPECT_EQ(ParseDuration("5s"), Millis(5000));
  EXPECT_EQ(ParseDuration("10m"), Millis(600000));
  EXPECT_EQ(ParseDuration("1h"), Millis(3600000));
  EXPECT_EQ(ParseDuration("2d"), Millis(172800000));
  EXPECT_EQ(ParseDuration("0s"), Millis(0));
  for (const char* bad : {"", "5", "s", "5 s", "-5s", "5sec", "1.5s", "99999999999999999999s"})
    EXPECT_FALSE(ParseDuration(bad).has_value()) << bad;
}

TEST(Config, PasswordsAreRedactedInEveryConninfoForm) {
  struct Case {
    const char* conninfo;
    std::vector<const char*> kept;
  };
  const Case cases[] = {
      {"host=db user=app password=s3cret dbname=x", {"host=db", "user=app", "dbname=x"}},
      {"host=db password = 'it\\'s s3cret' dbname=x", {"host=db", "dbname=x"}},
      {"postgresql://app:s3cret@db:5432/x", {"host=db", "port=5432", "user=app", "dbname=x"}},
      {"postgresql://db/x?password=s3cret&sslmode=require", {"host=db", "sslmode=require"}},
      // A percent-encoded parameter name is still the password to libpq.
      {"postgresql://db/x?pass%77ord=s3cret", {"host=db", "dbname=x"}},
      {"postgres://app:%73%33cret@db/x?sslpassword=s3cret", {"host=db", "user=app"}},
  };
  for (const auto& c : cases) {
    const std::string r = RedactConninfo(c.conninfo);
    EXPECT_EQ(r.find("s3cret"), std::string::npos) << c.conninfo << " -> " << r;
    EXPECT_EQ(r.find("%73%33"), std::string::npos) << c.conninfo << " -> " << r;
    EXPECT_NE(r.find("password=********"), std::string::npos) << c.conninfo << " -> " << r;
    for (const char* kept : c.kept) EXPECT_NE(r.find(kept), std::string::npos) << c.conninfo << " -> " << r;
  }
  EXPECT_EQ(RedactConninfo("host=db dbname=x"), "dbname=x host=db");
  // What libpq cannot parse is not shown (its own message would quote it).
  EXPECT_EQ(RedactConninfo("host='db password=s3cret"), "<conninfo that libpq cannot parse>");
}

TEST(Config, ASyntaxErrorNeverShowsThePassword) {
  test::TempDir dir;
  const std::string path = dir.File("bad.toml");
  for (const char* text : {
           "[[source]]\nname = \"main\"\nconninfo = \"host=db password=s3cret\n",
           "[[source]]\nname = \"main\"\nconninfo = [\"host=db password=s3cret\"]\n",
           "[[source]]\nname = \"main\"\nconninfo = \"postgresql://db/x?pass%77ord=s3cret\" junk\n",
       }) {
    std::ofstream(path) << text;
    std::string message;
    try {
      LoadConfig(path);
    } catch (const ConfigError& e) {
      message = e.what();
    }
    EXPECT_NE(message.find(path + ":3"), std::string::npos) << message;
    EXPECT_EQ(message.find("s3cret"), std::string::npos) << message;
  }
}

TEST(Config, AMinimalFileGetsEveryDefault) {
  test::TempDir dir;
  const std::string path = dir.File("min.toml");
  std::ofstream(path) << "[[source]]\nname = \"main\"\n\n[[namespace]]\nname = \"user\"\nkind = \"uuid\"\n"
                         "query = \"SELECT $1\"\ntenant_column = \"t\"\nfields = []\n";
  const Config c = LoadConfig(path);
  EXPECT_EQ(c.cache_path, "/run/tenantcache/cache");
  EXPECT_EQ(c.capacity, 100000u);
  EXPECT_EQ(c.slot_bytes, 320u);
  EXPECT_EQ(c.cache_mode, 0640u);
  EXPECT_EQ(c.stale_after, Millis(5000));
  EXPECT_EQ(c.heartbeat_interval, Millis(1000));
  EXPECT_EQ(c.control_socket, "/run/tenantcache/tenantcached.sock");
  ASSERT_EQ(c.sources.size(), 1u);
  EXPECT_EQ(c.sources[0].channel, "tenantcache");
  EXPECT_EQ(c.sources[0].loaders, 2);
  ASSERT_EQ(c.namespaces.size(), 1u);
  EXPECT_EQ(c.namespaces[0].source, "main");
}

TEST(Config, TheReadmeReferenceIsTheKeyTable) {
  const std::string readme = test::ReadFile(TC_SOURCE_DIR "/README.md");
  const size_t begin = readme.find("<!-- config-reference:begin -->\n");
  const size_t end = readme.find("<!-- config-reference:end -->");
  ASSERT_NE(begin, std::string::npos);
  ASSERT_NE(end, std::string::npos);
  const std::string table = readme.substr(begin + 32, end - begin - 32);
  FILE* p = popen(TC_DAEMON_BIN " --config-reference", "r");
  ASSERT_NE(p, nullptr);
  std::string printed;
  char buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0) printed.append(buf, n);
  pclose(p);
  EXPECT_EQ(table, printed) << "regenerate the README section with: tenantcached --config-reference";
  for (const auto& k : kConfigKeys)
    EXPECT_NE(table.find(std::string(".") + k.name + "`"), std::string::npos) << k.name;
}

TEST(Config, ThePackagedSampleIsTheKeyTableAndIsValid) {
  const auto printed = test::RunCommand(TC_DAEMON_BIN " --sample-config");
  ASSERT_EQ(printed.exit_code, 0);
  EXPECT_EQ(test::ReadFile(TC_SOURCE_DIR "/packaging/tenantcached.toml"), printed.output)
      << "regenerate with: tenantcached --sample-config > packaging/tenantcached.toml";
  for (const auto& k : kConfigKeys) {
    const bool listed = printed.output.find(std::string("\n") + k.name + " = ") != std::string::npos ||
                        printed.output.find(std::string("\n#") + k.name + " = ") != std::string::npos;
    EXPECT_TRUE(listed) << k.name;
  }
  const Config c = LoadConfig(TC_SOURCE_DIR "/packaging/tenantcached.toml");
  EXPECT_EQ(c.cache_path, "/run/tenantcache/cache") << "the unit's PrivateDevices hides /dev/shm";
  EXPECT_EQ(c.control_socket, "/run/tenantcache/tenantcached.sock");
}

}  // namespace
}  // namespace tenantcache
