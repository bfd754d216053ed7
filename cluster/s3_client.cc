#include "cluster/s3_client.h"

#include <curl/curl.h>
#include <openssl/sha.h>

#include <algorithm>
#include <cstdlib>
#include <mutex>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "common/status_macros.h"

namespace deltaserve::cluster {
namespace {

void GlobalInit() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

// Percent-encodes a key for the URL path: unreserved characters and '/' stay (SigV4's
// canonical URI for S3 encodes each path segment once).
// In a query value ('/' encoded too: SigV4's canonical query string encodes it).
std::string EncodeKey(absl::string_view key, bool keep_slash = true) {
  std::string out;
  for (unsigned char c : key) {
    if (absl::ascii_isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~' ||
        (c == '/' && keep_slash)) {
      out.push_back(static_cast<char>(c));
    } else {
      static constexpr char kHex[] = "0123456789ABCDEF";  // SigV4: uppercase
      out += {'%', kHex[c >> 4], kHex[c & 15]};
    }
  }
  return out;
}

// The text between <tag> and </tag> at or after `*pos` ("" if none); advances *pos.
std::string XmlField(const std::string& xml, absl::string_view tag, size_t* pos) {
  std::string open = absl::StrCat("<", tag, ">"), close = absl::StrCat("</", tag, ">");
  size_t b = xml.find(open, *pos);
  if (b == std::string::npos) return "";
  b += open.size();
  size_t e = xml.find(close, b);
  if (e == std::string::npos) return "";
  *pos = e + close.size();
  return xml.substr(b, e - b);
}

size_t WriteBody(char* data, size_t size, size_t n, void* user) {
  static_cast<std::string*>(user)->append(data, size * n);
  return size * n;
}

struct HeaderSink {
  std::string etag;
  uint64_t content_length = 0;
};

size_t WriteHeader(char* data, size_t size, size_t n, void* user) {
  auto* sink = static_cast<HeaderSink*>(user);
  absl::string_view line(data, size * n);
  size_t colon = line.find(':');
  if (colon != absl::string_view::npos) {
    std::string name = absl::AsciiStrToLower(line.substr(0, colon));
    absl::string_view value = absl::StripAsciiWhitespace(line.substr(colon + 1));
    if (name == "etag") sink->etag = std::string(value);
    if (name == "content-length") {
      uint64_t v = 0;
      if (absl::SimpleAtoi(value, &v)) sink->content_length = v;
    }
  }
  return size * n;
}

struct ReadSource {
  absl::Span<const uint8_t> data;
  size_t offset = 0;
};

size_t ReadBody(char* out, size_t size, size_t n, void* user) {
  auto* src = static_cast<ReadSource*>(user);
  size_t take = std::min(size * n, src->data.size() - src->offset);
  std::copy_n(src->data.data() + src->offset, take, out);
  src->offset += take;
  return take;
}

}  // namespace

std::string Sha256Hex(absl::Span<const uint8_t> data) {
  unsigned char digest[SHA256_DIGEST_LENGTH];
  SHA256(data.data(), data.size(), digest);
  std::string hex;
  for (unsigned char c : digest) absl::StrAppend(&hex, absl::Hex(c, absl::kZeroPad2));
  return hex;
}

absl::Status S3Options::Validate() const {
  if (!absl::StartsWith(endpoint, "http://") && !absl::StartsWith(endpoint, "https://")) {
    return absl::InvalidArgumentError(
        absl::StrCat("s3: endpoint must start with http:// or https:// (got '", endpoint, "')"));
  }
  if (access_key.empty() || secret_key.empty()) {
    return absl::InvalidArgumentError("s3: access_key and secret_key are required");
  }
  if (bucket.empty()) return absl::InvalidArgumentError("s3: bucket is required");
  if (region.empty()) return absl::InvalidArgumentError("s3: region is empty");
  if (connect_timeout_s <= 0 || request_timeout_s <= 0) {
    return absl::InvalidArgumentError("s3: timeouts must be > 0");
  }
  return absl::OkStatus();
}

absl::StatusOr<S3Client::Response> S3Client::Call(absl::string_view method, absl::string_view key,
                                                  absl::string_view query,
                                                  absl::Span<const uint8_t> body,
                                                  const std::vector<std::string>& headers) const {
  GlobalInit();
  std::unique_ptr<CURL, void (*)(CURL*)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) return absl::ResourceExhaustedError("s3: curl_easy_init failed");
  std::string url = absl::StrCat(options_.endpoint, "/", options_.bucket);
  if (!key.empty()) absl::StrAppend(&url, "/", EncodeKey(key));
  if (!query.empty()) absl::StrAppend(&url, "?", query);
  std::string sigv4 = absl::StrCat("aws:amz:", options_.region, ":s3");
  CURL* c = curl.get();
  curl_easy_setopt(c, CURLOPT_URL, url.c_str());
  curl_easy_setopt(c, CURLOPT_AWS_SIGV4, sigv4.c_str());
  curl_easy_setopt(c, CURLOPT_USERNAME, options_.access_key.c_str());
  curl_easy_setopt(c, CURLOPT_PASSWORD, options_.secret_key.c_str());
  curl_easy_setopt(c, CURLOPT_CONNECTTIMEOUT, static_cast<long>(options_.connect_timeout_s));
  curl_easy_setopt(c, CURLOPT_TIMEOUT, static_cast<long>(options_.request_timeout_s));
  curl_easy_setopt(c, CURLOPT_NOSIGNAL, 1L);
  // DELTASERVE_S3_VERBOSE=1: curl's request trace on stderr (signing problems).
  if (std::getenv("DELTASERVE_S3_VERBOSE") != nullptr) curl_easy_setopt(c, CURLOPT_VERBOSE, 1L);
  Response r;
  HeaderSink sink;
  curl_easy_setopt(c, CURLOPT_WRITEFUNCTION, WriteBody);
  curl_easy_setopt(c, CURLOPT_WRITEDATA, &r.body);
  curl_easy_setopt(c, CURLOPT_HEADERFUNCTION, WriteHeader);
  curl_easy_setopt(c, CURLOPT_HEADERDATA, &sink);
  ReadSource src{body, 0};
  std::string custom(method);  // CURLOPT_CUSTOMREQUEST keeps the pointer
  if (method == "PUT") {
    curl_easy_setopt(c, CURLOPT_UPLOAD, 1L);
    curl_easy_setopt(c, CURLOPT_READFUNCTION, ReadBody);
    curl_easy_setopt(c, CURLOPT_READDATA, &src);
    curl_easy_setopt(c, CURLOPT_INFILESIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else if (method == "POST") {
    curl_easy_setopt(c, CURLOPT_POST, 1L);
    curl_easy_setopt(c, CURLOPT_POSTFIELDS, reinterpret_cast<const char*>(body.data()));
    curl_easy_setopt(c, CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  } else if (method == "HEAD") {
    curl_easy_setopt(c, CURLOPT_NOBODY, 1L);
  } else if (method != "GET") {
    curl_easy_setopt(c, CURLOPT_CUSTOMREQUEST, custom.c_str());
  }
  // The payload hash is signed (SigV4 includes x-amz-* headers), so the server checks
  // the body against it. (An "Expect:" header to turn 100-continue off would be signed
  // by curl but not sent: SignatureDoesNotMatch.)
  std::string hash_header = absl::StrCat("x-amz-content-sha256: ", Sha256Hex(body));
  curl_slist* list = curl_slist_append(nullptr, hash_header.c_str());
  for (const std::string& h : headers) list = curl_slist_append(list, h.c_str());
  std::unique_ptr<curl_slist, void (*)(curl_slist*)> list_owner(list, curl_slist_free_all);
  curl_easy_setopt(c, CURLOPT_HTTPHEADER, list);
  CURLcode rc = curl_easy_perform(c);
  if (rc != CURLE_OK) {
    return absl::UnavailableError(
        absl::StrCat("s3: ", method, " ", options_.bucket, "/", key, ": ", curl_easy_strerror(rc)));
  }
  curl_easy_getinfo(c, CURLINFO_RESPONSE_CODE, &r.code);
  r.etag = sink.etag;
  r.content_length = sink.content_length;
  return r;
}

absl::Status S3Client::HttpError(const Response& r, absl::string_view what,
                                 absl::string_view key) const {
  size_t pos = 0;
  std::string code = XmlField(r.body, "Code", &pos);
  std::string msg = absl::StrCat("s3: ", what, " ", options_.bucket, "/", key, ": HTTP ", r.code,
                                 code.empty() ? "" : " ", code);
  if (r.code == 404) return absl::NotFoundError(msg);
  if (r.code == 403) return absl::PermissionDeniedError(msg);
  if (r.code == 409 || r.code == 412) return absl::FailedPreconditionError(msg);
  if (r.code == 416) return absl::OutOfRangeError(msg);
  if (code == "BadDigest" || code == "XAmzContentSHA256Mismatch") {
    return absl::DataLossError(msg);
  }
  if (r.code >= 500 || r.code == 0) return absl::UnavailableError(msg);
  return absl::InvalidArgumentError(msg);
}

absl::Status S3Client::CreateBucket() const {
  DS_ASSIGN_OR_RETURN(Response r, Call("PUT", "", "", {}, {}));
  if (r.code / 100 == 2) return absl::OkStatus();
  size_t pos = 0;
  if (r.code == 409 && XmlField(r.body, "Code", &pos) == "BucketAlreadyOwnedByYou") {
    return absl::OkStatus();
  }
  return HttpError(r, "CreateBucket", "");
}

absl::Status S3Client::PutObject(absl::string_view key, absl::Span<const uint8_t> data) const {
  DS_ASSIGN_OR_RETURN(Response r, Call("PUT", key, "", data, {}));
  if (r.code / 100 == 2) return absl::OkStatus();
  return HttpError(r, "PutObject", key);
}

absl::StatusOr<uint64_t> S3Client::HeadObject(absl::string_view key) const {
  DS_ASSIGN_OR_RETURN(Response r, Call("HEAD", key, "", {}, {}));
  if (r.code / 100 == 2) return r.content_length;
  return HttpError(r, "HeadObject", key);
}

absl::StatusOr<std::string> S3Client::GetObject(absl::string_view key, uint64_t offset,
                                                uint64_t length) const {
  std::vector<std::string> headers;
  if (offset > 0 || length > 0) {
    headers.push_back(length > 0 ? absl::StrCat("Range: bytes=", offset, "-", offset + length - 1)
                                 : absl::StrCat("Range: bytes=", offset, "-"));
  }
  DS_ASSIGN_OR_RETURN(Response r, Call("GET", key, "", {}, headers));
  if (r.code / 100 != 2) return HttpError(r, "GetObject", key);
  // A server that ignores Range answers 200 with the whole object: cut it here.
  if (r.code == 200 && !headers.empty()) {
    if (offset > r.body.size()) {
      return absl::OutOfRangeError(absl::StrCat("s3: GetObject ", key, ": offset ", offset,
                                                " past the end (", r.body.size(), " bytes)"));
    }
    r.body = r.body.substr(offset, length > 0 ? length : std::string::npos);
  }
  return std::move(r.body);
}

absl::Status S3Client::DeleteObject(absl::string_view key) const {
  DS_ASSIGN_OR_RETURN(Response r, Call("DELETE", key, "", {}, {}));
  if (r.code / 100 == 2 || r.code == 404) return absl::OkStatus();
  return HttpError(r, "DeleteObject", key);
}

absl::StatusOr<std::vector<std::string>> S3Client::ListObjects(absl::string_view prefix) const {
  std::string query = absl::StrCat("list-type=2&prefix=", EncodeKey(prefix, false));
  DS_ASSIGN_OR_RETURN(Response r, Call("GET", "", query, {}, {}));
  if (r.code / 100 != 2) return HttpError(r, "ListObjects", prefix);
  std::vector<std::string> keys;
  size_t pos = 0;
  for (std::string k = XmlField(r.body, "Key", &pos); !k.empty();
       k = XmlField(r.body, "Key", &pos)) {
    keys.push_back(std::move(k));
  }
  return keys;
}

absl::StatusOr<std::string> S3Client::CreateMultipartUpload(absl::string_view key) const {
  DS_ASSIGN_OR_RETURN(Response r, Call("POST", key, "uploads=", {}, {}));
  if (r.code / 100 != 2) return HttpError(r, "CreateMultipartUpload", key);
  size_t pos = 0;
  std::string id = XmlField(r.body, "UploadId", &pos);
  if (id.empty()) {
    return absl::UnavailableError(
        absl::StrCat("s3: CreateMultipartUpload ", key, ": no UploadId in the answer"));
  }
  return id;
}

absl::StatusOr<std::string> S3Client::UploadPart(absl::string_view key, absl::string_view upload_id,
                                                 int part_number,
                                                 absl::Span<const uint8_t> data) const {
  std::string query = absl::StrCat("partNumber=", part_number, "&uploadId=", upload_id);
  DS_ASSIGN_OR_RETURN(Response r, Call("PUT", key, query, data, {}));
  if (r.code / 100 != 2) return HttpError(r, absl::StrCat("UploadPart ", part_number), key);
  if (r.etag.empty()) {
    return absl::UnavailableError(absl::StrCat("s3: UploadPart ", key, ": no ETag"));
  }
  return r.etag;
}

absl::Status S3Client::CompleteMultipartUpload(absl::string_view key, absl::string_view upload_id,
                                               const std::vector<std::string>& etags) const {
  std::string xml = "<CompleteMultipartUpload>";
  for (size_t i = 0; i < etags.size(); ++i) {
    absl::StrAppend(&xml, "<Part><PartNumber>", i + 1, "</PartNumber><ETag>", etags[i],
                    "</ETag></Part>");
  }
  xml += "</CompleteMultipartUpload>";
  std::string query = absl::StrCat("uploadId=", upload_id);
  DS_ASSIGN_OR_RETURN(Response r, Call("POST", key, query,
                                       {reinterpret_cast<const uint8_t*>(xml.data()), xml.size()},
                                       {"Content-Type: application/xml"}));
  // S3 may answer 200 with an <Error> body when the completion failed late.
  size_t pos = 0;
  if (r.code / 100 == 2 && XmlField(r.body, "Code", &pos).empty()) return absl::OkStatus();
  if (r.code / 100 == 2) r.code = 500;
  return HttpError(r, "CompleteMultipartUpload", key);
}

absl::Status S3Client::AbortMultipartUpload(absl::string_view key,
                                            absl::string_view upload_id) const {
  std::string query = absl::StrCat("uploadId=", upload_id);
  DS_ASSIGN_OR_RETURN(Response r, Call("DELETE", key, query, {}, {}));
  if (r.code / 100 == 2 || r.code == 404) return absl::OkStatus();
  return HttpError(r, "AbortMultipartUpload", key);
}

}  // namespace deltaserve::cluster
