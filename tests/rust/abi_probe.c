/* Prints what tenantcache.h says about the ABI, one "NAME VALUE" per line, for
 * the Rust crate's test that compares it with client/rust/src/sys.rs (run by
 * tests/rust_test.cc). Every name printed here must be mirrored there, and
 * the other way round: the test fails on any difference. */
#include <stddef.h>
#include <stdio.h>

#include "tenantcache/tenantcache.h"

#define CONST(c) printf("%s %lld\n", #c, (long long)(c))
#define SIZE(t) printf("sizeof(%s) %zu\nalignof(%s) %zu\n", #t, sizeof(t), #t, _Alignof(t))
#define OFFSET(t, f) printf("offsetof(%s,%s) %zu\n", #t, #f, offsetof(t, f))

int main(void) {
  CONST(TC_FOUND);
  CONST(TC_NOT_FOUND);
  CONST(TC_MISS);
  CONST(TC_E_UNAVAILABLE);
  CONST(TC_E_INVALID_KEY);
  CONST(TC_E_NO_NAMESPACE);
  CONST(TC_E_LAYOUT);
  CONST(TC_E_IO);
  CONST(TC_E_INVALID_ARG);
  CONST(TC_E_NO_FIELD);
  CONST(TC_E_NOMEM);
  CONST(TC_E_BUSY);
  CONST(TC_E_TIMEOUT);
  CONST(TC_E_DAEMON);
  CONST(TC_KEY_UUID);
  CONST(TC_KEY_SLUG);
  CONST(TC_KEY_HOST);
  CONST(TC_KEY_TEXT);
  CONST(TC_MAX_KEY_LEN);
  printf("sizeof(tc_ns) %zu\n", sizeof(tc_ns));
  SIZE(tc_value);
  OFFSET(tc_value, priv_ns);
  OFFSET(tc_value, priv_len);
  OFFSET(tc_value, priv_status);
  OFFSET(tc_value, priv_reserved);
  OFFSET(tc_value, priv_data);
  SIZE(tc_info);
  OFFSET(tc_info, daemon_pid);
  OFFSET(tc_info, synced);
  OFFSET(tc_info, retired);
  OFFSET(tc_info, available);
  OFFSET(tc_info, epoch);
  OFFSET(tc_info, heartbeat_age_ns);
  OFFSET(tc_info, stale_after_ns);
  OFFSET(tc_info, idle_timeout_ns);
  OFFSET(tc_info, entries);
  OFFSET(tc_info, slots);
  OFFSET(tc_info, capacity);
  OFFSET(tc_info, file_bytes);
  OFFSET(tc_info, slot_bytes);
  OFFSET(tc_info, layout_version);
  OFFSET(tc_info, daemon_start_unix_ns);
  OFFSET(tc_info, control_socket);
  SIZE(tc_stats);
  OFFSET(tc_stats, hits);
  OFFSET(tc_stats, negative_hits);
  OFFSET(tc_stats, misses);
  OFFSET(tc_stats, unavailable);
  return 0;
}
