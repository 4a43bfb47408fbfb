// libuv handle lifetime: a heap-allocated handle is freed only in its close
// callback (STYLE.md, libuv), never before.
#ifndef TENANTCACHE_DAEMON_UV_HANDLE_H_
#define TENANTCACHE_DAEMON_UV_HANDLE_H_

#include <uv.h>

namespace tenantcache {

template <typename Handle>
void CloseAndDelete(Handle* handle) {
  uv_close(reinterpret_cast<uv_handle_t*>(handle),
           [](uv_handle_t* h) { delete reinterpret_cast<Handle*>(h); });
}

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_UV_HANDLE_H_
