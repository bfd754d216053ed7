// Hints for inputs that are not safetensors (codec/internal/input_hints.h).
#include "codec/internal/input_hints.h"

#include <cstring>
#include <string>

#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/string_view.h"
#include "codec/container.h"

namespace deltaserve::codec::internal {
namespace {

// The path as a Python string literal for the one-liners below ('FILE' when it holds a
// character a single-quoted literal cannot take as it is).
std::string PyPath(const std::string& path) {
  if (path.empty() || path.find_first_of("'\\\n") != std::string::npos) return "'FILE'";
  return absl::StrCat("'", path, "'");
}

// The conversions below write safetensors with deltaserve's own Python package
// (python/deltaserve/safetensors.py, write_file: numpy arrays and torch tensors), which
// needs only what Debian 12 ships (python3-numpy, python3-torch); the `safetensors`
// package of PyPI is not in Debian 12. The package is the built one (README, "Python").
constexpr char kPythonWithDeltaserve[] = "PYTHONPATH=build/python python3 -c \"";
constexpr char kImportWriteFile[] = "from deltaserve.safetensors import write_file; ";

// A state dict (or a checkpoint holding one under "state_dict") to one safetensors file.
std::string TorchConversion(const std::string& path) {
  return absl::StrCat("convert it with ", kPythonWithDeltaserve, "import torch; ", kImportWriteFile,
                      "sd = torch.load(", PyPath(path),
                      ", map_location='cpu'); sd = sd.get('state_dict', sd); "
                      "write_file('model.safetensors', sd)\"");
}

// The name of the first entry of a zip archive (its first local file header), or "".
absl::string_view FirstZipEntry(absl::string_view text) {
  if (text.size() < 30) return {};
  const uint16_t name_len = static_cast<uint8_t>(text[26]) | (static_cast<uint8_t>(text[27]) << 8);
  if (text.size() < 30u + name_len) return {};
  return text.substr(30, name_len);
}

std::string ZipHint(const std::string& path, absl::string_view text) {
  const absl::string_view entry = FirstZipEntry(text);
  if (absl::EndsWith(entry, ".npy")) {
    return absl::StrCat("; it is a numpy .npz archive, not safetensors: convert it with ",
                        kPythonWithDeltaserve, "import numpy as np; ", kImportWriteFile,
                        "write_file('model.safetensors', dict(np.load(", PyPath(path), ")))\"");
  }
  if (entry == "data.pkl" || absl::EndsWith(entry, "/data.pkl") || absl::StrContains(entry, "/")) {
    // torch.save's zip format: "<name>/data.pkl", "<name>/data/0", "<name>/version".
    return absl::StrCat("; it is a PyTorch checkpoint (torch.save's zip format, .pt/.pth/.bin), "
                        "not safetensors: ",
                        TorchConversion(path));
  }
  return "; it is a zip archive (a PyTorch checkpoint? a Keras .keras file?), not safetensors";
}

}  // namespace

std::string NotSafetensorsHint(const std::string& path, absl::Span<const uint8_t> bytes) {
  const absl::string_view text(reinterpret_cast<const char*>(bytes.data()), bytes.size());
  if (StartsWithContainerMagic(bytes)) {
    return "; it is a deltaserve delta container (.dds), not a model (--base and "
           "--finetuned take models, --delta and --in containers)";
  }
  if (absl::StartsWith(text, "version https://git-lfs")) {
    return "; it looks like a git-LFS pointer file, not the weights (run `git lfs pull`)";
  }
  if (absl::StartsWith(text, absl::string_view("PK\x03\x04", 4))) return ZipHint(path, text);
  if (text.size() >= 2 && text[0] == '\x80' && text[1] >= 2 && text[1] <= 5) {
    return absl::StrCat("; it is a Python pickle (protocol ", static_cast<int>(text[1]),
                        ": a legacy torch.save checkpoint or pytorch_model.bin?), not "
                        "safetensors: ",
                        TorchConversion(path));
  }
  if (absl::StartsWith(text, "GGUF")) {
    return "; it is a GGUF (llama.cpp) file, not safetensors: use the Hugging Face "
           "safetensors checkpoint it was made from (GGUF weights are often quantized)";
  }
  if (absl::StartsWith(text, "\x93NUMPY")) {
    return absl::StrCat(
        "; it is a numpy .npy array (one unnamed array), not safetensors: name it and save it "
        "with ",
        kPythonWithDeltaserve, "import numpy as np; ", kImportWriteFile,
        "write_file('model.safetensors', {'weight': np.load(", PyPath(path), ")})\"");
  }
  if (absl::StartsWith(text, absl::string_view("\x89HDF\r\n\x1a\n", 8))) {
    return "; it is an HDF5 file (Keras .h5 weights?), not safetensors: load the model in "
           "Python and save its named weights with deltaserve.safetensors.write_file "
           "(python/deltaserve)";
  }
  if (absl::StartsWith(text, "<") || absl::StartsWith(text, "{")) {
    return "; it looks like a text (HTML or JSON) file, not safetensors";
  }
  return "";
}

std::string NoSafetensorsInDirHint(const std::string& dir,
                                   absl::Span<const std::string> file_names) {
  for (const std::string& name : file_names) {
    if (name == "model.json") {
      return absl::StrCat("; it holds model.json (a TF.js graph model?): deltactl convert --in ",
                          dir, "/model.json --out model.safetensors");
    }
  }
  for (const char* suffix : {".bin", ".pt", ".pth", ".ckpt", ".gguf", ".h5", ".npz", ".npy"}) {
    for (const std::string& name : file_names) {
      if (absl::EndsWith(name, suffix)) {
        return absl::StrCat("; it holds ", name,
                            ", a model in another format: deltaserve reads safetensors "
                            "(opening that file says how to convert it)");
      }
    }
  }
  return "";
}

}  // namespace deltaserve::codec::internal
