#pragma once
// A minimal blocking HTTP client (libcurl) for talking to local model servers. Thread-safe: each call uses
// its own handle. Never throws for network trouble: the result says what happened, so callers can
// decide whether to retry.

#include <chrono>
#include <string>
#include <vector>

namespace mugv {

enum class HttpOutcome { unknown = 0, ok, timeout, unreachable, failed };
const char* to_string(HttpOutcome outcome);

struct HttpResponse {
  HttpOutcome outcome = HttpOutcome::unknown;
  long status = 0;  // HTTP status when a reply arrived
  std::string body;
  std::string error;  // libcurl's words when outcome != ok
};

// POSTs `body` (JSON) to `url` with the extra `headers` ("Authorization: Bearer ..."), waiting at most
// `timeout` for the whole exchange.
HttpResponse http_post_json(const std::string& url, const std::string& body,
                            const std::vector<std::string>& headers, std::chrono::milliseconds timeout);

}  // namespace mugv
