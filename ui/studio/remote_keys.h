#pragma once
// CURVE credentials for the studio's remote servers (docs/SECURITY.md): a tcp:// server needs its public key
// (typed or pasted once, then remembered per endpoint in QSettings) and this user's client key pair from
// $MUGV_HOME/keys/client.key, made on first use like the command line's (`mugv --server tcp://...`). ipc://
// endpoints need none.

#include "service/curve_keys.h"

#include <QString>

#include <optional>

namespace mugv::studio {

// nullopt for a non-tcp endpoint. For tcp://, Error(usage) when `server_key` is empty (saying where to find
// the key), Error(invalid_argument) when it is neither a Z85 key nor a readable .pub file; the client pair is
// read from (or made in) home/keys, and `made` (when given) says whether it was made now.
std::optional<CurveClientKeys> curve_keys_for(const QString& endpoint, const QString& server_key,
                                              const QString& home, bool* made = nullptr);

// This user's client public key (made when absent), to show in the connect dialog; empty with `error` set
// when the key file cannot be read or made.
QString client_public_key(const QString& home, QString* error = nullptr);

// The server key last used successfully with `endpoint` (empty when none).
QString remembered_server_key(const QString& endpoint);
void remember_server_key(const QString& endpoint, const QString& key);

}  // namespace mugv::studio
