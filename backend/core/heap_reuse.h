// The C heap of a process that computes on the CPU: freed memory kept for the next step instead of being
// handed back to the kernel.
//
// glibc serves each allocation above a threshold (128 KiB at first, raised as it goes to at most 32 MiB) with
// a mapping of its own and unmaps it on free, and trims the top of the heap as soon as 128 KiB there are
// free. A training or sampling step allocates and frees hundreds of activation and gradient tensors of that
// size, so every step maps fresh pages and pays a page fault, and the kernel's zeroing, for each 4 KiB of
// them on first touch: a quarter to a third of a CPU training step of the tiny preset (docs/BENCHMARKS.md
// "The CPU heap"). keep_freed_heap_memory() has glibc serve allocations up to 1 GiB from the heap and trim it
// only past 2 GiB free, so a step reuses the pages the previous one freed; the process then keeps its peak
// working set mapped until it exits.
#pragma once

namespace mugv {

// Process-wide and idempotent. Returns whether the setting is in force: false where the C library offers no
// such control (not glibc, or a sanitizer's allocator) or MUGV_KEEP_FREED_HEAP=0 is set (the allocator's
// defaults, for a comparison), and nothing changes then.
bool keep_freed_heap_memory();

}  // namespace mugv
