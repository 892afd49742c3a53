#include "remote_keys.h"

#include "core/error.h"

#include <QSettings>
#include <QVariantMap>

#include <filesystem>

namespace mugv::studio {

namespace {

// One map entry per endpoint: QSettings keys cannot hold the '/' of "tcp://".
constexpr const char* kSettingsKey = "remote/server_keys";

}  // namespace

std::optional<CurveClientKeys> curve_keys_for(const QString& endpoint, const QString& server_key,
                                              const QString& home, bool* made) {
  if (!endpoint.startsWith("tcp://")) return std::nullopt;
  if (server_key.trimmed().isEmpty())
    throw Error(ErrorCode::usage, endpoint.toStdString(),
                "tcp:// servers require CURVE: enter the server's public key (it prints it when it starts; "
                "`mugv keys list` on the server shows it)");
  CurveClientKeys keys;
  keys.server_public_key = public_key_from_text_or_file(server_key.trimmed().toStdString(), "server key");
  bool created = false;
  keys.client =
      load_or_create_keypair(keys_dir(std::filesystem::path(home.toStdString())), KeyRole::client, &created);
  if (made) *made = created;
  return keys;
}

QString client_public_key(const QString& home, QString* error) {
  try {
    return QString::fromStdString(
        load_or_create_keypair(keys_dir(std::filesystem::path(home.toStdString())), KeyRole::client)
            .public_key);
  } catch (const Error& e) {
    if (error) *error = QString::fromStdString(e.what());
    return {};
  }
}

QString remembered_server_key(const QString& endpoint) {
  return QSettings().value(kSettingsKey).toMap().value(endpoint).toString();
}

void remember_server_key(const QString& endpoint, const QString& key) {
  QSettings settings;
  QVariantMap keys = settings.value(kSettingsKey).toMap();
  keys[endpoint] = key;
  settings.setValue(kSettingsKey, keys);
}

}  // namespace mugv::studio
