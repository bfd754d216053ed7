#include "server/internal/listener.h"

#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/address.h"
#include "server/internal/log.h"

namespace deltaserve::server::internal {
namespace {

constexpr int kFirstBackoffMs = 10;
constexpr int kMaxBackoffMs = 250;

int OpenSpare() { return open("/dev/null", O_RDONLY | O_CLOEXEC); }

bool OutOfDescriptors(int err) {
  return err == EMFILE || err == ENFILE || err == ENOBUFS || err == ENOMEM;
}

}  // namespace

bool IsTcpListenAddress(const std::string& listen) {
  return common::ParseHostPort(listen).ok();
}

absl::StatusOr<std::unique_ptr<Listener>> Listener::Bind(const std::string& listen,
                                                         const std::string& flag) {
  absl::StatusOr<common::HostPort> parsed = common::ParseHostPort(listen);
  if (!parsed.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(flag, ": ", parsed.status().message()));
  }
  const std::string& host = parsed->host;
  const std::string port = std::to_string(parsed->port);
  addrinfo hints{};
  hints.ai_family = AF_UNSPEC;
  hints.ai_socktype = SOCK_STREAM;
  hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
  addrinfo* found = nullptr;
  if (int rc = getaddrinfo(host.empty() ? nullptr : host.c_str(), port.c_str(), &hints, &found);
      rc != 0) {
    // Worded as the busy-port error below, so that callers (metrics_http.cc) and
    // deltaserved's variable hint (set DELTASERVE_...) treat both alike.
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen,
                                               ": host not found? (set ", flag, ") [",
                                               gai_strerror(rc), "]"));
  }
  std::unique_ptr<Listener> l(new Listener());
  std::string first_error;
  int bound_port = 0;
  for (addrinfo* a = found; a != nullptr; a = a->ai_next) {
    sockaddr_storage addr{};
    std::memcpy(&addr, a->ai_addr, a->ai_addrlen);
    if (bound_port != 0) {  // port 0: every address of the host gets the first one's port
      if (addr.ss_family == AF_INET) {
        reinterpret_cast<sockaddr_in*>(&addr)->sin_port = htons(bound_port);
      } else if (addr.ss_family == AF_INET6) {
        reinterpret_cast<sockaddr_in6*>(&addr)->sin6_port = htons(bound_port);
      }
    }
    const int fd = socket(a->ai_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0) continue;
    const int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (bind(fd, reinterpret_cast<sockaddr*>(&addr), a->ai_addrlen) != 0 ||
        ::listen(fd, SOMAXCONN) != 0) {
      // A host with IPv4 and IPv6 addresses where one family is unusable: the others
      // still serve. A busy port fails on the first address.
      if (first_error.empty()) first_error = std::strerror(errno);
      close(fd);
      if (l->listen_fds_.empty()) break;
      continue;
    }
    sockaddr_storage got{};
    socklen_t len = sizeof(got);
    getsockname(fd, reinterpret_cast<sockaddr*>(&got), &len);
    bound_port = ntohs(got.ss_family == AF_INET6
                           ? reinterpret_cast<sockaddr_in6*>(&got)->sin6_port
                           : reinterpret_cast<sockaddr_in*>(&got)->sin_port);
    l->listen_fds_.push_back(fd);
  }
  freeaddrinfo(found);
  if (l->listen_fds_.empty()) {
    return absl::UnavailableError(absl::StrCat("cannot listen on ", listen,
                                               ": address already in use? (set ", flag,
                                               ") [", first_error, "]"));
  }
  l->port_ = bound_port;
  if (pipe2(l->wake_, O_CLOEXEC | O_NONBLOCK) != 0) {
    return absl::UnavailableError(absl::StrCat("listener: pipe2: ", std::strerror(errno)));
  }
  l->spare_fd_ = OpenSpare();
  return l;
}

Listener::~Listener() {
  Stop();
  for (int fd : wake_) {
    if (fd >= 0) close(fd);
  }
  if (spare_fd_ >= 0) close(spare_fd_);
}

void Listener::Start(grpc::experimental::ExternalConnectionAcceptor* acceptor,
                     int max_connections, Counters counters) {
  acceptor_ = acceptor;
  max_connections_ = max_connections;
  counters_ = counters;
  thread_ = std::thread([this] { Loop(); });
}

void Listener::Stop() {
  if (stopped_.exchange(true)) return;
  if (thread_.joinable()) {
    (void)!write(wake_[1], "x", 1);
    thread_.join();
  }
  for (int fd : listen_fds_) close(fd);
  listen_fds_.clear();
}

int Listener::Sweep() {
  absl::MutexLock lock(&mu_);
  tracked_.erase(std::remove_if(tracked_.begin(), tracked_.end(),
                                [](const Tracked& t) {
                                  struct stat st {};
                                  return fstat(t.fd, &st) != 0 || st.st_ino != t.inode;
                                }),
                 tracked_.end());
  const int n = static_cast<int>(tracked_.size());
  if (counters_.open) counters_.open->Set(n);
  return n;
}

void Listener::Track(int fd) {
  struct stat st {};
  fstat(fd, &st);
  absl::MutexLock lock(&mu_);
  tracked_.push_back({fd, st.st_ino});
  if (counters_.open) counters_.open->Set(static_cast<double>(tracked_.size()));
}

void Listener::Loop() {
  std::vector<pollfd> fds;
  fds.push_back({wake_[0], POLLIN, 0});
  for (int fd : listen_fds_) fds.push_back({fd, POLLIN, 0});
  while (!stopped_.load()) {
    // During a backoff only the wake-up pipe is watched.
    const nfds_t n = backoff_ms_ > 0 ? 1 : fds.size();
    const int ready = poll(fds.data(), n, backoff_ms_ > 0 ? backoff_ms_ : -1);
    if (ready < 0 && errno != EINTR) {
      // E.g. ENOMEM: transient like the rest; never leave the port unserved.
      LogError("listener: poll failed; retrying", {{"error", std::strerror(errno)}});
      backoff_ms_ = kMaxBackoffMs;
      continue;
    }
    if (fds[0].revents != 0 || stopped_.load()) return;
    int next_backoff = 0;
    for (size_t i = 1; i < fds.size(); ++i) {
      if (backoff_ms_ > 0 || (fds[i].revents & POLLIN) != 0) {
        next_backoff = std::max(next_backoff, AcceptAll(fds[i].fd));
      }
    }
    if (next_backoff == 0 && backoff_ms_ > 0) {
      LogInfo("listener: accepting again", {{"backoff_ms", std::to_string(backoff_ms_)}});
    }
    backoff_ms_ = next_backoff;
  }
}

int Listener::AcceptAll(int listen_fd) {
  for (;;) {
    const int fd = accept4(listen_fd, nullptr, nullptr, SOCK_NONBLOCK | SOCK_CLOEXEC);
    if (fd < 0) {
      const int err = errno;
      if (err == EAGAIN || err == EWOULDBLOCK) return 0;
      if (err == EINTR || err == ECONNABORTED || err == EPROTO) continue;
      if (OutOfDescriptors(err)) {
        if (backoff_ms_ == 0) {
          LogWarn("listener: out of file descriptors; refusing connections until some "
                  "are free", {{"error", std::strerror(err)}});
        }
        // Let the client that waits know at once: accept it into the spare's slot and
        // close it.
        if (spare_fd_ >= 0) {
          close(spare_fd_);
          const int victim = accept4(listen_fd, nullptr, nullptr, SOCK_CLOEXEC);
          if (victim >= 0) {
            close(victim);
            if (counters_.refused_no_fds) counters_.refused_no_fds->Increment();
          }
          spare_fd_ = OpenSpare();
        }
      } else {
        LogError("listener: accept failed; retrying", {{"error", std::strerror(err)}});
      }
      return backoff_ms_ == 0 ? kFirstBackoffMs : std::min(2 * backoff_ms_, kMaxBackoffMs);
    }
    if (spare_fd_ < 0) spare_fd_ = OpenSpare();
    bool full;
    {
      absl::MutexLock lock(&mu_);
      full = static_cast<int>(tracked_.size()) >= max_connections_;
    }
    if (full && Sweep() >= max_connections_) {
      close(fd);
      if (counters_.refused_limit) counters_.refused_limit->Increment();
      continue;
    }
    const int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    Track(fd);
    grpc::experimental::ExternalConnectionAcceptor::NewConnectionParameters p;
    p.listener_fd = listen_fd;
    p.fd = fd;
    acceptor_->HandleNewConnection(&p);
  }
}

}  // namespace deltaserve::server::internal
