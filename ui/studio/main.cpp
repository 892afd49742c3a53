// mugv-studio [--server ENDPOINT [--server-key KEY|FILE.pub]] [--home DIR] [--screenshot-dir DIR] [--version]
// Without --server the studio runs its own backend (`mugv serve` on an ipc socket under $MUGV_HOME).
#include "main_window.h"

#include <QApplication>
#include <QCommandLineParser>
#include <QDir>
#include <QStandardPaths>
#include <QTimer>

#include <cstdio>

int main(int argc, char** argv) {
  for (int i = 1; i < argc; ++i) {
    if (std::string(argv[i]) == "--version") {  // no display needed
      std::printf("mugv-studio %s (Qt %s)\n", MUGV_VERSION, qVersion());
      return 0;
    }
  }
  QApplication app(argc, argv);
  QApplication::setApplicationName("mugv-studio");
  QApplication::setOrganizationName("mugv");
  QApplication::setApplicationVersion(MUGV_VERSION);
  QCommandLineParser parser;
  parser.setApplicationDescription("MUG-V Studio: curate, train and generate videos");
  parser.addHelpOption();
  QCommandLineOption server("server", "Use the MUG-V server at ENDPOINT instead of the embedded one.",
                            "ENDPOINT");
  QCommandLineOption server_key("server-key",
                                "The tcp:// server's CURVE public key, or its .pub file (default: the one "
                                "remembered for that server, or $MUGV_SERVER_KEY).",
                                "KEY");
  QCommandLineOption home(
      "home", "Data folder of the embedded server (default $MUGV_HOME or ~/.local/share/mugv).", "DIR");
  QCommandLineOption shots("screenshot-dir",
                           "Save a PNG of every page into DIR after a few seconds, then quit.", "DIR");
  QCommandLineOption no_starter("no-starter-offer", "Do not offer the starter dataset on first launch.");
  parser.addOptions({server, server_key, home, shots, no_starter});
  parser.process(app);

  mugv::studio::StudioOptions options;
  options.server = parser.value(server);
  options.server_key = parser.value(server_key);
  if (options.server_key.isEmpty()) options.server_key = qEnvironmentVariable("MUGV_SERVER_KEY");
  options.home = parser.value(home);
  if (options.home.isEmpty()) options.home = qEnvironmentVariable("MUGV_HOME");
  if (options.home.isEmpty()) options.home = QDir::home().filePath(".local/share/mugv");
  qputenv("MUGV_HOME", options.home.toLocal8Bit());  // the studio's own catalog reads (thumbnails) agree
  options.mugv_binary =
      mugv::studio::EmbeddedServer::find_mugv_binary(QCoreApplication::applicationDirPath());
  options.offer_starter = !parser.isSet(no_starter) && !parser.isSet(shots);

  mugv::studio::MainWindow window(options);
  window.resize(1280, 800);
  window.show();
  if (parser.isSet(shots)) {
    QTimer::singleShot(4000, &window, [&] {
      window.save_screenshots(parser.value(shots));
      window.close();
    });
  }
  return app.exec();
}
