// The loopback cluster a live test runs against: tests/cluster/run_live_tests.sh starts
// Swift and etcd (tests/cluster/cluster_lib.sh) and exports their addresses; without
// them the live tests skip.
#ifndef DELTASERVE_TESTS_CLUSTER_LIVE_ENV_H_
#define DELTASERVE_TESTS_CLUSTER_LIVE_ENV_H_

#include <cstdlib>
#include <string>

#include "cluster/s3_client.h"

namespace deltaserve::cluster::testing {

inline std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v == nullptr ? "" : v;
}

// Empty endpoint: no live cluster.
inline S3Options LiveS3() {
  S3Options o;
  o.endpoint = Env("S3_ENDPOINT");
  o.region = Env("S3_REGION").empty() ? "us-east-1" : Env("S3_REGION");
  o.access_key = Env("S3_ACCESS_KEY");
  o.secret_key = Env("S3_SECRET_KEY");
  o.bucket = Env("S3_BUCKET");
  return o;
}

#define DS_SKIP_WITHOUT_CLUSTER()                                               \
  if (::deltaserve::cluster::testing::Env("S3_ENDPOINT").empty() ||             \
      ::deltaserve::cluster::testing::Env("ETCD_ENDPOINT").empty())             \
  GTEST_SKIP() << "no loopback cluster (S3_ENDPOINT/ETCD_ENDPOINT unset): run " \
                  "tests/cluster/run_live_tests.sh"

}  // namespace deltaserve::cluster::testing

#endif  // DELTASERVE_TESTS_CLUSTER_LIVE_ENV_H_
