#include <stdio.h>
#include <string.h>
#include <tenantcache/tenantcache.h>

/* Prints user `id`'s tenant and role. Returns 0 when the cache answered
 * (found, or no such user), 1 when the caller must query PostgreSQL itself. */
static int print_role(const tc_cache* cache, tc_ns user, const char* id) {
  tc_value v; /* caller-owned; no allocation on the read path */
  switch (tc_cache_lookup(cache, user, id, strlen(id), 50, &v)) {
    case TC_FOUND: {
      const char* role = NULL; /* NULL text = SQL NULL */
      size_t role_len = 0, tenant_len = 0;
      const char* tenant = tc_value_tenant(&v, &tenant_len);
      tc_value_get(&v, "role", &role, &role_len);
      printf("tenant %.*s role %.*s\n", (int)tenant_len, tenant, (int)role_len, role ? role : "");
      return 0;
    }
    case TC_NOT_FOUND:     /* the database has no such row (a cached negative entry) */
    case TC_E_INVALID_KEY: /* a malformed key no row can have: reject the request */
      printf("no such user\n");
      return 0;
    default:    /* TC_E_UNAVAILABLE, TC_E_TIMEOUT, TC_E_BUSY, TC_E_DAEMON */
      return 1; /* the cache cannot answer: query PostgreSQL yourself */
  }
}

int main(int argc, char** argv) {
  const char* path = argc > 2 ? argv[2] : TC_DEFAULT_CACHE_PATH;
  tc_cache* cache;
  tc_ns user;
  int rc = tc_cache_open(path, &cache);
  if (rc != 0) { /* TC_E_IO (errno says why) or TC_E_LAYOUT */
    fprintf(stderr, "%s: %s\n", path, tc_strerror(rc));
    return 2;
  }
  if (argc < 2 || tc_namespace(cache, "user", &user) != 0) {
    tc_cache_close(cache);
    return 2;
  }
  rc = print_role(cache, user, argv[1]);
  tc_cache_close(cache);
  return rc;
}
