#include "core/error.h"
#include "core/hash.h"
#include "support/test_support.h"

#include <catch2/catch.hpp>

#include <fstream>

using namespace mugv;

TEST_CASE("sha256 matches the FIPS 180-2 test vectors", "[unit][core]") {
  CHECK(sha256_hex("abc") == "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
  CHECK(sha256_hex("") == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
  CHECK(sha256_hex("abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq") ==
        "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");

  Sha256 incremental;
  incremental.update("ab");
  incremental.update("c");
  CHECK(incremental.finish_hex() == sha256_hex("abc"));
  CHECK_THROWS_AS(incremental.update("x"), Error);
}

TEST_CASE("file hashes stream the whole file; content hash samples the ends", "[unit][core]") {
  test::TempDir dir;
  // One million 'a' is the third FIPS vector; it also spans the 1 MiB read chunk boundary logic.
  std::string million(1000000, 'a');
  test::write_bytes(dir / "m.bin", million);
  CHECK(sha256_file(dir / "m.bin") == "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");

  // 9 MiB + 3 bytes: larger than the two 4 MiB edges, so the middle is not read.
  std::string big((9u << 20) + 3, '\0');
  for (size_t i = 0; i < big.size(); ++i) big[i] = static_cast<char>((i * 131) >> 7);
  test::write_bytes(dir / "big.bin", big);
  std::string content = content_hash_of_file(dir / "big.bin");
  CHECK(content.size() == 64);
  CHECK(sha256_file(dir / "big.bin") == sha256_hex(big));

  std::string middle_changed = big;
  middle_changed[(4u << 20) + 100] ^= 1;
  test::write_bytes(dir / "mid.bin", middle_changed);
  CHECK(content_hash_of_file(dir / "mid.bin") == content);  // documented blind spot
  CHECK(sha256_file(dir / "mid.bin") != sha256_file(dir / "big.bin"));

  std::string tail_changed = big;
  tail_changed[big.size() - 1] ^= 1;
  test::write_bytes(dir / "tail.bin", tail_changed);
  CHECK(content_hash_of_file(dir / "tail.bin") != content);

  test::write_bytes(dir / "longer.bin", big + "x");
  CHECK(content_hash_of_file(dir / "longer.bin") != content);

  // Small files are hashed whole, so any change shows.
  test::write_bytes(dir / "small.bin", million);
  std::string small = content_hash_of_file(dir / "small.bin");
  million[500000] = 'b';
  test::write_bytes(dir / "small.bin", million);
  CHECK(content_hash_of_file(dir / "small.bin") != small);

  try {
    (void)sha256_file(dir / "missing.bin");
    FAIL("expected not_found");
  } catch (const Error& e) {
    CHECK(e.code() == ErrorCode::not_found);
    CHECK(e.subject() == (dir / "missing.bin").string());
  }
}
