// The heap policy of a process whose job is one big pull (deltactl pull).
//
// Measured (tests/bench/pull_streams_bench.sh, a cached 1 GB pull over loopback, 2 cores):
// with glibc's default policy deltactl takes 30,000-112,000 minor page faults per pull, a
// different number every time, most of them inside recvmsg (perf: do_anonymous_page
// under _copy_to_iter). gRPC reads the socket into freshly malloc'd buffers of up to 4 MiB
// and frees them once a message is parsed; glibc hands the freed top of an arena back to
// the kernel (trim threshold: twice the dynamic mmap threshold, a few MiB) and the next
// read faults the same memory in again, zero-filled. How much is trimmed depends on how
// many buffers happen to be live when one is freed, so the count varies from pull to
// pull. Keeping freed memory (below): 6,000-42,000 faults per pull, and about 0.2 CPU-s
// per GB less client time. (The pull's largest swings, 2-3 s of system time per GB, come
// from elsewhere: on this VM, the first touch of a page the guest has not used for a
// while costs 3-6x a recycled one, and the output file's pages are such pages when the
// pull needs memory beyond what was freed just before.)
#ifndef DELTASERVE_CLIENT_INTERNAL_PULL_MEMORY_H_
#define DELTASERVE_CLIENT_INTERNAL_PULL_MEMORY_H_

#include <cstddef>

namespace deltaserve::client {

// Freed heap memory stays with the process: allocations below kPullMmapThresholdBytes
// come from the heap rather than their own mappings, and glibc trims an arena only when
// more than kPullTrimThresholdBytes are free at its top. Process-wide and permanent
// (mallopt M_MMAP_THRESHOLD, M_TRIM_THRESHOLD; glibc's dynamic thresholds are off
// afterwards): for a command-line process that pulls and exits, not for a library
// caller's long-lived process, whose RSS it would keep at its peak. Returns false if
// glibc refused a setting (nothing else changes). Thread-safe (mallopt locks).
inline constexpr size_t kPullMmapThresholdBytes = size_t{32} << 20;  // glibc's maximum
inline constexpr size_t kPullTrimThresholdBytes = size_t{1} << 30;
bool KeepFreedMemoryForPull();

}  // namespace deltaserve::client

#endif  // DELTASERVE_CLIENT_INTERNAL_PULL_MEMORY_H_
