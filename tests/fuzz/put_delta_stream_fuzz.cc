// libFuzzer target: a PutDelta client stream, as varint-length-delimited
// PutDeltaRequest messages, checked the way the server's PutDelta reactor checks it
// (server/internal/put_delta.cc): protobuf parsing of each message (string fields must
// be UTF-8), metadata first and only first, chunks bounded by total_bytes, side file
// chunks bounded by the declared side file sizes (their names and limits are storage's
// ValidateSideFiles, tested in tests/storage/side_files_test.cc), the upload
// scanner on every growing prefix, then ContainerReader::Parse, CheckContainerStorable
// and every record. The gRPC transport, auth and RocksDB are not in the loop.
#include <cstdint>
#include <string>

#include "codec/container.h"
#include "codec/container_checks.h"
#include "deltaserve/v1/delta_service.pb.h"
#include "google/protobuf/io/coded_stream.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  using namespace deltaserve;
  google::protobuf::io::CodedInputStream in(data, static_cast<int>(size));
  v1::PutDeltaRequest request;
  v1::PutDeltaMetadata meta;
  bool have_meta = false;
  std::string buffer;
  uint64_t side_declared = 0, side_received = 0;
  codec::ContainerUploadScanner scanner;
  uint32_t len = 0;
  while (in.ReadVarint32(&len)) {
    const auto limit = in.PushLimit(static_cast<int>(len));
    const bool parsed = request.ParseFromCodedStream(&in) && in.ConsumedEntireMessage();
    in.PopLimit(limit);
    if (!parsed) return 0;
    if (!have_meta) {
      if (!request.has_metadata()) return 0;
      meta = request.metadata();
      have_meta = true;
      if (meta.total_bytes() == 0 || meta.total_bytes() > (64u << 20)) return 0;
      for (const v1::SideFileDecl& f : meta.side_files()) {
        if (f.size_bytes() > (64u << 20)) return 0;
        side_declared += f.size_bytes();
      }
      continue;
    }
    if (request.has_side_file_chunk()) {
      side_received += request.side_file_chunk().size();
      if (side_received > side_declared) return 0;
      continue;
    }
    if (!request.has_chunk()) return 0;
    if (buffer.size() + request.chunk().size() > meta.total_bytes()) return 0;
    buffer.append(request.chunk());
    if (!scanner
             .Feed(absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(buffer.data()),
                                       buffer.size()))
             .ok()) {
      return 0;
    }
  }
  if (!have_meta || buffer.size() != meta.total_bytes() || side_received != side_declared) {
    return 0;
  }
  auto reader = codec::ContainerReader::Parse(
      absl::MakeConstSpan(reinterpret_cast<const uint8_t*>(buffer.data()), buffer.size()));
  if (!reader.ok() || !codec::CheckContainerStorable(*reader).ok()) return 0;
  for (size_t i = 0; i < reader->num_records(); ++i) (void)reader->record(i);
  return 0;
}
