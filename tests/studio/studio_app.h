#pragma once
// What every studio test file shares: the one QApplication of the test program (offscreen, with settings
// in a private folder so remembered keys and window state never touch the user's), and the `mugv` binary
// of this build for the embedded server. Header-only; inline, so all files get the same instance.
#include "support/test_support.h"

#include <QApplication>
#include <QSettings>
#include <QString>
#include <QTemporaryDir>

namespace mugv::studio {

inline QApplication& app() {
  static int argc = 1;
  static char name[] = "test_studio";
  static char* argv[] = {name, nullptr};
  static QTemporaryDir settings_dir;
  static QApplication* instance = [] {
    qputenv("QT_QPA_PLATFORM", "offscreen");
    auto* a = new QApplication(argc, argv);
    // Remembered server keys and window state go to a private folder, not the user's settings.
    QApplication::setOrganizationName("mugv-test");
    QApplication::setApplicationName("test_studio");
    QSettings::setPath(QSettings::NativeFormat, QSettings::UserScope, settings_dir.path());
    return a;
  }();
  return *instance;
}

inline QString mugv_binary() {
  return QString::fromStdString((test::binary_dir() / "bin" / "mugv").string());
}

}  // namespace mugv::studio
