#include "client/internal/proto_strings.h"

#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "codec/container_checks.h"
#include "google/protobuf/descriptor.h"

namespace deltaserve::client {

absl::Status CheckStringFieldsUtf8(const google::protobuf::Message& message,
                                   std::string_view label) {
  using google::protobuf::FieldDescriptor;
  const google::protobuf::Reflection* refl = message.GetReflection();
  std::vector<const FieldDescriptor*> fields;
  refl->ListFields(message, &fields);  // set fields only
  for (const FieldDescriptor* f : fields) {
    const std::string what =
        absl::StrCat(absl::string_view(label.data(), label.size()), ": ", f->name());
    if (f->type() == FieldDescriptor::TYPE_STRING) {
      const int n = f->is_repeated() ? refl->FieldSize(message, f) : 1;
      for (int i = 0; i < n; ++i) {
        const std::string s =
            f->is_repeated() ? refl->GetRepeatedString(message, f, i) : refl->GetString(message, f);
        if (absl::Status st = codec::CheckUtf8(s, what); !st.ok()) return st;
      }
    } else if (f->cpp_type() == FieldDescriptor::CPPTYPE_MESSAGE) {
      const int n = f->is_repeated() ? refl->FieldSize(message, f) : 1;
      for (int i = 0; i < n; ++i) {
        const google::protobuf::Message& sub = f->is_repeated()
                                                   ? refl->GetRepeatedMessage(message, f, i)
                                                   : refl->GetMessage(message, f);
        if (absl::Status st = CheckStringFieldsUtf8(sub, what); !st.ok()) return st;
      }
    }
  }
  return absl::OkStatus();
}

}  // namespace deltaserve::client
