/* A C11 program that uses only the public header and the shared library:
 * proves the header is valid C and the export list carries the API.
 * Usage: c_abi_program CACHE_FILE USER_ID; prints the user's role and tenant. */
#include <stdio.h>
#include <string.h>

#include "tenantcache/tenantcache.h"

int main(int argc, char** argv) {
  tc_cache* cache = NULL;
  tc_ns user;
  tc_value value;
  const char* role = NULL;
  const char* tenant;
  size_t len = 0;
  int rc;

  if (argc != 3) {
    fprintf(stderr, "usage: %s CACHE_FILE USER_ID\n", argv[0]);
    return 2;
  }
  printf("libtenantcache %s, layout %u\n", tc_version(), (unsigned)tc_layout_version());
  rc = tc_cache_open(argv[1], &cache);
  if (rc != 0) {
    fprintf(stderr, "open: %s\n", tc_strerror(rc));
    return 1;
  }
  rc = tc_namespace(cache, "user", &user);
  if (rc != 0) {
    fprintf(stderr, "namespace: %s\n", tc_strerror(rc));
    tc_cache_close(cache);
    return 1;
  }
  rc = tc_cache_get(cache, user, argv[2], strlen(argv[2]), &value);
  if (rc != TC_FOUND) {
    printf("status: %s\n", tc_strerror(rc));
    tc_cache_close(cache);
    return 3;
  }
  tenant = tc_value_tenant(&value, &len);
  if (tc_value_get(&value, "role", &role, &len) != 0 || role == NULL) {
    tc_cache_close(cache);
    return 1;
  }
  printf("role=%s tenant=%s\n", role, tenant);
  tc_cache_close(cache);
  return 0;
}
