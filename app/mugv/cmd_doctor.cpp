// mugv doctor [--json]: checks what this machine gives MUG-V Studio, each finding with its fix: the data
// folder (writable, room), the catalog (opens; like any command, opening applies pending migrations), FFmpeg
// (an encoder for every export format), ZeroMQ (CURVE for tcp:// servers), Slurm's client programs, and in
// builds with LibTorch the BLAS it calls (Debian's reference BLAS is ~13x slower than OpenBLAS,
// docs/DESIGN.md), its threads, GPUs and measured GEMM rates. Exit 1 when a finding is a failure (the studio
// or training cannot work as it is), 0 otherwise; warnings cost speed or a feature.
#include "command.h"

#include "catalog/catalog.h"
#include "core/error.h"
#include "core/paths.h"
#include "core/strings.h"
#include "core/system_info.h"
#include "media/encoder.h"
#include "model/release_files.h"
#include "service/zmq_io.h"
#ifdef MUGV_WITH_TORCH
#include "model/compute_facts.h"
#endif

#include <nlohmann/json.hpp>

#include <unistd.h>

#include <cstdio>
#include <fstream>
#include <iostream>

namespace mugv::cli {
namespace {

enum class Status { ok, note, warn, fail };

const char* to_string(Status s) {
  switch (s) {
    case Status::ok:
      return "ok";
    case Status::note:
      return "note";
    case Status::warn:
      return "warn";
    case Status::fail:
      return "fail";
  }
  return "fail";
}

struct Finding {
  std::string check;
  Status status = Status::ok;
  std::string detail;
  std::string fix;  // what to do about a warning or failure
};

constexpr int64_t kGiB = int64_t(1) << 30;
// Below this much free space in the data folder, a run's checkpoints and latent caches soon fill it.
constexpr int64_t kLowDiskBytes = 10 * kGiB;

std::string joined(const std::vector<std::string>& parts, const char* separator) {
  std::string out;
  for (size_t i = 0; i < parts.size(); ++i) out += (i ? separator : "") + parts[i];
  return out;
}

Finding check_home() {
  const fs::path home = mugv_home();
  std::error_code ec;
  fs::create_directories(home, ec);
  if (ec || !fs::is_directory(home, ec))
    return {"home", Status::fail, cat(home.string(), ": cannot be made a folder (", ec.message(), ")"),
            "set MUGV_HOME to a folder you can write"};
  const fs::path probe = home / cat(".doctor-", getpid());
  {
    std::ofstream out(probe);
    out << "probe";
    if (!out.flush())
      return {"home", Status::fail, cat(home.string(), ": not writable"),
              "set MUGV_HOME to a folder you can write, or fix its permissions"};
  }
  fs::remove(probe, ec);
  const auto free = free_disk_bytes(home);
  const std::string room = free ? cat(", ", human_bytes(double(*free)), " free") : "";
  if (free && *free < kLowDiskBytes)
    return {"home", Status::warn, cat(home.string(), ": writable", room),
            cat("free space or move MUGV_HOME: checkpoints and latent caches need more than ",
                human_bytes(double(kLowDiskBytes)))};
  return {"home", Status::ok, cat(home.string(), ": writable", room), ""};
}

Finding check_catalog() {
  const fs::path file = catalog_path();
  std::error_code ec;
  const std::string sqlite = cat("SQLite ", sqlite::library_version());
  if (!fs::exists(file, ec))
    return {"catalog", Status::ok, cat(sqlite, "; made on first use at ", file.string()), ""};
  try {
    Catalog catalog = Catalog::open(file);
    return {"catalog", Status::ok, cat(sqlite, "; ", file.string(), " opens"), ""};
  } catch (const Error& e) {
    return {"catalog", Status::fail, cat(sqlite, "; ", e.what()),
            "restore the catalog from a backup, or move it aside to start a new one"};
  }
}

Finding check_ffmpeg() {
  std::vector<std::string> writes, missing;
  for (const EncoderSupport& s : encoder_support())
    (s.available ? writes : missing).push_back(cat(to_string(s.format), " (", s.encoder, ")"));
  const std::string detail = cat(ffmpeg_library_versions(), "; writes ", joined(writes, ", "));
  if (!missing.empty())
    return {"ffmpeg", Status::warn, cat(detail, "; cannot write ", joined(missing, ", ")),
            "use an FFmpeg built with those encoders (Debian: libavcodec-extra)"};
  return {"ffmpeg", Status::ok, detail, ""};
}

Finding check_zeromq() {
  const std::string version = cat("ZeroMQ ", protocol::zeromq_version());
  if (!protocol::zeromq_has_curve())
    return {"zeromq", Status::warn,
            cat(version, " without CURVE: a tcp:// server, which always encrypts and authenticates with it, ",
                "cannot start here (ipc:// endpoints work)"),
            "install a libzmq built with libsodium (Debian's libzmq5 is)"};
  return {"zeromq", Status::ok, cat(version, " with CURVE (encrypted, authenticated tcp:// servers)"), ""};
}

Finding check_slurm() {
  std::vector<std::string> found, absent;
  for (const char* program : {"sbatch", "squeue", "scontrol", "scancel"}) {
    if (auto path = find_program(program))
      found.push_back(path->string());
    else
      absent.push_back(program);
  }
  if (absent.empty()) return {"slurm", Status::ok, cat("client programs ", joined(found, ", ")), ""};
  return {
      "slurm", Status::note,
      cat("no ", joined(absent, ", "),
          " on PATH: the built-in cluster profile (this machine's Slurm) cannot submit; a profile with an ",
          "ssh_host runs them on its login node"),
      "for Slurm runs from this machine install the Slurm client (Debian: slurm-client) and its munge key"};
}

Finding check_models() {
  const auto models = list_installed_models(models_dir());
  std::vector<std::string> complete, incomplete;
  for (const InstalledModel& m : models)
    (m.problem.empty() && m.preset ? complete : incomplete).push_back(m.name);
  if (models.empty())
    return {"models", Status::note, cat("no released model under ", models_dir().string()),
            "to fine-tune or sample MUG-V, put its folder (dit.pt, vae.pt, T5) there"};
  if (!incomplete.empty())
    return {"models", Status::warn,
            cat(complete.size(), " usable (", joined(complete, ", "),
                "); incomplete: ", joined(incomplete, ", ")),
            "`mugv model list` says what each incomplete folder lacks"};
  return {"models", Status::ok, cat(complete.size(), " usable: ", joined(complete, ", ")), ""};
}

#ifdef MUGV_WITH_TORCH
// A rate with one decimal: "84.2".
std::string one_decimal(double value) {
  char text[32];
  std::snprintf(text, sizeof text, "%.1f", value);
  return text;
}

// Which BLAS LibTorch's CPU matrix products go to, from the libraries mapped into this process (Debian's
// libblas.so.3 is an alternative that resolves to OpenBLAS or the reference implementation).
Finding check_blas() {
  std::optional<fs::path> blas;
  for (const fs::path& lib : mapped_libraries()) {
    const std::string name = lib.filename().string();
    if (starts_with(name, "libblas.so") || starts_with(name, "libopenblas") ||
        starts_with(name, "libmkl_rt") || starts_with(name, "libblis")) {
      blas = lib;
      if (starts_with(name, "libblas.so")) break;  // the one LibTorch links; others are what it resolves to
    }
  }
  if (!blas)
    return {"blas", Status::ok, "LibTorch's own (no shared BLAS loaded: MKL in the official builds)", ""};
  const std::string path = blas->string();
  if (path.find("openblas") != std::string::npos) return {"blas", Status::ok, cat("OpenBLAS: ", path), ""};
  if (path.find("mkl") != std::string::npos || path.find("blis") != std::string::npos)
    return {"blas", Status::ok, path, ""};
  return {"blas", Status::warn, cat("the reference BLAS: ", path, " (about 13x slower than OpenBLAS)"),
          "install libopenblas0-openmp (Debian), which becomes libblas.so.3"};
}

// The fused operations of the attention's q/k path (model/fused_ops.h): on GPUs they save a dozen
// memory-bound passes each way per block, so a CUDA build without their kernels is worth a warning.
Finding check_fused(const ComputeFacts& f) {
  const std::string what = "the attention's q/k RMSNorm and RoPE";
  if (!f.fused_enabled)
    return {"fused", Status::note,
            cat("fused operations off (MUGV_FUSED_KERNELS=0): ", what, " run as unfused ops"),
            "unset MUGV_FUSED_KERNELS for the fused ones"};
  if (f.cuda_built && !f.cuda_kernels_built)
    return {"fused", Status::warn,
            cat("no fused CUDA kernels in this build (no nvcc when it was configured): on GPUs ", what,
                " run as a dozen unfused ops each way"),
            "install the CUDA toolkit (nvcc) and configure again (README, \"Building for a GPU machine\")"};
  return {
      "fused", Status::ok,
      cat(what, " fused: ", f.cuda_kernels_built ? "CUDA kernels and CPU loops" : "CPU loops (no CUDA here)"),
      ""};
}

std::vector<Finding> check_compute(bool measure) {
  const ComputeFacts f = measure_compute_facts(measure);
  std::vector<Finding> findings;
  const std::string gemm = measure
                               ? cat("fp32 GEMM ", one_decimal(f.cpu_fp32_gemm_flops / 1e9), " GFLOP/s on ")
                               : std::string("GEMM not measured (--quick); ");
  findings.push_back(
      {"cpu", Status::ok,
       cat("LibTorch ", f.torch_version, "; ", gemm, f.threads, " threads (training's default: every core)"),
       ""});
  if (!f.cuda_built) {
    findings.push_back(
        {"gpu", Status::note, "this build runs on CPUs only (its LibTorch has no CUDA)",
         "for GPUs build against a CUDA LibTorch 2.x (README, \"Building for a GPU machine\")"});
  } else if (f.gpus_visible == 0) {
    findings.push_back({"gpu", Status::warn, "built with CUDA and NCCL, but no GPU is visible",
                        "check the NVIDIA driver (nvidia-smi) and CUDA_VISIBLE_DEVICES"});
  } else {
    findings.push_back(
        {"gpu", Status::ok,
         cat(f.gpus_visible, " visible", f.gpus.empty() ? "" : " (" + joined(f.gpus, "; ") + ")",
             ", NCCL built in",
             measure ? cat("; bf16 GEMM ", one_decimal(f.gpu_bf16_gemm_flops / 1e12), " TFLOP/s on the first")
                     : std::string()),
         ""});
  }
  findings.push_back(check_fused(f));
  return findings;
}
#endif

std::vector<Finding> run_checks(bool measure) {
  std::vector<Finding> findings = {check_home(),   check_catalog(), check_ffmpeg(),
                                   check_zeromq(), check_slurm(),   check_models()};
#ifdef MUGV_WITH_TORCH
  findings.push_back(check_blas());
  for (Finding& f : check_compute(measure)) findings.push_back(std::move(f));
#else
  (void)measure;
  findings.push_back({"compute", Status::note,
                      "this build has no LibTorch: curation and the studio, no training",
                      "build with LibTorch (scripts/install-deps.sh installs Debian's libtorch-dev)"});
#endif
  return findings;
}

int run(const Invocation& inv) {
  const nlohmann::json report = doctor_report(!inv.values.get_bool("doctor.quick"));
  if (inv.json)
    std::cout << report.dump(2) << "\n";
  else
    print_doctor_report(report);
  return report.value("failures", 0) > 0 ? 1 : 0;
}

}  // namespace

nlohmann::json doctor_report(bool measure) {
  const std::vector<Finding> findings = run_checks(measure);
  int warnings = 0, failures = 0;
  nlohmann::json checks = nlohmann::json::array();
  for (const Finding& f : findings) {
    warnings += f.status == Status::warn;
    failures += f.status == Status::fail;
    nlohmann::json j = {{"check", f.check}, {"status", to_string(f.status)}, {"detail", f.detail}};
    if (!f.fix.empty()) j["fix"] = f.fix;
    checks.push_back(std::move(j));
  }
  return {{"checks", checks}, {"warnings", warnings}, {"failures", failures}};
}

void print_doctor_report(const nlohmann::json& report) {
  for (const auto& c : report.value("checks", nlohmann::json::array())) {
    const std::string status = c.value("status", ""), fix = c.value("fix", "");
    std::printf("%-5s %-8s %s\n", status.c_str(), c.value("check", "").c_str(),
                c.value("detail", "").c_str());
    if (!fix.empty() && status != "ok") std::printf("%-14s fix: %s\n", "", fix.c_str());
  }
  const int warnings = report.value("warnings", 0), failures = report.value("failures", 0);
  std::printf("%d warning%s, %d failure%s\n", warnings, warnings == 1 ? "" : "s", failures,
              failures == 1 ? "" : "s");
}

Command doctor_command() {
  Command c;
  c.words = {"doctor"};
  c.summary = "check this machine for MUG-V Studio: data folder, catalog, FFmpeg, ZeroMQ, Slurm, BLAS, GPUs";
  c.usage = "[--quick] [--json]";
  c.define = [](ParamRegistry& r) {
    r.add(param("doctor.quick", "--quick", ParamType::boolean, false,
                "skip the GEMM measurements (what the studio asks when it connects)", "doctor"));
  };
  c.run = run;
  return c;
}

}  // namespace mugv::cli
