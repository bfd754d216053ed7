#include "common/address.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "tests/testing/status_matchers.h"

namespace deltaserve::common {
namespace {

using ::deltaserve::testing::IsOk;
using ::deltaserve::testing::StatusIs;
using ::testing::HasSubstr;

TEST(AddressTest, ParseHostPortSplitsNamesIpv4AndBracketedIpv6) {
  absl::StatusOr<HostPort> hp = ParseHostPort("example.com:50051");
  ASSERT_THAT(hp.status(), IsOk());
  EXPECT_EQ(hp->host, "example.com");
  EXPECT_EQ(hp->port, 50051);
  hp = ParseHostPort("[::1]:0");
  ASSERT_THAT(hp.status(), IsOk());
  EXPECT_EQ(hp->host, "::1");
  EXPECT_EQ(hp->port, 0);
  hp = ParseHostPort(":9464");  // every interface
  ASSERT_THAT(hp.status(), IsOk());
  EXPECT_EQ(hp->host, "");
  EXPECT_EQ(hp->port, 9464);
}

// New-user trial: `--listen notaport` was handed to gRPC, whose failure was reported as
// "address already in use?". Each malformed form now says what is wrong.
TEST(AddressTest, MalformedListenAddressesSayWhatIsWrong) {
  const std::pair<const char*, const char*> cases[] = {
      {"notaport", "no port (want host:port, [v6]:port, unix:PATH), got 'notaport'"},
      {"host:", "port '' is not a number in [0, 65535]"},
      {"host:99999", "port '99999' is not a number in [0, 65535]"},
      {"host:-1", "port '-1' is not a number"},
      {"host:12ab", "port '12ab' is not a number"},
      {"::1:50051", "an IPv6 address needs brackets, e.g. [::1]:50051"},
      {"[::1", "']' missing"},
      {"[::1]", "no port"},
      {"unix:", "no socket path"},
      // New-user trial: "[zz]:1" reached getaddrinfo as the host name "zz" and failed at
      // bind time ("Name or service not known"), naming neither flag nor variable.
      {"[zz]:1",
       "'zz' between the brackets is not an IPv6 address (want host:port, "
       "[v6]:port, unix:PATH), got '[zz]:1'"},
      {"[]:1", "'' between the brackets is not an IPv6 address"},
      {"[127.0.0.1]:1", "'127.0.0.1' between the brackets is not an IPv6 address"}};
  for (const auto& [text, want] : cases) {
    EXPECT_THAT(CheckListenAddress(text, /*allow_unix=*/true),
                StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr(want)))
        << text;
  }
  EXPECT_THAT(CheckListenAddress("unix:/run/ds.sock", true), IsOk());
  EXPECT_THAT(CheckListenAddress("127.0.0.1:0", true), IsOk());
  EXPECT_THAT(CheckListenAddress("[::]:50051", false), IsOk());
  EXPECT_THAT(CheckListenAddress("[fe80::1%lo]:50051", false), IsOk());  // with a zone
  EXPECT_THAT(CheckListenAddress("unix:/run/ds.sock", false),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("a Unix socket is not possible here (want host:port, "
                                 "[v6]:port), got 'unix:/run/ds.sock'")));
}

// New-user trial: `deltactl --server host` dialled gRPC's default port 443. A target
// without a port now gets deltaserved's documented one.
TEST(AddressTest, ServerTargetWithoutAPortGetsDeltaservedsPort) {
  EXPECT_EQ(ServerTarget("gpu-box").value(), "gpu-box:50051");
  EXPECT_EQ(ServerTarget("10.0.0.2").value(), "10.0.0.2:50051");
  EXPECT_EQ(ServerTarget("[fd00::2]").value(), "[fd00::2]:50051");
  EXPECT_EQ(ServerTarget("gpu-box:443").value(), "gpu-box:443");
  EXPECT_EQ(ServerTarget("[fd00::2]:7000").value(), "[fd00::2]:7000");
  EXPECT_EQ(ServerTarget("unix:/run/ds.sock").value(), "unix:/run/ds.sock");
  EXPECT_EQ(ServerTarget("dns:///gpu-box:443").value(), "dns:///gpu-box:443");
  EXPECT_THAT(ServerTarget("").status(), StatusIs(absl::StatusCode::kInvalidArgument,
                                                  HasSubstr("empty address")));
  EXPECT_THAT(ServerTarget("[zz]").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'zz' between the brackets is not an IPv6 address")));
  EXPECT_THAT(ServerTarget("[zz]:50051").status(),
              StatusIs(absl::StatusCode::kInvalidArgument,
                       HasSubstr("'zz' between the brackets is not an IPv6 address")));
  EXPECT_THAT(ServerTarget("fd00::2").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("needs brackets")));
  EXPECT_THAT(ServerTarget("h:0").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("port 0 cannot be dialled")));
  EXPECT_THAT(ServerTarget(":50051").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("no host")));
  // New-user trial: "unix:" reached gRPC, which said "empty address list" (exit 1).
  EXPECT_THAT(ServerTarget("unix:").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nothing after 'unix:'")));
  EXPECT_THAT(ServerTarget("dns:").status(),
              StatusIs(absl::StatusCode::kInvalidArgument, HasSubstr("nothing after 'dns:'")));
}

}  // namespace
}  // namespace deltaserve::common
