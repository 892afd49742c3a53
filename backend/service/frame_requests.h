#pragma once
// Pictures for clients that cannot read the server's files: frames of a catalog clip, of a generated video,
// and of the videos a run rendered while training (and the list of those), as rgb24 blobs (protocol.h,
// clip_frames). Each call checks the request at once, on the server's thread: the catalog entry or run file
// exists and lies inside the server's roots (a catalog entry pointing elsewhere shows nothing), and a run's
// file name stays inside its run folder. It returns the rest — probing and decoding, seconds for 64 frames
// at 1024 px — as work for the server's reply pool, so that decoding never holds up other requests or the
// workers' heartbeats.
//
// Throws Error(not_found) naming the clip, generation or run that does not exist, Error(forbidden) for a
// file outside the roots, Error(invalid_argument) for a name that is not a run name; the work throws
// Error(corrupt) naming the file when no frame decodes. The returned work holds copies, not references to
// the catalog, and may run on any thread.

#include "catalog/catalog.h"
#include "core/path_confinement.h"
#include "service/protocol.h"
#include "service/reply_pool.h"

namespace mugv {

class FrameRequests {
 public:
  // `catalog` and `roots` must outlive this object (not the work it returns).
  FrameRequests(Catalog& catalog, const PathConfinement& roots);

  ReplyPool::Work on_clip_frames(const protocol::Message& m) const;
  ReplyPool::Work on_generation_frames(const protocol::Message& m) const;
  ReplyPool::Work on_list_run_samples(const protocol::Message& m) const;
  ReplyPool::Work on_run_sample_frames(const protocol::Message& m) const;

 private:
  Catalog& catalog_;
  const PathConfinement& roots_;
};

}  // namespace mugv
