#pragma once
// The MUG-V Studio wire protocol: the single source of truth for every message between clients (studio,
// monitor, CLI), the server and workers. ZeroMQ multipart messages:
//
//   [envelope frames added by ROUTER/DEALER ...] "MUGV" <version> <type> <json header> [binary frames ...]
//
// The header is a JSON object; binary payloads (preview frames, thumbnails) travel as raw frames after it,
// never inside JSON. Every message is checked before it is acted on: magic, version, known type, header
// size, JSON well-formed and an object, frame count and sizes, and then the header's fields against the
// type's schema (request_schema.h). A check that fails gives a ProtocolError that the server turns into an
// `error` reply; nothing malformed reaches a handler.
//
// Handshake: a peer's first message is `hello` {"role": "client"|"worker"|"monitor", "version": N,
// "capabilities": [...]}; the server answers `welcome` or an `error` with code "version_mismatch" naming
// both versions. Replies to requests are `ok` (payload in the header) or `error` {"code", "message"}.
//
// submit_job {"kind", "params", "priority", "executor", "depends_on": [job ids]} answers {"job"}: the queued
// job (service/job_json.h). depends_on (at most kMaxDependencies existing jobs; an unknown id is refused
// naming it) holds the job until those jobs have succeeded: it is listed with "waiting_on" and, while a
// dependency has failed or was interrupted or cancelled, "blocked_by" (catalog/jobs.h). Cancelling a job
// cancels its queued dependents, each announced by its own state event carrying "cancelled_by".
//
// clip_frames {"clip", "count" (1..64, default 1), "max_side" (16..1024, default 128)} answers
// {"clip", "width", "height", "fps", "format": "rgb24", "frames": n} with n rgb24 frames as binary frames:
// n <= count pictures evenly spread over the clip, the longer side scaled to max_side (count 1: the middle
// frame, a thumbnail). Clients that show a dataset's clips need no access to the server's files.
//
// generation_frames {"generation", "count", "max_side"} answers the same for a generated video.
// list_preferences {"limit"} answers {"pairs": [{"id", "prompt", "a", "b"} ...], "counts": {"pending",
// "preferred", "skipped", "good", "bad"}}: the pending preference pairs, oldest first (the labelling queue).
// label_preference {"id", "choice": a|b|skip} labels a pair as the person's ("human"); {"undo": true} clears
// the person's most recent label and answers its "id" and the "pair" as listed (catalog/preferences.h).
//
// list_commands {} answers {"commands": [{"command": ["generate"], "job_kind", "summary", "params": [spec
// ...]}]}: every command this server runs as a job with its parameters (core/param_schema.h: type, default,
// bounds, choices, help), so a client's forms take their limits and defaults from the commands themselves.
//
// check_machine {"quick" (default false: skip the GEMM measurements)} answers {"checks": [{"check", "status"
// (ok | note | warn | fail), "detail", "fix"?} ...], "warnings", "failures"}: `mugv doctor` on the server's
// machine (data folder, catalog, FFmpeg, ZeroMQ, Slurm, models, BLAS, GPUs, GEMM rates), which takes a few
// seconds (about one with "quick").
//
// list_run_samples {"run", "limit" (steps, 1..10000, default 100)} answers {"run", "samples": [{"step",
// "file", "size", "prompt", "seed", "width", "height", "frames", "fps"} ...]}: the videos the run rendered
// while training (train/run_samples.h), newest step first, with what each file's metadata says (a file that
// cannot be read has "error" instead). run_sample_frames {"run", "step", "file", "count", "max_side"}
// answers like generation_frames, with "run", "step" and "file". The run is named by its run name and the
// file by its name alone; a file outside the run's folder (a symlink out of it) is refused ("forbidden").
//
// A worker's hello and heartbeats carry "token", the secret of its job's current attempt (job_files.h); a
// wrong or missing one is answered with the error code "superseded".
//
// get_job {"job", "after_event" (default 0), "limit" (1..10000, default 1000), "types": [...]} answers
// {"job", "events", "more", "next_after"}: one page of the job's stored events, oldest first, of at most
// ~256 KiB, so a long training run's events are read page by page (client.h, get_job_with_events).
// job_logs {"job", "tail_lines"} answers {"job", "text", "truncated"}: at most the last 128 KiB.
// Thread-safety: all functions are pure.

#include <nlohmann/json.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

namespace mugv::protocol {

inline constexpr int kVersion = 1;
inline constexpr std::string_view kMagic = "MUGV";
inline constexpr size_t kMaxHeaderBytes = 1u << 20;  // 1 MiB of JSON
inline constexpr size_t kMaxBlobBytes = 64u << 20;   // one preview or thumbnail frame
inline constexpr size_t kMaxBlobs = 64;
inline constexpr size_t kMaxMessageBytes = 256u << 20;  // everything after the envelope
// Arrays and objects nested in a header: requests need a handful; a deep one would cost recursion later (a
// copy of the parsed value), so it is refused before it is parsed.
inline constexpr size_t kMaxHeaderDepth = 64;
inline constexpr size_t kMaxDependencies = 64;  // jobs one submitted job may depend on

enum class MessageType {
  unknown = 0,
  // handshake and replies
  hello,
  welcome,
  ok,
  error,
  // client -> server requests
  submit_job,
  cancel_job,
  pause_job,
  resume_job,
  retry_job,
  reorder_job,
  list_jobs,
  get_job,
  job_logs,
  list_runs,
  list_datasets,
  list_clips,
  clip_frames,
  edit_caption,
  list_prompts,
  save_prompt,
  list_generations,
  generation_frames,
  list_preferences,
  label_preference,
  list_run_samples,
  run_sample_frames,
  sample_now,
  save_now,
  list_clusters,
  list_models,
  list_presets,
  list_commands,
  check_machine,
  shutdown,
  // worker -> server
  heartbeat,
  progress,
  metrics,
  log_line,
  preview,
  job_finished,
  // server -> worker
  control,
  // server -> subscribers (PUB)
  event,
};

const char* to_string(MessageType type);
std::optional<MessageType> message_type_from_string(std::string_view name);
// Requests a client may send (each has a schema and gets exactly one reply).
bool is_client_request(MessageType type);

struct Message {
  MessageType type = MessageType::unknown;
  nlohmann::json header = nlohmann::json::object();
  std::vector<std::string> blobs;
};

// Why a message was refused; `code` is what the error reply carries.
enum class ProtocolErrorCode {
  unknown = 0,
  bad_magic,         // not our protocol at all
  version_mismatch,  // our protocol, another version
  unknown_type,
  malformed,        // wrong frame count, bad JSON, header not an object
  too_large,        // a frame or the whole message over the limits
  invalid_request,  // well-formed but the fields do not match the type's schema
};
const char* to_string(ProtocolErrorCode code);
std::optional<ProtocolErrorCode> protocol_error_code_from_string(std::string_view name);

struct ProtocolError {
  ProtocolErrorCode code = ProtocolErrorCode::unknown;
  std::string message;  // for a person: "header field \"job\": expected a positive integer"
};

// The frames of `message` after the envelope. Never fails for a Message built by our code.
std::vector<std::string> encode(const Message& message);
// Checks and parses the frames after the envelope (schema validation included).
std::variant<Message, ProtocolError> decode(const std::vector<std::string_view>& frames);

// Convenience constructors for replies.
Message make_ok(nlohmann::json payload = nlohmann::json::object());
Message make_error(std::string code, std::string message);
Message make_error(const ProtocolError& error);

}  // namespace mugv::protocol
