#include "service/protocol.h"
#include "service/request_schema.h"

#include <catch2/catch.hpp>

#include <variant>

using namespace mugv::protocol;

namespace {

std::variant<Message, ProtocolError> decode_strings(const std::vector<std::string>& frames) {
  std::vector<std::string_view> views(frames.begin(), frames.end());
  return decode(views);
}

ProtocolError refused(const std::vector<std::string>& frames) {
  auto result = decode_strings(frames);
  REQUIRE(std::holds_alternative<ProtocolError>(result));
  return std::get<ProtocolError>(result);
}

}  // namespace

TEST_CASE("messages round-trip with their header and binary frames", "[unit][service]") {
  Message m;
  m.type = MessageType::preview;
  m.header = {{"job", 4}, {"step", 7}, {"width", 2}, {"height", 1}, {"format", "rgb24"}};
  m.blobs = {std::string("\x00\xff\x10\x20\x30\x40", 6)};
  auto frames = encode(m);
  REQUIRE(frames.size() == 5);
  CHECK(frames[0] == "MUGV");
  CHECK(frames[2] == "preview");
  auto back = decode_strings(frames);
  REQUIRE(std::holds_alternative<Message>(back));
  const auto& got = std::get<Message>(back);
  CHECK(got.type == MessageType::preview);
  CHECK(got.header == m.header);
  CHECK(got.blobs == m.blobs);
}

TEST_CASE("every message type has a name that parses back", "[unit][service]") {
  for (int i = 1; i <= static_cast<int>(MessageType::event); ++i) {
    auto type = static_cast<MessageType>(i);
    INFO(i);
    CHECK(message_type_from_string(to_string(type)) == type);
    CHECK(schema_for(type).type == type);
  }
  CHECK_FALSE(message_type_from_string("unknown"));
}

TEST_CASE("malformed frames are refused with a code and a message a person can act on", "[unit][service]") {
  CHECK(refused({}).code == ProtocolErrorCode::bad_magic);
  CHECK(refused({"HTTP/1.1", "1", "hello", "{}"}).code == ProtocolErrorCode::bad_magic);
  CHECK(refused({"MUGV", "1"}).code == ProtocolErrorCode::malformed);
  auto version = refused({"MUGV", "2", "hello", "{}"});
  CHECK(version.code == ProtocolErrorCode::version_mismatch);
  CHECK(version.message.find("version 2") != std::string::npos);
  CHECK(refused({"MUGV", "one", "hello", "{}"}).code == ProtocolErrorCode::malformed);
  CHECK(refused({"MUGV", "1", "teleport", "{}"}).code == ProtocolErrorCode::unknown_type);
  CHECK(refused({"MUGV", "1", "get_job", "{\"job\": "}).code == ProtocolErrorCode::malformed);
  CHECK(refused({"MUGV", "1", "get_job", "[1, 2]"}).code == ProtocolErrorCode::malformed);
  CHECK(refused({"MUGV", "1", "get_job", std::string(kMaxHeaderBytes + 1, ' ')}).code ==
        ProtocolErrorCode::too_large);
  // Deep nesting (params of ~60,000 arrays in 120 KB once crashed a server copying them) is refused before
  // it is parsed; brackets inside strings are text, not nesting.
  const std::string deep =
      "{\"kind\": \"import\", \"params\": " + std::string(60000, '[') + std::string(60000, ']') + "}";
  auto too_deep = refused({"MUGV", "1", "submit_job", deep});
  CHECK(too_deep.code == ProtocolErrorCode::too_large);
  CHECK(too_deep.message.find("60001 deep; at most 64") != std::string::npos);
  const std::string bracket_text = "{\"query\": \"" + std::string(100, '[') + "\"}";
  const auto text = decode_strings({"MUGV", "1", "list_prompts", bracket_text});
  REQUIRE(std::holds_alternative<Message>(text));
  CHECK(std::get<Message>(text).header["query"] == std::string(100, '['));
  std::vector<std::string> many = {"MUGV", "1", "event", "{\"topic\": \"x\"}"};
  many.resize(4 + kMaxBlobs + 1, "b");
  CHECK(refused(many).code == ProtocolErrorCode::too_large);
}

TEST_CASE("requests are validated field by field before anything acts on them", "[unit][service]") {
  auto invalid = [](const std::string& type, const std::string& header) {
    auto e = refused({"MUGV", "1", type, header});
    CHECK(e.code == ProtocolErrorCode::invalid_request);
    return e.message;
  };
  CHECK(invalid("get_job", "{}").find("\"job\" is required") != std::string::npos);
  CHECK(invalid("get_job", "{\"job\": \"7\"}").find("integer") != std::string::npos);
  CHECK(invalid("get_job", "{\"job\": 0}").find(">= 1") != std::string::npos);
  CHECK(invalid("get_job", "{\"job\": 1, \"extra\": true}").find("\"extra\"") != std::string::npos);
  CHECK(invalid("submit_job", "{\"kind\": \"mine_bitcoin\", \"params\": {}}").find("not one of") !=
        std::string::npos);
  CHECK(invalid("submit_job", "{\"kind\": \"train\", \"params\": {}, \"priority\": 1000}").find("<= 100") !=
        std::string::npos);
  CHECK(invalid("edit_caption", "{\"clip\": 1, \"text\": \"" + std::string(10001, 'x') + "\"}")
            .find("longer") != std::string::npos);
  CHECK(invalid("preview", "{\"job\": 1, \"step\": 0, \"width\": 2, \"height\": 2, \"format\": \"rgb24\"}")
            .find("binary frame") != std::string::npos);
  CHECK(invalid("hello", "{\"role\": \"admin\", \"version\": 1}").find("role") != std::string::npos);

  auto ok = decode_strings(
      {"MUGV", "1", "submit_job", "{\"kind\": \"train\", \"params\": {\"steps\": 5}, \"priority\": -3}"});
  REQUIRE(std::holds_alternative<Message>(ok));
  CHECK(std::get<Message>(ok).header["params"]["steps"] == 5);
}

TEST_CASE("error replies carry the refusal's code", "[unit][service]") {
  auto reply = make_error(ProtocolError{ProtocolErrorCode::version_mismatch, "peer speaks 2"});
  CHECK(reply.type == MessageType::error);
  CHECK(reply.header["code"] == "version_mismatch");
  auto frames = encode(reply);
  CHECK(std::holds_alternative<Message>(decode_strings(frames)));
  CHECK(make_ok(5).header["value"] == 5);
}

TEST_CASE("submit_job's depends_on is a list of at most 64 positive job ids", "[unit][service]") {
  const MessageSchema& submit = schema_for(MessageType::submit_job);
  nlohmann::json header = {{"kind", "import"}, {"params", nlohmann::json::object()}};
  CHECK_FALSE(check(submit, header, 0));
  header["depends_on"] = {3, 7};
  CHECK_FALSE(check(submit, header, 0));
  header["depends_on"] = nlohmann::json::array();
  CHECK_FALSE(check(submit, header, 0));
  header["depends_on"] = std::vector<int>(kMaxDependencies, 1);
  CHECK_FALSE(check(submit, header, 0));
  header["depends_on"] = std::vector<int>(kMaxDependencies + 1, 1);
  CHECK(check(submit, header, 0) ==
        "header field \"depends_on\": expected a list of at most 64 integers >= 1");
  header["depends_on"] = {3, 0};
  CHECK(check(submit, header, 0) == "header field \"depends_on\": 0 is not >= 1");
  header["depends_on"] = {3, 1.5};
  CHECK(check(submit, header, 0).value_or("").find("integers") != std::string::npos);
  header["depends_on"] = 3;
  CHECK(check(submit, header, 0).value_or("").find("depends_on") != std::string::npos);
}
