// mugv-monitor --server ENDPOINT [--server-key KEY|FILE.pub] [--client-key FILE.key] [--window-size WxH]
//              [--screenshot FILE] [--exit-after-ms N] [--dump-state] [--version]
// A light live view of any `mugv serve`: jobs, progress, metrics, logs and previews. ImGui on GLFW with
// OpenGL 3.0 / GLSL 130, so it also runs over X forwarding and under Xvfb with Mesa's software renderer.
// Exit codes: 0 ok, 2 usage, 1 failure (server unreachable, no OpenGL window, screenshot not written).
#include "core/error.h"
#include "core/paths.h"
#include "media/image.h"
#include "network.h"
#include "render.h"
#include "service/curve_keys.h"

#include <GLFW/glfw3.h>
#include <imgui.h>
#include <imgui_impl_glfw.h>
#include <imgui_impl_opengl3.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <optional>
#include <string>
#include <thread>

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using namespace std::chrono_literals;

const char* kUsage =
    "Usage: mugv-monitor --server ENDPOINT [options]\n\n"
    "A live view of a MUG-V server: jobs, progress, metric plots, logs and preview frames.\n\n"
    "  --server ENDPOINT     the server to attach to: ipc://PATH or tcp://HOST:PORT (required)\n"
    "  --server-key KEY      a tcp:// server's CURVE public key, or its .pub file (default "
    "$MUGV_SERVER_KEY);\n"
    "                        the server prints it when it starts, `mugv keys list` shows it\n"
    "  --client-key FILE     this client's secret key file (default $MUGV_HOME/keys/client.key, made on\n"
    "                        first use); the server's owner authorises its public key\n"
    "  --window-size WxH     the window's size in pixels (default 1280x800)\n"
    "  --screenshot FILE     write the window to FILE (.png, else binary PPM) when exiting\n"
    "  --exit-after-ms N     close after N milliseconds\n"
    "  --dump-state          print what the monitor knows and its last frame's layout (JSON) on exit\n"
    "  --version             print the version and exit\n"
    "  --help                this text\n";

struct Options {
  std::string server;
  std::optional<std::string> server_key, client_key;
  std::optional<fs::path> screenshot;
  std::optional<long> exit_after_ms;
  bool dump_state = false;
  int width = 1280, height = 800;
};

// Parses argv; prints and returns an exit code when the program should stop right away.
std::optional<int> parse(int argc, char** argv, Options& o) {
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&](const char* what) -> std::optional<std::string> {
      if (i + 1 >= argc) {
        std::cerr << "mugv-monitor: " << a << " needs " << what << "\n";
        return std::nullopt;
      }
      return std::string(argv[++i]);
    };
    if (a == "--help" || a == "-h") {
      std::cout << kUsage;
      return 0;
    }
    if (a == "--version") {
      std::printf("mugv-monitor %s (protocol %d, Dear ImGui %s)\n", MUGV_VERSION, mugv::protocol::kVersion,
                  IMGUI_VERSION);
      return 0;
    }
    if (a == "--dump-state") {
      o.dump_state = true;
    } else if (a == "--server") {
      auto v = value("an endpoint");
      if (!v) return 2;
      o.server = *v;
    } else if (a == "--server-key" || a == "--client-key") {
      auto v = value(a == "--server-key" ? "a key or a .pub file" : "a .key file");
      if (!v) return 2;
      (a == "--server-key" ? o.server_key : o.client_key) = *v;
    } else if (a == "--screenshot") {
      auto v = value("a file name");
      if (!v) return 2;
      o.screenshot = *v;
    } else if (a == "--window-size") {
      auto v = value("a size such as 1280x800");
      if (!v) return 2;
      int w = 0, h = 0;
      char rest = 0;
      if (std::sscanf(v->c_str(), "%dx%d%c", &w, &h, &rest) != 2 || w < 200 || h < 150 || w > 16384 ||
          h > 16384) {
        std::cerr << "mugv-monitor: --window-size " << *v << ": expected WIDTHxHEIGHT, at least 200x150\n";
        return 2;
      }
      o.width = w;
      o.height = h;
    } else if (a == "--exit-after-ms") {
      auto v = value("a number of milliseconds");
      if (!v) return 2;
      char* end = nullptr;
      long ms = std::strtol(v->c_str(), &end, 10);
      if (!end || *end || ms < 0) {
        std::cerr << "mugv-monitor: --exit-after-ms " << *v << ": not a number of milliseconds\n";
        return 2;
      }
      o.exit_after_ms = ms;
    } else {
      std::cerr << "mugv-monitor: " << a << ": unknown option (see --help)\n";
      return 2;
    }
  }
  if (o.server.empty()) {
    std::cerr << "mugv-monitor: --server ENDPOINT is required (ipc://PATH or tcp://HOST:PORT)\n";
    return 2;
  }
  if (o.server.rfind("ipc://", 0) != 0 && o.server.rfind("tcp://", 0) != 0) {
    std::cerr << "mugv-monitor: --server " << o.server << ": not an ipc:// or tcp:// endpoint\n";
    return 2;
  }
  const bool tcp = o.server.rfind("tcp://", 0) == 0;
  if (!tcp && (o.server_key || o.client_key)) {
    std::cerr << "mugv-monitor: --server-key and --client-key are for tcp:// endpoints\n";
    return 2;
  }
  if (tcp && !o.server_key) {
    if (const char* env = std::getenv("MUGV_SERVER_KEY"); env && *env) o.server_key = env;
  }
  if (tcp && !o.server_key) {
    std::cerr
        << "mugv-monitor: --server " << o.server
        << ": tcp:// servers require CURVE: pass --server-key KEY (the server prints its public key when it "
           "starts; `mugv keys list` on the server shows it)\n";
    return 2;
  }
  if (o.screenshot && !o.exit_after_ms) o.exit_after_ms = 3000;  // a screenshot needs an end
  return std::nullopt;
}

// The network thread wakes the render loop through GLFW only while a window exists.
std::atomic<bool> g_glfw_ready{false};
std::string g_glfw_error;

void on_glfw_error(int code, const char* text) {
  g_glfw_error = std::to_string(code) + " " + (text ? text : "");
}

void write_screenshot(const fs::path& path, const mugv::RgbFrame& frame) {
  if (path.extension() == ".png") {
    mugv::write_png(path, frame);
    return;
  }
  std::ofstream out(path, std::ios::binary);
  out << "P6\n" << frame.width << " " << frame.height << "\n255\n";
  out.write(reinterpret_cast<const char*>(frame.rgb.data()), static_cast<std::streamsize>(frame.rgb.size()));
  if (!out) throw mugv::Error(mugv::ErrorCode::io, path.string(), "cannot write the screenshot");
}

// A readable proportional font when the system has one; ImGui's built-in bitmap font otherwise.
void load_font() {
  for (const char* f :
       {"/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf", "/usr/share/fonts/TTF/DejaVuSans.ttf"})
    if (fs::exists(f) && ImGui::GetIO().Fonts->AddFontFromFileTTF(f, 15.0f)) return;
}

int no_window() {
  const char* display = std::getenv("DISPLAY");
  std::cerr
      << "mugv-monitor: cannot open a window with OpenGL 3.0 (DISPLAY=" << (display ? display : "unset")
      << "): " << g_glfw_error << "\n"
      << "  over X forwarding without GLX 3.0, LIBGL_ALWAYS_SOFTWARE=1 renders on this machine instead\n";
  return 1;
}

// The CURVE credentials for a tcp:// server, as the `mugv --server` commands make them (throws mugv::Error
// naming the key or file).
std::optional<mugv::CurveClientKeys> curve_keys(const Options& o) {
  if (!o.server_key) return std::nullopt;
  mugv::CurveClientKeys keys;
  keys.server_public_key = mugv::public_key_from_text_or_file(*o.server_key, "--server-key");
  if (o.client_key) {
    keys.client = mugv::read_keypair(*o.client_key);
    return keys;
  }
  bool created = false;
  const fs::path dir = mugv::keys_dir(mugv::mugv_home());
  keys.client = mugv::load_or_create_keypair(dir, mugv::KeyRole::client, &created);
  if (created)
    std::cerr << "mugv-monitor: made a client key pair in "
              << mugv::secret_key_path(dir, mugv::KeyRole::client).string()
              << "; the server's owner authorises it with: mugv keys authorize " << keys.client.public_key
              << "\n";
  return keys;
}

int run(const Options& o) {
  std::optional<mugv::CurveClientKeys> curve;
  try {
    curve = curve_keys(o);
  } catch (const mugv::Error& e) {
    std::cerr << "mugv-monitor: " << e.what() << "\n";
    return 1;
  }
  mugv::monitor::Network network(o.server, std::chrono::milliseconds(3000), curve);
  try {
    network.connect([] {
      if (g_glfw_ready) glfwPostEmptyEvent();
    });
  } catch (const mugv::Error& e) {
    // The client's errors name the endpoint as their subject; say it once.
    std::cerr << "mugv-monitor: cannot attach to " << o.server << ": "
              << (e.subject() == o.server ? e.message() : e.what()) << "\n";
    return 1;
  } catch (const std::exception& e) {
    std::cerr << "mugv-monitor: cannot attach to " << o.server << ": " << e.what() << "\n";
    return 1;
  }

  glfwSetErrorCallback(on_glfw_error);
  if (!glfwInit()) return no_window();
  glfwWindowHint(GLFW_CONTEXT_VERSION_MAJOR, 3);
  glfwWindowHint(GLFW_CONTEXT_VERSION_MINOR, 0);
  GLFWwindow* window =
      glfwCreateWindow(o.width, o.height, ("mugv-monitor " + o.server).c_str(), nullptr, nullptr);
  if (!window) {
    int code = no_window();
    glfwTerminate();
    return code;
  }
  glfwMakeContextCurrent(window);
  glfwSwapInterval(0);  // the loop paces itself; waiting for vsync over X forwarding only adds latency
  IMGUI_CHECKVERSION();
  ImGui::CreateContext();
  ImGui::GetIO().IniFilename = nullptr;  // nothing to remember between runs; never write into the cwd
  ImGui::StyleColorsDark();
  load_font();
  ImGui_ImplGlfw_InitForOpenGL(window, true);
  ImGui_ImplOpenGL3_Init("#version 130");
  g_glfw_ready = true;

  int status = 0;
  int64_t selected = 0;
  nlohmann::json layout;
  {
    mugv::monitor::UiState ui;
    mugv::monitor::PreviewTexture preview;
    const auto start = Clock::now();
    auto last_frame = Clock::now() - 1s;
    const auto frame_interval = 50ms;  // at most ~20 frames per second, however busy input or network are
    while (!glfwWindowShouldClose(window)) {
      // Idle: sleep until input, a network change (glfwPostEmptyEvent) or a quarter second passes.
      double wait_s = 0.25;
      if (o.exit_after_ms) {
        auto left = std::chrono::milliseconds(*o.exit_after_ms) - (Clock::now() - start);
        wait_s = std::clamp(std::chrono::duration<double>(left).count(), 0.0, wait_s);
      }
      glfwWaitEventsTimeout(wait_s);
      if (auto since = Clock::now() - last_frame; since < frame_interval) {
        std::this_thread::sleep_for(frame_interval - since);
        glfwPollEvents();
      }
      last_frame = Clock::now();
      const bool last =
          o.exit_after_ms && Clock::now() - start >= std::chrono::milliseconds(*o.exit_after_ms);

      auto snapshot = network.snapshot(ui.selected);
      mugv::monitor::choose_selection(snapshot, ui);
      network.select(ui.selected);
      if (!snapshot.detail(ui.selected)) snapshot = network.snapshot(ui.selected);  // selection just changed

      ImGui_ImplOpenGL3_NewFrame();
      ImGui_ImplGlfw_NewFrame();
      ImGui::NewFrame();
      mugv::monitor::draw_monitor(snapshot, ui, preview);
      ImGui::Render();
      int fb_w = 0, fb_h = 0;
      glfwGetFramebufferSize(window, &fb_w, &fb_h);
      glViewport(0, 0, fb_w, fb_h);
      glClearColor(0.08f, 0.09f, 0.10f, 1.0f);
      glClear(GL_COLOR_BUFFER_BIT);
      ImGui_ImplOpenGL3_RenderDrawData(ImGui::GetDrawData());
      if (last) {
        if (o.screenshot) {
          try {
            write_screenshot(*o.screenshot, mugv::monitor::read_framebuffer(fb_w, fb_h));
          } catch (const std::exception& e) {
            std::cerr << "mugv-monitor: " << e.what() << "\n";
            status = 1;
          }
        }
        break;
      }
      glfwSwapBuffers(window);
    }
    selected = ui.selected;
    layout = ui.layout.to_json();
  }
  // The network thread may be waking the loop: stop it before GLFW goes away.
  network.stop();
  g_glfw_ready = false;
  ImGui_ImplOpenGL3_Shutdown();
  ImGui_ImplGlfw_Shutdown();
  ImGui::DestroyContext();
  glfwDestroyWindow(window);
  glfwTerminate();
  if (o.dump_state) {
    auto state = network.state_json();
    state["selected"] = selected;
    state["layout"] = layout;
    std::cout << state.dump(2) << "\n";
  }
  return status;
}

}  // namespace

int main(int argc, char** argv) {
  Options options;
  if (auto code = parse(argc, argv, options)) return *code;
  return run(options);
}
