#pragma once
// Declarative schemas of message headers: for every MessageType, the fields it carries with their JSON
// type, whether required, ranges, lengths and allowed values, and how many binary frames may follow.
// decode() (protocol.h) checks every message against its schema, so handlers only see valid input.

#include "service/protocol.h"

#include <optional>
#include <string>
#include <vector>

namespace mugv::protocol {

enum class FieldType { unknown = 0, integer, number, boolean, string, object, string_array, integer_array };
const char* to_string(FieldType type);

struct FieldRule {
  std::string name;
  FieldType type = FieldType::unknown;
  bool required = false;
  // integer/number: the value; string: max is the length; integer_array: min is each item's, max the count
  std::optional<double> min, max;
  std::vector<std::string> choices;  // allowed strings (empty = any)
};

struct MessageSchema {
  MessageType type = MessageType::unknown;
  std::vector<FieldRule> fields;
  bool allow_extra_fields = false;  // replies and events carry free-form payloads
  size_t min_blobs = 0, max_blobs = 0;
};

// The schema of `type`; every known type has one.
const MessageSchema& schema_for(MessageType type);

// nullopt when `header` satisfies `schema` and the blob count is allowed; the first problem otherwise.
std::optional<std::string> check(const MessageSchema& schema, const nlohmann::json& header,
                                 size_t blob_count);

// Job kinds a client may submit, and job states as the catalog names them.
const std::vector<std::string>& job_kinds();
const std::vector<std::string>& job_state_names();

}  // namespace mugv::protocol
