// mugv keys generate | authorize | list | revoke: CURVE keys for tcp:// servers (service/curve_keys.h).
// These commands run locally only: a job must never change who may connect.
#include "command.h"

#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "service/curve_keys.h"

#include <nlohmann/json.hpp>

#include <cstdio>
#include <iostream>

namespace mugv::cli {
namespace {

fs::path authorized_file() {
  return authorized_keys_path(mugv_home());
}

int run_generate(const Invocation& inv) {
  const KeyRole role = inv.values.get_bool("keys.client") ? KeyRole::client : KeyRole::server;
  const fs::path dir =
      inv.values.has("keys.out") ? fs::path(inv.values.get_text("keys.out")) : keys_dir(mugv_home());
  const CurveKeyPair keys = generate_curve_keypair();
  write_keypair(dir, role, keys, inv.values.get_bool("keys.force"));
  const fs::path key_file = secret_key_path(dir, role), pub_file = public_key_path(dir, role);
  if (inv.json) {
    std::cout << nlohmann::json{{"role", to_string(role)},
                                {"public_key", keys.public_key},
                                {"key_file", key_file.string()},
                                {"public_key_file", pub_file.string()}}
                     .dump(2)
              << "\n";
  } else {
    std::printf("%s key pair written: %s (secret, mode 0600) and %s\npublic key: %s\n", to_string(role),
                key_file.c_str(), pub_file.c_str(), keys.public_key.c_str());
    if (role == KeyRole::client)
      std::printf("the server's owner authorises it with: mugv keys authorize %s --name NAME\n",
                  keys.public_key.c_str());
    else
      std::printf("clients connect with: mugv --server tcp://HOST:PORT --server-key %s ...\n",
                  keys.public_key.c_str());
  }
  return 0;
}

int run_authorize(const Invocation& inv) {
  const std::string key = public_key_from_text_or_file(inv.positional[0], "public key");
  const std::string name = inv.values.has("keys.name") ? inv.values.get_text("keys.name") : "";
  AuthorizedKey added = add_authorized_key(authorized_file(), key, name);
  if (inv.json)
    std::cout << nlohmann::json{{"public_key", added.public_key},
                                {"name", added.name},
                                {"file", authorized_file().string()}}
                     .dump(2)
              << "\n";
  else
    std::printf("authorised %s%s in %s (takes effect for the next connection)\n", added.public_key.c_str(),
                added.name.empty() ? "" : (" as " + added.name).c_str(), authorized_file().c_str());
  return 0;
}

std::optional<std::string> public_key_of(KeyRole role) {
  const fs::path key_file = secret_key_path(keys_dir(mugv_home()), role);
  std::error_code ec;
  if (!fs::exists(key_file, ec)) return std::nullopt;
  return read_keypair(key_file).public_key;
}

int run_list(const Invocation& inv) {
  const auto server = public_key_of(KeyRole::server);
  const auto client = public_key_of(KeyRole::client);
  const auto keys = read_authorized_keys(authorized_file());
  if (inv.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& k : keys) list.push_back({{"public_key", k.public_key}, {"name", k.name}});
    std::cout << nlohmann::json{{"server_public_key", server ? nlohmann::json(*server) : nlohmann::json()},
                                {"client_public_key", client ? nlohmann::json(*client) : nlohmann::json()},
                                {"authorized", list},
                                {"file", authorized_file().string()}}
                     .dump(2)
              << "\n";
    return 0;
  }
  std::printf("server key:  %s\n",
              server ? server->c_str() : "(none yet: made by the first `mugv serve` on tcp://)");
  std::printf("client key:  %s\n",
              client ? client->c_str() : "(none yet: made by the first `mugv --server tcp://...`)");
  std::printf("authorised clients (%s):%s\n", authorized_file().c_str(), keys.empty() ? " none" : "");
  for (const auto& k : keys) std::printf("  %s  %s\n", k.public_key.c_str(), k.name.c_str());
  return 0;
}

int run_revoke(const Invocation& inv) {
  const auto removed = revoke_authorized_key(authorized_file(), inv.positional[0]);
  if (inv.json) {
    nlohmann::json list = nlohmann::json::array();
    for (const auto& k : removed) list.push_back({{"public_key", k.public_key}, {"name", k.name}});
    std::cout << nlohmann::json{{"revoked", list}}.dump(2) << "\n";
  } else {
    for (const auto& k : removed)
      std::printf("revoked %s%s (new connections are refused; open ones stay until they close)\n",
                  k.public_key.c_str(), k.name.empty() ? "" : (" (" + k.name + ")").c_str());
  }
  return 0;
}

}  // namespace

Command keys_generate_command() {
  Command c;
  c.words = {"keys", "generate"};
  c.summary = "make a CURVE key pair for a tcp:// server (or, with --client, for connecting to one)";
  c.usage = "[--client] [--out DIR] [--force]";
  c.define = [](ParamRegistry& r) {
    r.add(param("keys.out", "--out", ParamType::path, nullptr,
                "folder for the key files (default $MUGV_HOME/keys)", "keys"));
    r.add(param("keys.client", "--client", ParamType::boolean, false,
                "write client.key/client.pub instead of server.*", "keys"));
    r.add(param("keys.force", "--force", ParamType::boolean, false, "replace an existing key pair", "keys"));
  };
  c.run = run_generate;
  return c;
}

Command keys_authorize_command() {
  Command c;
  c.words = {"keys", "authorize"};
  c.summary =
      "let a client key connect to this machine's tcp:// server (takes effect for the next connection)";
  c.usage = "PUBKEY|FILE.pub [--name NAME]";
  c.min_positional = c.max_positional = 1;
  c.positional_type = ParamType::text;
  c.define = [](ParamRegistry& r) {
    r.add(param("keys.name", "--name", ParamType::text, nullptr,
                "a name for the key (no spaces), e.g. alice-laptop", "keys"));
  };
  c.run = run_authorize;
  return c;
}

Command keys_list_command() {
  Command c;
  c.words = {"keys", "list"};
  c.summary = "show this machine's server and client public keys and the authorised client keys";
  c.usage = "[--json]";
  c.run = run_list;
  return c;
}

Command keys_revoke_command() {
  Command c;
  c.words = {"keys", "revoke"};
  c.summary = "remove an authorised client key, by name or key";
  c.usage = "NAME|PUBKEY";
  c.min_positional = c.max_positional = 1;
  c.positional_type = ParamType::text;
  c.run = run_revoke;
  return c;
}

}  // namespace mugv::cli
