// Runs the C program (tests/c_abi_program.c, compiled as C11 and linked
// against the shared library only) against a cache this test writes.
#include <gtest/gtest.h>
#include <sys/wait.h>

#include <array>
#include <cstdio>
#include <string>

#include "support/test_cache.h"

namespace tenantcache {
namespace {

struct ProgramRun {
  int exit_code;
  std::string out;
};

ProgramRun RunProgram(const std::string& args) {
  const std::string cmd = std::string(C_ABI_PROGRAM) + " " + args + " 2>&1";
  FILE* p = popen(cmd.c_str(), "r");
  ProgramRun r{-1, ""};
  if (p == nullptr) return r;
  std::array<char, 256> buf;
  while (fgets(buf.data(), buf.size(), p) != nullptr) r.out += buf.data();
  const int status = pclose(p);
  r.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return r;
}

TEST(CAbi, CProgramReadsTheCacheThroughTheSharedLibrary) {
  test::TempDir dir;
  auto opts = test::FleetOptions(dir.File("cache"));
  auto w = test::OpenSynced(opts);
  const std::string id = test::Uuid(77), tenant = test::Uuid(7);
  ASSERT_EQ(
      w->Put(0, id, EntryData{tenant, {"ACME", "https://acme.example.com", "captain"}}, 0, w->BeginFill()),
      PutResult::kStored);
  ProgramRun r = RunProgram(opts.path + " " + id);
  EXPECT_EQ(r.exit_code, 0) << r.out;
  EXPECT_NE(r.out.find("role=captain tenant=" + tenant), std::string::npos) << r.out;
  EXPECT_NE(r.out.find("libtenantcache 0.1.0"), std::string::npos) << r.out;

  r = RunProgram(opts.path + " " + test::Uuid(78));
  EXPECT_EQ(r.exit_code, 3) << r.out;
  EXPECT_NE(r.out.find("not in the cache"), std::string::npos) << r.out;

  r = RunProgram(dir.File("absent") + " " + id);
  EXPECT_EQ(r.exit_code, 1) << r.out;
  EXPECT_NE(r.out.find("cannot open"), std::string::npos) << r.out;
}

}  // namespace
}  // namespace tenantcache
