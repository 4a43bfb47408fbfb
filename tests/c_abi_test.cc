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

test::CommandResult RunProgram(const std::string& args) {
  return test::RunCommand(std::string(C_ABI_PROGRAM) + " " + args);
}

TEST(CAbi, CProgramReadsTheCacheThroughTheSharedLibrary) {
  test::TempDir dir;
  auto opts = test::FleetOptions(dir.File("cache"));
  auto w = test::OpenSynced(opts);
  const std::string id = test::Uuid(77), tenant = test::Uuid(7);
  ASSERT_EQ(
      w->Put(0, id, EntryData{tenant, {"ACME", "https://acme.example.com", "captain"}}, 0, w->BeginFill()),
      PutResult::kStored);
  auto r = RunProgram(opts.path + " " + id);
  EXPECT_EQ(r.exit_code, 0) << r.output;
  EXPECT_NE(r.output.find("role=captain tenant=" + tenant), std::string::npos) << r.output;
  EXPECT_NE(r.output.find("libtenantcache 0.1.0"), std::string::npos) << r.output;

  r = RunProgram(opts.path + " " + test::Uuid(78));
  EXPECT_EQ(r.exit_code, 3) << r.output;
  EXPECT_NE(r.output.find("not in the cache"), std::string::npos) << r.output;

  r = RunProgram(dir.File("absent") + " " + id);
  EXPECT_EQ(r.exit_code, 1) << r.output;
  EXPECT_NE(r.output.find("cannot open"), std::string::npos) << r.output;
}

}  // namespace
}  // namespace tenantcache
