// Errors of the deltaserve pybind11 modules (codec_module.cc, pull_module.cc): C++ code
// throws an absl::Status as StatusException; Python sees the module's exception class
// (e.g. _codec.CodecError) with args (code, message), code being the absl/gRPC status
// number. Each module gets its own StatusException type (anonymous namespace) and a
// module-local translator, so one module's errors never turn into the other's class.
#ifndef DELTASERVE_PYTHON_CODEC_STATUS_ERROR_H_
#define DELTASERVE_PYTHON_CODEC_STATUS_ERROR_H_

#include <pybind11/pybind11.h>

#include <exception>
#include <string>
#include <utility>

#include "absl/status/status.h"
#include "absl/status/statusor.h"

namespace deltaserve::python {
namespace {

struct StatusException {
  absl::Status status;
};

void ThrowIfError(const absl::Status& s) {
  if (!s.ok()) throw StatusException{s};
}

template <typename T>
T ValueOrThrow(absl::StatusOr<T> v) {
  ThrowIfError(v.status());
  return *std::move(v);
}

// Adds exception class `name` (a subclass of Exception) to module `m` and raises it for
// every StatusException thrown by this module's functions. Call once, at module init.
void RegisterStatusError(pybind11::module_& m, const char* name) {
  static pybind11::exception<StatusException> error(m, name);
  pybind11::register_local_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const StatusException& e) {
      pybind11::tuple args = pybind11::make_tuple(static_cast<int>(e.status.code()),
                                                  std::string(e.status.message()));
      PyErr_SetObject(error.ptr(), args.ptr());
    }
  });
}

}  // namespace
}  // namespace deltaserve::python

#endif  // DELTASERVE_PYTHON_CODEC_STATUS_ERROR_H_
