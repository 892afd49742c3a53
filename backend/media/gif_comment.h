#pragma once
// Internal to backend/media: GIF Comment Extension blocks. FFmpeg's gif muxer writes none and its demuxer
// reads none, so the encoder inserts one (JSON of the metadata) and probe() reads it back here.

#include <filesystem>
#include <map>
#include <string>
#include <vector>

namespace mugv::gif {

// Returns `gif` with a Comment Extension holding `text` inserted right after the header and global colour
// table (upgrading a GIF87a signature to GIF89a). Throws Error(format) when `gif` is not a GIF stream.
std::string insert_comment(const std::string& gif, const std::string& text, const std::string& subject);

// All comment texts in `gif`, in file order; empty when there are none or the stream is not a GIF.
std::vector<std::string> read_comments(const std::string& gif);

// Metadata keys from comments: a comment that is a JSON object of strings contributes its keys, any other
// comment becomes "comment".
std::map<std::string, std::string> metadata_from_comments(const std::vector<std::string>& comments);

}  // namespace mugv::gif
