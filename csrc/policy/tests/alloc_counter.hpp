// Heap-allocation counting for the policy library's test tools (policy_check.cpp, rt_ablation.cpp).
//
// Include from exactly one translation unit of an executable: it defines (interposes) malloc, calloc,
// realloc, posix_memalign, aligned_alloc, memalign, valloc and every operator new/delete, forwarding to
// glibc's __libc_* entry points. An allocation is counted while the calling thread's flag is set
// (AllocationCount), so allocations of other threads (libtorch's intra-op workers) are not counted.
#pragma once

#include <atomic>
#include <cerrno>
#include <cstddef>
#include <cstdlib>
#include <new>

extern "C" {
void* __libc_malloc(std::size_t);
void* __libc_calloc(std::size_t, std::size_t);
void* __libc_realloc(void*, std::size_t);
void* __libc_memalign(std::size_t, std::size_t);
void __libc_free(void*);
}

namespace alloc_counter {
inline std::atomic<long> g_allocations{0};
inline thread_local bool t_counting = false;
inline void count() noexcept {
  if (t_counting) g_allocations.fetch_add(1, std::memory_order_relaxed);
}
inline void* counted_new(std::size_t n, std::size_t align) {
  count();
  void* p = align > alignof(std::max_align_t) ? __libc_memalign(align, n ? n : 1) : __libc_malloc(n ? n : 1);
  if (!p) throw std::bad_alloc();
  return p;
}

// Counts the calling thread's heap allocations from construction to stop() (or destruction).
class AllocationCount {
 public:
  AllocationCount() noexcept {
    g_allocations = 0;
    t_counting = true;
  }
  ~AllocationCount() { t_counting = false; }
  AllocationCount(const AllocationCount&) = delete;
  AllocationCount& operator=(const AllocationCount&) = delete;
  long stop() noexcept {
    t_counting = false;
    return g_allocations.load();
  }
};
}  // namespace alloc_counter

extern "C" {
void* malloc(std::size_t n) { alloc_counter::count(); return __libc_malloc(n); }
void* calloc(std::size_t a, std::size_t b) { alloc_counter::count(); return __libc_calloc(a, b); }
void* realloc(void* p, std::size_t n) { alloc_counter::count(); return __libc_realloc(p, n); }
void free(void* p) { __libc_free(p); }
int posix_memalign(void** out, std::size_t align, std::size_t n) {
  alloc_counter::count();
  *out = __libc_memalign(align, n);
  return *out ? 0 : ENOMEM;
}
void* aligned_alloc(std::size_t align, std::size_t n) { alloc_counter::count(); return __libc_memalign(align, n); }
void* memalign(std::size_t align, std::size_t n) { alloc_counter::count(); return __libc_memalign(align, n); }
void* valloc(std::size_t n) { alloc_counter::count(); return __libc_memalign(4096, n); }
}

void* operator new(std::size_t n) { return alloc_counter::counted_new(n, 0); }
void* operator new[](std::size_t n) { return alloc_counter::counted_new(n, 0); }
void* operator new(std::size_t n, std::align_val_t a) {
  return alloc_counter::counted_new(n, static_cast<std::size_t>(a));
}
void* operator new[](std::size_t n, std::align_val_t a) {
  return alloc_counter::counted_new(n, static_cast<std::size_t>(a));
}
void* operator new(std::size_t n, const std::nothrow_t&) noexcept {
  alloc_counter::count();
  return __libc_malloc(n ? n : 1);
}
void* operator new[](std::size_t n, const std::nothrow_t&) noexcept {
  alloc_counter::count();
  return __libc_malloc(n ? n : 1);
}
void operator delete(void* p) noexcept { __libc_free(p); }
void operator delete[](void* p) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::align_val_t) noexcept { __libc_free(p); }
void operator delete(void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
void operator delete[](void* p, std::size_t, std::align_val_t) noexcept { __libc_free(p); }
