#include "service/curve_keys.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"

#include <zmq.h>

#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cctype>
#include <cstring>
#include <sstream>

namespace mugv {
namespace fs = std::filesystem;

namespace {

// The first line that is neither blank nor a comment, trimmed.
std::optional<std::string> first_key_line(const std::string& text) {
  std::istringstream in(text);
  std::string line;
  while (std::getline(in, line)) {
    std::string t = trim(line);
    if (!t.empty() && t[0] != '#') return t;
  }
  return std::nullopt;
}

void set_mode(const fs::path& path, mode_t mode) {
  if (::chmod(path.c_str(), mode) != 0)
    throw Error(ErrorCode::io, path.string(),
                cat("cannot set mode ", std::oct, mode, ": ", std::strerror(errno)));
}

std::string render(const std::vector<AuthorizedKey>& keys) {
  std::string text = "# client public keys this MUG-V server accepts on tcp:// endpoints: KEY [NAME]\n";
  for (const auto& k : keys) text += k.public_key + (k.name.empty() ? "" : " " + k.name) + "\n";
  return text;
}

// An exclusive lock for read-modify-write of authorized_keys, released on destruction.
class KeysFileLock {
 public:
  explicit KeysFileLock(const fs::path& file) {
    ensure_private_dir(file.parent_path());
    fs::path lock = file.parent_path() / ("." + file.filename().string() + ".lock");
    fd_ = ::open(lock.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd_ < 0 || ::flock(fd_, LOCK_EX) != 0)
      throw Error(ErrorCode::io, lock.string(), cat("cannot lock: ", std::strerror(errno)));
  }
  ~KeysFileLock() { ::close(fd_); }
  KeysFileLock(const KeysFileLock&) = delete;
  KeysFileLock& operator=(const KeysFileLock&) = delete;

 private:
  int fd_ = -1;
};

}  // namespace

const char* to_string(KeyRole role) {
  switch (role) {
    case KeyRole::server:
      return "server";
    case KeyRole::client:
      return "client";
    default:
      return "unknown";
  }
}

std::optional<KeyRole> key_role_from_string(std::string_view name) {
  if (name == "server") return KeyRole::server;
  if (name == "client") return KeyRole::client;
  return std::nullopt;
}

bool is_z85_key(std::string_view text) {
  if (text.size() != kCurveKeyZ85Chars) return false;
  // zmq_z85_decode rejects characters outside the alphabet and groups that overflow 32 bits.
  std::string copy(text);
  uint8_t bytes[32];
  return zmq_z85_decode(bytes, copy.c_str()) != nullptr;
}

void check_z85_key(std::string_view text, const std::string& what) {
  if (is_z85_key(text)) return;
  std::string shown = text.size() > 60 ? std::string(text.substr(0, 60)) + "..." : std::string(text);
  throw Error(ErrorCode::invalid_argument, what,
              cat("'", shown,
                  "' is not a CURVE public key (expected 40 Z85 characters, as in a .pub file or "
                  "`mugv keys list`; got ",
                  text.size(), " characters)"));
}

CurveKeyPair generate_curve_keypair() {
  char pub[41] = {0}, sec[41] = {0};
  if (zmq_curve_keypair(pub, sec) != 0)
    throw Error(ErrorCode::unsupported, "libzmq",
                cat("cannot make a CURVE key pair: ", zmq_strerror(zmq_errno()),
                    " (is libzmq built with libsodium?)"));
  return {pub, sec};
}

std::string curve_public_key(const std::string& secret_key) {
  check_z85_key(secret_key, "secret key");
  char pub[41] = {0};
  if (zmq_curve_public(pub, secret_key.c_str()) != 0)
    throw Error(ErrorCode::unsupported, "libzmq",
                cat("cannot derive a CURVE public key: ", zmq_strerror(zmq_errno())));
  return pub;
}

fs::path keys_dir(const fs::path& home) {
  return home / "keys";
}
fs::path secret_key_path(const fs::path& dir, KeyRole role) {
  return dir / (std::string(to_string(role)) + ".key");
}
fs::path public_key_path(const fs::path& dir, KeyRole role) {
  return dir / (std::string(to_string(role)) + ".pub");
}
fs::path authorized_keys_path(const fs::path& home) {
  return keys_dir(home) / "authorized_keys";
}

void write_keypair(const fs::path& dir, KeyRole role, const CurveKeyPair& keys, bool overwrite) {
  ensure_private_dir(dir);
  const fs::path key_file = secret_key_path(dir, role);
  std::error_code ec;
  if (!overwrite && fs::exists(key_file, ec))
    throw Error(ErrorCode::conflict, key_file.string(),
                "a key already exists; replacing it locks out everyone who trusts the old one (use --force "
                "to replace it)");
  // write_text_atomic's temporary file is created 0600, so the secret is never readable by others.
  write_text_atomic(key_file, keys.secret_key + "\n");
  set_mode(key_file, 0600);
  const fs::path pub_file = public_key_path(dir, role);
  write_text_atomic(pub_file, keys.public_key + "\n");
  set_mode(pub_file, 0644);
}

CurveKeyPair read_keypair(const fs::path& key_file) {
  struct stat st {};
  if (::stat(key_file.c_str(), &st) != 0)
    throw Error(ErrorCode::not_found, key_file.string(), "no such key file");
  if (st.st_mode & 077)
    throw Error(ErrorCode::forbidden, key_file.string(),
                cat("a secret key readable by other users (mode ", std::oct, (st.st_mode & 0777),
                    "); run `chmod 600` on it, or make a new one"));
  auto line = first_key_line(read_text_file(key_file));
  if (!line || !is_z85_key(*line))
    throw Error(ErrorCode::format, key_file.string(), "does not hold a CURVE secret key (40 Z85 characters)");
  return {curve_public_key(*line), *line};
}

CurveKeyPair load_or_create_keypair(const fs::path& dir, KeyRole role, bool* created) {
  const fs::path key_file = secret_key_path(dir, role);
  std::error_code ec;
  const bool exists = fs::exists(key_file, ec);
  if (created) *created = !exists;
  if (exists) return read_keypair(key_file);
  CurveKeyPair keys = generate_curve_keypair();
  write_keypair(dir, role, keys, false);
  return keys;
}

std::string public_key_from_text_or_file(const std::string& text_or_path, const std::string& what) {
  std::string text = trim(text_or_path);
  // A file first: a 40-character path can also be valid Z85 ("/tmp/.../keys/server.pub").
  std::error_code ec;
  if (!text.empty() && fs::is_regular_file(text, ec)) {
    auto line = first_key_line(read_text_file(text));
    std::string key = line.value_or("");
    // A "KEY NAME" line (as in authorized_keys) names the key too; the key is the first word.
    if (auto space = key.find_first_of(" \t"); space != std::string::npos) key = key.substr(0, space);
    check_z85_key(key, cat(what, " (file ", text, ")"));
    return key;
  }
  check_z85_key(text, what);
  return text;
}

std::vector<AuthorizedKey> read_authorized_keys(const fs::path& file) {
  std::error_code ec;
  if (!fs::exists(file, ec)) return {};
  std::vector<AuthorizedKey> keys;
  std::istringstream in(read_text_file(file));
  std::string line;
  for (int number = 1; std::getline(in, line); ++number) {
    std::string t = trim(line);
    if (t.empty() || t[0] == '#') continue;
    AuthorizedKey k;
    size_t space = t.find_first_of(" \t");
    k.public_key = t.substr(0, space);
    if (space != std::string::npos) k.name = trim(t.substr(space));
    if (!is_z85_key(k.public_key))
      throw Error(ErrorCode::format, cat(file.string(), ":", number),
                  cat("'", k.public_key, "' is not a CURVE public key (expected 40 Z85 characters)"));
    keys.push_back(std::move(k));
  }
  return keys;
}

AuthorizedKey add_authorized_key(const fs::path& file, const std::string& public_key,
                                 const std::string& name) {
  check_z85_key(public_key, "public key");
  for (char c : name)
    if (std::isspace(static_cast<unsigned char>(c)) || c == '#')
      throw Error(ErrorCode::invalid_argument, cat("name '", name, "'"),
                  "a key's name has no spaces and no '#'");
  KeysFileLock lock(file);
  auto keys = read_authorized_keys(file);
  for (const auto& k : keys) {
    if (k.public_key == public_key)
      throw Error(ErrorCode::conflict, public_key,
                  cat("already authorised", k.name.empty() ? "" : " as " + k.name));
    if (!name.empty() && k.name == name)
      throw Error(ErrorCode::conflict, cat("name ", name),
                  "already used by another key; pick another --name");
  }
  keys.push_back({public_key, name});
  write_text_atomic(file, render(keys));
  set_mode(file, 0600);
  return keys.back();
}

std::vector<AuthorizedKey> revoke_authorized_key(const fs::path& file, const std::string& name_or_key) {
  KeysFileLock lock(file);
  auto keys = read_authorized_keys(file);
  std::vector<AuthorizedKey> kept, removed;
  for (auto& k : keys)
    (k.public_key == name_or_key || (!k.name.empty() && k.name == name_or_key) ? removed : kept).push_back(k);
  if (removed.empty())
    throw Error(
        ErrorCode::not_found, name_or_key,
        cat("no authorised key has this name or key (see `mugv keys list`; file ", file.string(), ")"));
  write_text_atomic(file, render(kept));
  set_mode(file, 0600);
  return removed;
}

}  // namespace mugv
