#include "service/zap_handler.h"

#include "core/error.h"
#include "core/log.h"
#include "core/strings.h"
#include "service/curve_keys.h"

#include <zmq_addon.hpp>

#include <vector>

namespace mugv {

namespace {

struct Verdict {
  bool ok = false;
  std::string status_text, user_id;
};

std::string z85(const std::string& raw) {
  if (raw.size() != 32) return "(a " + std::to_string(raw.size()) + "-byte key)";
  char text[41] = {0};
  if (!zmq_z85_encode(text, reinterpret_cast<const uint8_t*>(raw.data()), raw.size()))
    return "(unencodable key)";
  return text;
}

// `admitted_job`: the job the key was admitted for at run time, 0 when none, -1 when it is a worker key
// presented on a domain where workers have no place.
Verdict decide(const std::filesystem::path& file, const std::string& mechanism, const std::string& credential,
               const std::string& address, int64_t admitted_job) {
  if (mechanism != "CURVE") {
    log_warning(cat("rejected a ", mechanism, " connection from ", address, ": tcp endpoints require CURVE"));
    return {false, "CURVE required", ""};
  }
  const std::string key = z85(credential);
  if (admitted_job < 0) return {false, "worker keys may only report", ""};
  if (admitted_job > 0) {
    log_debug(cat("accepted the worker of job ", admitted_job, " from ", address));
    return {true, "OK", ZapHandler::worker_user_id(admitted_job)};
  }
  std::vector<AuthorizedKey> keys;
  try {
    keys = read_authorized_keys(file);
  } catch (const Error& e) {
    log_error(cat("rejected key ", key, " from ", address, ": cannot read the authorised keys: ", e.what()));
    return {false, "authorised keys unreadable", ""};
  }
  for (const auto& k : keys) {
    if (k.public_key != key) continue;
    std::string who = k.name.empty() ? key : k.name;
    log_debug(cat("accepted client ", who, " from ", address));
    return {true, "OK", cat("client:", who)};  // never a worker's User-Id, whatever the name
  }
  log_warning(cat("rejected client key ", key, " from ", address, ": not in ", file.string(),
                  " (authorise it with `mugv keys authorize ", key, "`)"));
  return {false, "key not authorised", ""};
}

}  // namespace

std::string ZapHandler::worker_user_id(int64_t job_id) {
  return cat("worker:", job_id);
}

int64_t ZapHandler::job_of_user_id(const std::string& user_id) {
  if (!starts_with(user_id, "worker:")) return 0;
  const std::string digits = user_id.substr(7);
  if (digits.empty() || digits.size() > 18 || digits.find_first_not_of("0123456789") != std::string::npos)
    return 0;
  return std::stoll(digits);
}

void ZapHandler::admit(const std::string& public_key, int64_t job_id) {
  check_z85_key(public_key, cat("the worker key of job ", job_id));
  std::lock_guard<std::mutex> lock(admitted_mutex_);
  admitted_[public_key] = job_id;
}

void ZapHandler::forget(const std::string& public_key) {
  std::lock_guard<std::mutex> lock(admitted_mutex_);
  admitted_.erase(public_key);
}

ZapHandler::ZapHandler(zmq::context_t& context, std::filesystem::path authorized_keys)
    : socket_(context, zmq::socket_type::rep), authorized_keys_(std::move(authorized_keys)) {
  socket_.set(zmq::sockopt::linger, 0);
  try {
    socket_.bind("inproc://zeromq.zap.01");
  } catch (const zmq::error_t& e) {
    throw Error(ErrorCode::conflict, "inproc://zeromq.zap.01",
                cat("cannot start the ZAP handler: ", e.what()));
  }
  // Handing the bound socket to the new thread is safe: thread creation is a full memory barrier.
  thread_ = std::thread([this] { serve(); });
}

ZapHandler::~ZapHandler() {
  stop_ = true;
  if (thread_.joinable()) thread_.join();
}

void ZapHandler::serve() {
  while (!stop_) {
    zmq::pollitem_t item{socket_.handle(), 0, ZMQ_POLLIN, 0};
    try {
      if (zmq::poll(&item, 1, std::chrono::milliseconds(100)) <= 0) continue;
      std::vector<zmq::message_t> request;
      if (!zmq::recv_multipart(socket_, std::back_inserter(request), zmq::recv_flags::dontwait)) continue;
      // version, request id, domain, address, routing id, mechanism, credentials...
      std::string version = request.size() > 0 ? request[0].to_string() : "";
      std::string request_id = request.size() > 1 ? request[1].to_string() : "";
      Verdict v;
      if (version != "1.0" || request.size() < 6) {
        log_warning("rejected a malformed ZAP request");
        v = {false, "malformed ZAP request", ""};
      } else {
        const std::string credential = request.size() > 6 ? request[6].to_string() : "";
        int64_t job = 0;
        {
          std::lock_guard<std::mutex> lock(admitted_mutex_);
          if (auto it = admitted_.find(z85(credential)); it != admitted_.end()) job = it->second;
        }
        if (job > 0 && request[2].to_string() != kDomain) {
          log_warning(cat("rejected the worker key of job ", job, " on ", request[2].to_string(), " from ",
                          request[3].to_string(), ": worker keys may only report"));
          job = -1;  // not a listed key either: rejected below
        }
        v = decide(authorized_keys_, request[5].to_string(), credential, request[3].to_string(), job);
      }
      (v.ok ? accepted_ : rejected_)++;
      std::vector<std::string> reply = {"1.0",         request_id, v.ok ? "200" : "400",
                                        v.status_text, v.user_id,  ""};
      std::vector<zmq::const_buffer> frames;
      for (const auto& f : reply) frames.emplace_back(f.data(), f.size());
      zmq::send_multipart(socket_, frames);
    } catch (const zmq::error_t& e) {
      if (e.num() == ETERM) return;
      if (e.num() != EINTR) log_error(cat("ZAP handler: ", e.what()));
    }
  }
}

}  // namespace mugv
