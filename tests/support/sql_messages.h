// The NOTIFY payloads of sql/install.sql ("1 k <seq> <namespace> <key>",
// "1 t <seq> <tenant id>", "1 f <seq>") taken apart, for tests that compare
// the messages a statement sent.
#ifndef TENANTCACHE_TESTS_SUPPORT_SQL_MESSAGES_H_
#define TENANTCACHE_TESTS_SUPPORT_SQL_MESSAGES_H_

#include <chrono>
#include <string>
#include <vector>

#include "support/pg_cluster.h"

namespace tenantcache::test {

using Messages = std::vector<std::string>;

// How long "nothing more arrives" is watched.
constexpr std::chrono::milliseconds kQuiet{300};

// One payload's fields; rest is "<namespace> <key>" or "<tenant id>".
struct Parsed {
  std::string version, kind, seq, rest;
};

Parsed Parse(const std::string& payload);

// Payloads with their sequence numbers dropped ("k user <key>", "t <id>",
// "f"), sorted, for exact comparison. Adds a test failure for a payload that
// is not format version 1 or whose sequence is neither "-" nor a number.
Messages Normalised(const Messages& in);

// Runs `sql` on `conn` and returns, normalised, what `listener` got for it:
// waits for `expected` messages, then watches a little longer (longer still
// when none are expected) to prove that nothing more arrives.
Messages SentBy(PgConn& conn, PgListener& listener, const std::string& sql, size_t expected);

// Collects the NOTICE and WARNING messages (with their HINTs) the server
// sends `conn` while it lives.
class Notices {
 public:
  explicit Notices(PgConn& conn);
  ~Notices();
  Notices(const Notices&) = delete;
  Notices& operator=(const Notices&) = delete;
  const std::string& all() const { return all_; }

 private:
  PgConn& conn_;
  std::string all_;
};

}  // namespace tenantcache::test

#endif  // TENANTCACHE_TESTS_SUPPORT_SQL_MESSAGES_H_
