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

// A timer whose callbacks find `data` in its data field; CloseTimer stops it,
// clears the field and frees it through uv_close, and leaves nullptr behind.
inline uv_timer_t* NewTimer(uv_loop_t* loop, void* data) {
  auto* t = new uv_timer_t;
  uv_timer_init(loop, t);
  t->data = data;
  return t;
}

inline void CloseTimer(uv_timer_t*& timer) {
  if (timer == nullptr) return;
  uv_timer_stop(timer);
  timer->data = nullptr;
  CloseAndDelete(timer);
  timer = nullptr;
}

}  // namespace tenantcache

#endif  // TENANTCACHE_DAEMON_UV_HANDLE_H_
