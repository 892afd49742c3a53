#include "core/heap_reuse.h"

#include <climits>
#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

namespace mugv {

bool keep_freed_heap_memory() {
  const char* env = std::getenv("MUGV_KEEP_FREED_HEAP");
  if (env && std::strcmp(env, "0") == 0) return false;
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  // The mapping threshold first: setting the trim threshold alone freezes the mapping threshold at 128 KiB,
  // which would map nearly every tensor afresh.
  return mallopt(M_MMAP_THRESHOLD, 1 << 30) == 1 && mallopt(M_TRIM_THRESHOLD, INT_MAX) == 1;
#else
  return false;
#endif
}

}  // namespace mugv
