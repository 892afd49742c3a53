#include "caption/http_client.h"

#include <curl/curl.h>

#include <memory>
#include <mutex>

namespace mugv {
namespace {

void init_curl_once() {
  static std::once_flag once;
  std::call_once(once, [] { curl_global_init(CURL_GLOBAL_DEFAULT); });
}

size_t append_body(char* data, size_t size, size_t count, void* user) {
  static_cast<std::string*>(user)->append(data, size * count);
  return size * count;
}

}  // namespace

const char* to_string(HttpOutcome outcome) {
  switch (outcome) {
    case HttpOutcome::ok:
      return "ok";
    case HttpOutcome::timeout:
      return "timeout";
    case HttpOutcome::unreachable:
      return "unreachable";
    case HttpOutcome::failed:
      return "failed";
    default:
      return "unknown";
  }
}

HttpResponse http_post_json(const std::string& url, const std::string& body,
                            const std::vector<std::string>& headers, std::chrono::milliseconds timeout) {
  init_curl_once();
  HttpResponse response;
  std::unique_ptr<CURL, decltype(&curl_easy_cleanup)> curl(curl_easy_init(), curl_easy_cleanup);
  if (!curl) {
    response.outcome = HttpOutcome::failed;
    response.error = "cannot initialise libcurl";
    return response;
  }
  curl_slist* list = curl_slist_append(nullptr, "Content-Type: application/json");
  for (const auto& h : headers) list = curl_slist_append(list, h.c_str());
  std::unique_ptr<curl_slist, decltype(&curl_slist_free_all)> header_list(list, curl_slist_free_all);
  char error_buffer[CURL_ERROR_SIZE] = {0};
  curl_easy_setopt(curl.get(), CURLOPT_URL, url.c_str());
  curl_easy_setopt(curl.get(), CURLOPT_POST, 1L);
  curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDS, body.data());
  curl_easy_setopt(curl.get(), CURLOPT_POSTFIELDSIZE_LARGE, static_cast<curl_off_t>(body.size()));
  curl_easy_setopt(curl.get(), CURLOPT_HTTPHEADER, header_list.get());
  curl_easy_setopt(curl.get(), CURLOPT_TIMEOUT_MS, static_cast<long>(timeout.count()));
  curl_easy_setopt(curl.get(), CURLOPT_NOSIGNAL, 1L);  // timeouts without SIGALRM: safe in threads
  curl_easy_setopt(curl.get(), CURLOPT_WRITEFUNCTION, append_body);
  curl_easy_setopt(curl.get(), CURLOPT_WRITEDATA, &response.body);
  curl_easy_setopt(curl.get(), CURLOPT_ERRORBUFFER, error_buffer);
  CURLcode rc = curl_easy_perform(curl.get());
  curl_easy_getinfo(curl.get(), CURLINFO_RESPONSE_CODE, &response.status);
  if (rc == CURLE_OK) {
    response.outcome = HttpOutcome::ok;
  } else {
    response.outcome = rc == CURLE_OPERATION_TIMEDOUT ? HttpOutcome::timeout
                       : (rc == CURLE_COULDNT_CONNECT || rc == CURLE_COULDNT_RESOLVE_HOST)
                           ? HttpOutcome::unreachable
                           : HttpOutcome::failed;
    response.error = error_buffer[0] ? error_buffer : curl_easy_strerror(rc);
  }
  return response;
}

}  // namespace mugv
