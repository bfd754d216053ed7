// A TCP forwarder for client tests: 127.0.0.1:<port()> to 127.0.0.1:`target_port`, with
// two faults. `delay`: each connection waits that long before it is forwarded (the
// client's TCP connect succeeds at once, the server's HTTP/2 SETTINGS come later, as
// from a loaded server). Freeze(): the connections open now stop passing bytes in both
// directions while staying open (a frozen server, or a partition that drops packets
// without a reset); connections made later are forwarded whole.
//
// Thread safety: Freeze() and frozen_bytes() may be called from any thread.
#ifndef DELTASERVE_TESTS_CLIENT_TCP_FORWARDER_H_
#define DELTASERVE_TESTS_CLIENT_TCP_FORWARDER_H_

#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdint>
#include <thread>
#include <vector>

#include "absl/base/thread_annotations.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"

namespace deltaserve::client::testing {

class TcpForwarder {
 public:
  explicit TcpForwarder(int target_port, absl::Duration delay = absl::ZeroDuration())
      : target_port_(target_port), delay_(delay) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in addr = Loopback(0);
    socklen_t len = sizeof(addr);
    if (::bind(listen_fd_, reinterpret_cast<sockaddr*>(&addr), len) == 0 &&
        ::listen(listen_fd_, 16) == 0 &&
        ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&addr), &len) == 0) {
      port_ = ntohs(addr.sin_port);
    }
    accepter_ = std::thread([this] { Accept(); });
  }
  ~TcpForwarder() {
    ::shutdown(listen_fd_, SHUT_RDWR);  // wakes accept()
    accepter_.join();
    ::close(listen_fd_);
    {
      absl::MutexLock lock(&mu_);
      stopping_ = true;  // releases the frozen pipes
    }
    for (int fd : fds_) ::shutdown(fd, SHUT_RDWR);
    for (std::thread& t : pipes_) t.join();
    for (int fd : fds_) ::close(fd);
  }
  TcpForwarder(const TcpForwarder&) = delete;
  TcpForwarder& operator=(const TcpForwarder&) = delete;

  // 0 if the listening socket could not be made.
  int port() const { return port_; }

  // Every connection accepted so far stops forwarding, until the forwarder is destroyed.
  void Freeze() {
    absl::MutexLock lock(&mu_);
    frozen_below_ = accepted_;
  }

  // Bytes that reached a frozen connection and were held back (either direction).
  uint64_t frozen_bytes() {
    absl::MutexLock lock(&mu_);
    return frozen_bytes_;
  }

 private:
  static sockaddr_in Loopback(int port) {
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    addr.sin_port = htons(static_cast<uint16_t>(port));
    return addr;
  }

  void Accept() {
    for (;;) {
      const int client = ::accept(listen_fd_, nullptr, nullptr);
      if (client < 0) return;
      absl::SleepFor(delay_);
      const int server = ::socket(AF_INET, SOCK_STREAM, 0);
      sockaddr_in addr = Loopback(target_port_);
      fds_.push_back(client);
      fds_.push_back(server);
      if (::connect(server, reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) continue;
      uint64_t id;
      {
        absl::MutexLock lock(&mu_);
        id = accepted_++;
      }
      pipes_.emplace_back([this, client, server, id] { Pipe(client, server, id); });
      pipes_.emplace_back([this, client, server, id] { Pipe(server, client, id); });
    }
  }

  void Pipe(int from, int to, uint64_t id) {
    char buf[65536];
    for (ssize_t n; (n = ::read(from, buf, sizeof(buf))) > 0;) {
      {
        absl::MutexLock lock(&mu_);
        if (id < frozen_below_) {
          // Hold the bytes and the connection until the forwarder goes.
          frozen_bytes_ += static_cast<uint64_t>(n);
          mu_.Await(absl::Condition(&stopping_));
          return;
        }
      }
      for (ssize_t off = 0; off < n;) {
        const ssize_t w = ::write(to, buf + off, static_cast<size_t>(n - off));
        if (w <= 0) return;
        off += w;
      }
    }
    ::shutdown(to, SHUT_WR);
  }

  const int target_port_;
  const absl::Duration delay_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::thread accepter_;
  std::vector<int> fds_;            // accepter_'s until it is joined
  std::vector<std::thread> pipes_;  // likewise
  absl::Mutex mu_;
  uint64_t accepted_ ABSL_GUARDED_BY(mu_) = 0;      // connections forwarded so far
  uint64_t frozen_below_ ABSL_GUARDED_BY(mu_) = 0;  // connections [0, this) are frozen
  uint64_t frozen_bytes_ ABSL_GUARDED_BY(mu_) = 0;
  bool stopping_ ABSL_GUARDED_BY(mu_) = false;
};

}  // namespace deltaserve::client::testing

#endif  // DELTASERVE_TESTS_CLIENT_TCP_FORWARDER_H_
