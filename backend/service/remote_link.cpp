#include "service/remote_link.h"

#include "core/error.h"
#include "core/hash.h"
#include "core/json_io.h"
#include "core/paths.h"
#include "core/strings.h"

#include <sys/stat.h>

namespace mugv {

namespace fs = std::filesystem;

RemoteLinkGrant make_remote_link_grant(const std::string& endpoint, const std::string& server_public_key) {
  RemoteLinkGrant g;
  g.endpoint = endpoint;
  g.server_public_key = server_public_key;
  g.worker = generate_curve_keypair();
  g.token = random_hex(32);
  return g;
}

fs::path remote_link_file(const fs::path& job_folder) {
  return job_folder / "link.json";
}

void write_remote_link_file(const fs::path& file, const RemoteLinkGrant& grant) {
  const nlohmann::json j = {{"endpoint", grant.endpoint},
                            {"server_public_key", grant.server_public_key},
                            {"worker_secret_key", grant.worker.secret_key},
                            {"token", grant.token}};
  // write_text_atomic creates its temporary file 0600, so the secrets are never readable by others; the
  // mode is set again in case the file existed with a wider one.
  write_text_atomic(file, j.dump(1) + "\n");
  if (::chmod(file.c_str(), 0600) != 0)
    throw Error(ErrorCode::io, file.string(), "cannot make the link file private (mode 0600)");
}

RemoteLinkGrant read_remote_link_file(const fs::path& file) {
  struct stat st {};
  if (::stat(file.c_str(), &st) != 0) throw Error(ErrorCode::not_found, file.string(), "no link file");
  if (st.st_mode & 0077)
    throw Error(ErrorCode::forbidden, file.string(),
                "holds a worker's secret key but other users may read it (expected mode 0600)");
  const nlohmann::json j = read_json_file(file);
  auto text = [&](const char* member) {
    if (!j.is_object() || !j.contains(member) || !j[member].is_string())
      throw Error(ErrorCode::format, file.string(), cat("member '", member, "' is missing or not a string"));
    return j[member].get<std::string>();
  };
  RemoteLinkGrant g;
  g.endpoint = text("endpoint");
  g.server_public_key = text("server_public_key");
  g.worker.secret_key = text("worker_secret_key");
  g.token = text("token");
  try {
    check_tcp_endpoint(g.endpoint, "endpoint");
    check_z85_key(g.server_public_key, "server_public_key");
    check_z85_key(g.worker.secret_key, "worker_secret_key");
  } catch (const Error& e) {
    throw Error(ErrorCode::format, file.string(), e.what());
  }
  if (g.token.empty()) throw Error(ErrorCode::format, file.string(), "member 'token' is empty");
  g.worker.public_key = curve_public_key(g.worker.secret_key);
  return g;
}

int check_tcp_endpoint(const std::string& endpoint, const std::string& what) {
  const size_t colon = endpoint.rfind(':');
  const std::string port_text = colon == std::string::npos ? "" : endpoint.substr(colon + 1);
  const bool digits = !port_text.empty() && port_text.size() <= 5 &&
                      port_text.find_first_not_of("0123456789") == std::string::npos;
  const int port = digits ? std::stoi(port_text) : 0;
  if (!starts_with(endpoint, "tcp://") || colon <= 6 || port < 1 || port > 65535)
    throw Error(
        ErrorCode::invalid_argument, what,
        cat("'", endpoint, "' is not tcp://HOST:PORT (the server's tcp endpoint as the nodes reach it)"));
  return port;
}

}  // namespace mugv
