/* Links against the installed libtenantcache and reports what it can. */
#include <stdio.h>
#include <tenantcache/tenantcache.h>

int main(int argc, char** argv) {
  tc_cache* cache = NULL;
  int rc;
  printf("libtenantcache %s, layout %u\n", tc_version(), (unsigned)tc_layout_version());
  if (argc < 2) return 0;
  rc = tc_cache_open(argv[1], &cache);
  printf("open %s: %s\n", argv[1], tc_strerror(rc));
  tc_cache_close(cache);
  return 0;
}
