// core/heap_reuse.h against glibc itself: a large allocation comes from the heap, not a mapping of its own.
#include "core/heap_reuse.h"

#include <catch2/catch.hpp>

#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

using namespace mugv;

TEST_CASE("keep_freed_heap_memory serves large allocations from the heap", "[unit][core]") {
#if defined(__GLIBC__) && !defined(__SANITIZE_ADDRESS__)
  // Through a volatile pointer, so the compiler cannot drop the allocation it sees unused.
  void* (*volatile allocate)(size_t) = std::malloc;
  const size_t size = size_t(64) << 20;  // above glibc's largest adaptive mapping threshold (32 MiB)
  auto mapped_blocks = [] { return mallinfo2().hblks; };

  {
    // The allocator's defaults first (nothing else in this process changes them): such a block is a mapping
    // of its own.
    const auto before = mapped_blocks();
    void* block = allocate(size);
    REQUIRE(block);
    CHECK(mapped_blocks() == before + 1);
    std::free(block);
  }
  REQUIRE(keep_freed_heap_memory());
  REQUIRE(keep_freed_heap_memory());  // idempotent
  const auto before = mapped_blocks();
  void* block = allocate(size);
  REQUIRE(block);
  std::memset(block, 1, 4096);
  CHECK(mapped_blocks() == before);  // served from the heap
  std::free(block);
  void* again = allocate(size);
  CHECK(mapped_blocks() == before);
  std::free(again);
#else
  CHECK_FALSE(keep_freed_heap_memory());  // no control over this allocator: nothing changes
#endif
}
