#include "support/sql_messages.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>

namespace tenantcache::test {

Parsed Parse(const std::string& payload) {
  Parsed p;
  size_t pos = 0;
  auto field = [&](bool last) {
    if (last) return payload.substr(std::min(pos, payload.size()));
    const size_t sp = payload.find(' ', pos);
    std::string f = payload.substr(pos, sp == std::string::npos ? std::string::npos : sp - pos);
    pos = sp == std::string::npos ? payload.size() : sp + 1;
    return f;
  };
  p.version = field(false);
  p.kind = field(false);
  p.seq = p.kind == "f" ? field(true) : field(false);
  if (p.kind != "f") p.rest = field(true);
  return p;
}

Messages Normalised(const Messages& in) {
  Messages out;
  for (const auto& m : in) {
    const Parsed p = Parse(m);
    EXPECT_EQ(p.version, "1") << m;
    EXPECT_TRUE(p.seq == "-" || std::all_of(p.seq.begin(), p.seq.end(), ::isdigit)) << m;
    out.push_back(p.kind + (p.rest.empty() && p.kind == "f" ? "" : " " + p.rest));
  }
  std::sort(out.begin(), out.end());
  return out;
}

Messages SentBy(PgConn& conn, PgListener& listener, const std::string& sql, size_t expected) {
  using namespace std::chrono_literals;
  conn.Exec(sql);
  Messages got = listener.WaitFor(expected, 10s);
  Messages more = listener.Drain(expected == 0 ? kQuiet : 50ms);
  got.insert(got.end(), more.begin(), more.end());
  return Normalised(got);
}

Notices::Notices(PgConn& conn) : conn_(conn) {
  PQsetNoticeProcessor(
      conn_.get(), [](void* self, const char* m) { static_cast<Notices*>(self)->all_ += m; }, this);
}

Notices::~Notices() {
  PQsetNoticeProcessor(
      conn_.get(), [](void*, const char*) {}, nullptr);
}

}  // namespace tenantcache::test
