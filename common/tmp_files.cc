#include "common/tmp_files.h"

#include <limits.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <cstring>

namespace deltaserve::common {
namespace {

// A fixed table, so that the signal handler only reads memory that never moves or
// frees (async-signal-safe). A slot is free (0), being written or cleared (1), or
// holds a tracked path (2).
constexpr int kFree = 0, kBusy = 1, kTracked = 2;
constexpr int kSlots = 64;

struct Slot {
  std::atomic<int> state{kFree};
  char path[PATH_MAX];
};

Slot g_slots[kSlots];

void RemoveTrackedAndDie(int sig) {
  for (Slot& slot : g_slots) {
    // A slot cleared while we read it named a file already renamed or removed: the
    // unlink then fails with ENOENT, harmlessly.
    if (slot.state.load(std::memory_order_acquire) == kTracked) ::unlink(slot.path);
  }
  ::signal(sig, SIG_DFL);
  ::raise(sig);  // delivered when this handler returns: the default action, death
}

}  // namespace

void TrackTmpFile(const std::string& path) {
  if (path.size() >= PATH_MAX) return;
  for (Slot& slot : g_slots) {
    int expected = kFree;
    if (slot.state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
      std::memcpy(slot.path, path.c_str(), path.size() + 1);
      slot.state.store(kTracked, std::memory_order_release);
      return;
    }
  }
}

void UntrackTmpFile(const std::string& path) {
  for (Slot& slot : g_slots) {
    if (slot.state.load(std::memory_order_acquire) != kTracked) continue;
    if (std::strcmp(slot.path, path.c_str()) != 0) continue;
    int expected = kTracked;
    if (slot.state.compare_exchange_strong(expected, kBusy, std::memory_order_acquire)) {
      slot.path[0] = '\0';
      slot.state.store(kFree, std::memory_order_release);
      return;
    }
  }
}

void RemoveTmpFilesOnSignals() {
  struct sigaction sa {};
  sa.sa_handler = RemoveTrackedAndDie;
  sigemptyset(&sa.sa_mask);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) sigaddset(&sa.sa_mask, sig);
  for (int sig : {SIGINT, SIGTERM, SIGHUP}) {
    // A signal ignored by whoever started us (nohup, a background job of a script)
    // stays ignored.
    struct sigaction old {};
    if (::sigaction(sig, nullptr, &old) == 0 && old.sa_handler == SIG_IGN) continue;
    ::sigaction(sig, &sa, nullptr);
  }
  ::signal(SIGXFSZ, SIG_IGN);
}

}  // namespace deltaserve::common
