#include "query_check.h"

#include <algorithm>
#include <utility>

#include "cache_layout.h"
#include "daemon.h"
#include "keys.h"
#include "uv_handle.h"

namespace tenantcache {
namespace {

std::string Where(const NamespaceConfig& ns) { return ns.query_location + ": namespace " + ns.name + ": "; }

std::string Trimmed(std::string s) {
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  return s;
}

// What the results of PrepareAndDescribe say about `ns`'s query. A failed
// prepare aborts the pipeline, so the first failure is the one to report.
StatementCheck Classify(const NamespaceConfig& ns, const std::vector<PgResult>& results,
                        const std::string& error) {
  if (!error.empty()) return {StatementCheck::kConnectionFailed, Trimmed(error)};
  for (const auto& r : results) {
    if (PQresultStatus(r.get()) == PGRES_COMMAND_OK) continue;
    const std::string message = Trimmed(PQresultErrorMessage(r.get()));
    if (StatementNotKept(r.get())) return {StatementCheck::kNotKept, message};
    return {StatementCheck::kBroken, PrepareError(ns, message)};
  }
  if (results.size() != 2)
    return {StatementCheck::kConnectionFailed, "the server answered the prepare and describe with " +
                                                   std::to_string(results.size()) + " results instead of 2"};
  std::string shape = QueryShapeError(ns, results[1].get());
  if (shape.empty()) return {StatementCheck::kSound, ""};
  return {StatementCheck::kBroken, std::move(shape)};
}

// The built-in types PostgreSQL may infer for $1 that can never parse a key
// of kind uuid, slug or host (names, never numbers, dates or booleans; a
// uuid parses only a uuid key). Kind text accepts every type: a text key may
// well be a number. Types outside this list (text, varchar, citext, domains)
// are left to the database: a key it cannot parse is a fill error that
// reaches the log and the client.
const char* NeverParsesKey(Oid type, uint32_t kind) {
  if (kind == layout::kText) return nullptr;
  struct Known {
    Oid oid;
    const char* name;
  };
  static constexpr Known kNotText[] = {
      {16, "boolean"},    {20, "bigint"}, {21, "smallint"},          {23, "integer"},
      {26, "oid"},        {700, "real"},  {701, "double precision"}, {1700, "numeric"},
      {1082, "date"},     {1083, "time"}, {1114, "timestamp"},       {1184, "timestamptz"},
      {1186, "interval"}, {114, "json"},  {3802, "jsonb"},
  };
  for (const auto& k : kNotText)
    if (k.oid == type) return k.name;
  if (type == 2950 && kind != layout::kUuid) return "uuid";
  return nullptr;
}

}  // namespace

std::string QueryShapeError(const NamespaceConfig& ns, const PGresult* d) {
  // Keys are sent as one text parameter, which the type PostgreSQL inferred
  // for $1 parses; a query taking more parameters could never be executed.
  if (PQnparams(d) != 1)
    return Where(ns) + "the query takes " + std::to_string(PQnparams(d)) +
           " parameters; it must take exactly one, $1 (the key)";
  if (const char* type = NeverParsesKey(PQparamtype(d, 0), ns.key_kind))
    return Where(ns) + "the query compares $1 as " + type + ", but keys of kind " + KeyKindName(ns.key_kind) +
           " are text that never parses as " + type + " (compare $1 with a text column, or fix kind)";
  std::vector<std::string> columns;
  columns.reserve(static_cast<size_t>(PQnfields(d)));
  for (int i = 0; i < PQnfields(d); ++i) columns.emplace_back(PQfname(d, i));
  // The fill reads columns by exact name (daemon/loader.cc): compare exactly.
  std::vector<std::string> wanted{ns.tenant_column};
  wanted.insert(wanted.end(), ns.fields.begin(), ns.fields.end());
  std::string missing;
  size_t count = 0;
  for (const auto& w : wanted) {
    if (std::find(columns.begin(), columns.end(), w) != columns.end()) continue;
    missing +=
        (missing.empty() ? "\"" : ", \"") + w + "\"" + (w == ns.tenant_column ? " (tenant_column)" : "");
    ++count;
  }
  if (count == 0) return "";
  std::string returns;
  for (const auto& c : columns) returns += (returns.empty() ? "" : ", ") + c;
  if (returns.empty()) returns = "no columns";
  return Where(ns) + "the query returns no column" + (count > 1 ? "s " : " ") + missing +
         " (it returns: " + returns + ")";
}

bool StatementNotKept(const PGresult* r) {
  const char* state = r != nullptr ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
  if (state == nullptr) return false;
  const std::string_view s(state);
  return s == "26000" || s == "42P05";  // invalid_sql_statement_name, duplicate_prepared_statement
}

const char* const kStatementNotKeptHint =
    "the connection does not keep prepared statements between transactions (a transaction-pooling "
    "PgBouncer before 1.21?)";

std::string PrepareError(const NamespaceConfig& ns, const std::string& message) {
  return Where(ns) + "the query cannot be prepared: " + Trimmed(message);
}

void CheckStatement(PgConn* pg, const std::string& stmt, const NamespaceConfig& ns,
                    StatementCheckCallback done) {
  pg->PrepareAndDescribe(
      stmt, ns.query,
      [ns, done = std::move(done)](const std::vector<PgResult>& results, const std::string& error) {
        done(Classify(ns, results, error));
      });
}

QueryCheck::QueryCheck(uv_loop_t* loop, const Config& config, std::vector<NamespaceConfig> namespaces,
                       Millis timeout, DoneCallback done)
    : loop_(loop),
      sources_(config.sources),
      namespaces_(std::move(namespaces)),
      timeout_(timeout),
      done_(std::move(done)) {}

QueryCheck::~QueryCheck() {
  pg_.reset();
  CloseTimer(timer_);
}

void QueryCheck::Start() {
  timer_ = NewTimer(loop_, this);
  // Deferred, so that `done` never runs inside Start.
  uv_timer_start(
      timer_, [](uv_timer_t* t) { static_cast<QueryCheck*>(t->data)->NextSource(); }, 0, 0);
}

// Runs from the timer only: the previous source's connection may be
// destroyed here, outside its callbacks.
void QueryCheck::NextSource() {
  pg_.reset();
  current_.clear();
  while (source_ < sources_.size() && current_.empty()) {
    for (const auto& ns : namespaces_)
      if (ns.source_index == source_) current_.push_back(&ns);
    ++source_;
  }
  if (current_.empty()) {
    Finish();
    return;
  }
  const SourceConfig& s = sources_[source_ - 1];
  finished_ = false;
  pg_ = std::make_unique<PgConn>(loop_, "query check " + s.name);
  pg_->set_on_state([this](const std::string& error) {
    if (!error.empty()) {
      SourceDone("cannot connect: " + error);
      return;
    }
    CheckNext(0);
  });
  uv_timer_start(
      timer_,
      [](uv_timer_t* t) {
        auto* self = static_cast<QueryCheck*>(t->data);
        self->SourceDone("no answer within " + std::to_string(self->timeout_.count()) + " ms");
      },
      static_cast<uint64_t>(timeout_.count()), 0);
  pg_->Connect(s.conninfo);
}

void QueryCheck::CheckNext(size_t k) {
  if (finished_) return;
  if (k == current_.size()) {
    SourceDone("");
    return;
  }
  // The unnamed statement: nothing is left on the server connection, which
  // behind a transaction pooler other clients get next.
  CheckStatement(pg_.get(), "", *current_[k], [this, k](const StatementCheck& check) {
    if (finished_) return;
    switch (check.kind) {
      case StatementCheck::kSound:
        break;
      case StatementCheck::kBroken:
        outcome_.problems.push_back(check.message);
        break;
      case StatementCheck::kNotKept:
        SourceDone(std::string("cannot check the queries: ") + kStatementNotKeptHint + ": " + check.message);
        return;
      case StatementCheck::kConnectionFailed:
        SourceDone("connection lost: " + check.message);
        return;
    }
    CheckNext(k + 1);
  });
}

// May run inside a libpq callback: the connection is dropped by NextSource,
// from the timer.
void QueryCheck::SourceDone(const std::string& unreachable) {
  if (finished_) return;
  finished_ = true;
  if (!unreachable.empty())
    outcome_.unreachable.push_back("source " + sources_[source_ - 1].name + ": " + unreachable);
  uv_timer_start(
      timer_, [](uv_timer_t* t) { static_cast<QueryCheck*>(t->data)->NextSource(); }, 0, 0);
}

void QueryCheck::Finish() {
  uv_timer_stop(timer_);
  // `done` may destroy this object: nothing of it is touched afterwards.
  auto done = std::move(done_);
  const Outcome outcome = outcome_;
  done(outcome);
}

QueryCheck::Outcome CheckQueriesNow(const Config& config, Millis timeout) {
  uv_loop_t loop;
  uv_loop_init(&loop);
  QueryCheck::Outcome outcome;
  {
    QueryCheck check(&loop, config, config.namespaces, timeout,
                     [&outcome](const QueryCheck::Outcome& o) { outcome = o; });
    check.Start();
    uv_run(&loop, UV_RUN_DEFAULT);
  }
  uv_run(&loop, UV_RUN_DEFAULT);  // the close callbacks of its handles
  uv_loop_close(&loop);
  return outcome;
}

}  // namespace tenantcache
