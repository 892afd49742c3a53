#pragma once
// CURVE key material for tcp:// endpoints: key pairs and the authorised-keys list, all as Z85 text
// (40 characters for a 32-byte key), so files can be read, copied and pasted.
//
//   $MUGV_HOME/keys/server.key       the server's secret key (mode 0600); server.pub its public key
//   $MUGV_HOME/keys/client.key       this user's client secret key (mode 0600); client.pub its public key
//   $MUGV_HOME/keys/authorized_keys  client public keys the server accepts, one per line: "KEY NAME"
//                                    ('#' starts a comment; NAME is optional and has no spaces)
//
// A .key file holds only the secret key; the public key is derived from it, so the two can never
// disagree. Files are replaced atomically, so a reader (the server's ZAP handler) sees the old list or the
// new one; writers of authorized_keys take a lock file, so two `mugv keys` commands at once lose nothing.

#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace mugv {

inline constexpr size_t kCurveKeyZ85Chars = 40;

struct CurveKeyPair {
  std::string public_key;  // Z85
  std::string secret_key;  // Z85
};

// What a client needs to talk to a CURVE server: the server's public key and its own key pair.
struct CurveClientKeys {
  std::string server_public_key;  // Z85
  CurveKeyPair client;
};

enum class KeyRole { unknown = 0, server, client };
const char* to_string(KeyRole role);
std::optional<KeyRole> key_role_from_string(std::string_view name);

// True when `text` is 40 Z85 characters that decode to a 32-byte key.
bool is_z85_key(std::string_view text);
// Error(invalid_argument) naming `what` and saying what a key looks like, unless is_z85_key(text).
void check_z85_key(std::string_view text, const std::string& what);

// A fresh key pair from libzmq (Error(unsupported) when libzmq was built without CURVE).
CurveKeyPair generate_curve_keypair();
// The public key that belongs to a Z85 secret key.
std::string curve_public_key(const std::string& secret_key);

std::filesystem::path keys_dir(const std::filesystem::path& home);                      // home/keys
std::filesystem::path secret_key_path(const std::filesystem::path& dir, KeyRole role);  // dir/server.key
std::filesystem::path public_key_path(const std::filesystem::path& dir, KeyRole role);  // dir/server.pub
std::filesystem::path authorized_keys_path(const std::filesystem::path& home);  // home/keys/authorized_keys

// Writes role.key (0600) and role.pub (0644) into `dir` (created 0700). Error(conflict) when role.key
// exists and `overwrite` is false: replacing a server key locks out every client that knows the old one.
void write_keypair(const std::filesystem::path& dir, KeyRole role, const CurveKeyPair& keys, bool overwrite);
// Reads a .key file. Error(not_found) when absent, Error(format) when it holds no key, Error(forbidden) when
// others can read it (a leaked secret key lets anyone impersonate its owner).
CurveKeyPair read_keypair(const std::filesystem::path& key_file);
// The key pair in dir/role.key, generated and written first when absent. `created` says which happened.
CurveKeyPair load_or_create_keypair(const std::filesystem::path& dir, KeyRole role, bool* created = nullptr);
// A public key given as the path of a file holding one (a .pub file; tried first) or as Z85 text.
std::string public_key_from_text_or_file(const std::string& text_or_path, const std::string& what);

struct AuthorizedKey {
  std::string public_key;  // Z85
  std::string name;        // may be empty
};

// The authorised keys; an absent file is an empty list. A malformed line is an Error(format) naming the
// file and line: the server must not silently accept fewer (or other) keys than the file says.
std::vector<AuthorizedKey> read_authorized_keys(const std::filesystem::path& file);
// Appends a key. Error(invalid_argument) for a bad key or a name with whitespace, Error(conflict) when the
// key or the name is already listed.
AuthorizedKey add_authorized_key(const std::filesystem::path& file, const std::string& public_key,
                                 const std::string& name);
// Removes the entries whose name or key equals `name_or_key`; returns them. Error(not_found) when none.
std::vector<AuthorizedKey> revoke_authorized_key(const std::filesystem::path& file,
                                                 const std::string& name_or_key);

}  // namespace mugv
