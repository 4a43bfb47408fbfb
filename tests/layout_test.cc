// The file format: pinned layout, refusal of anything that is not a cache file
// of this layout, the read-only mapping, and the writer's file lifecycle.
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/shm.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstring>
#include <fstream>
#include <iterator>

#define XXH_INLINE_ALL
#include <xxhash.h>

#include "reader.h"
#include "support/test_cache.h"
#include "tenantcache/tenantcache.h"

namespace tenantcache {
namespace {

using layout::FileHeader;

std::string ReadAll(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(f), {});
}

void WriteAll(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
}

class LayoutTest : public ::testing::Test {
 protected:
  void SetUp() override {
    options_ = test::FleetOptions(dir_.File("cache"));
    writer_ = test::OpenSynced(options_);
    image_ = ReadAll(options_.path);
  }
  // Opens a modified copy of the cache file.
  int OpenModified(const std::function<void(std::string&)>& change) {
    std::string copy = image_;
    change(copy);
    const std::string p = dir_.File("modified");
    WriteAll(p, copy);
    tc_cache* c = nullptr;
    const int rc = tc_cache_open(p.c_str(), &c);
    tc_cache_close(c);
    return rc;
  }
  FileHeader* Header(std::string& s) { return reinterpret_cast<FileHeader*>(s.data()); }

  test::TempDir dir_;
  CacheOptions options_;
  std::unique_ptr<CacheWriter> writer_;
  std::string image_;
};

TEST_F(LayoutTest, HeaderIsPinnedAndDescribesTheFile) {
  ASSERT_GE(image_.size(), sizeof(FileHeader));
  const auto* h = reinterpret_cast<const FileHeader*>(image_.data());
  EXPECT_EQ(std::memcmp(h->magic, "TNTCACHE", 8), 0);
  EXPECT_EQ(h->layout_version, layout::kLayoutVersion);
  EXPECT_EQ(h->header_size, 4096u);
  EXPECT_EQ(h->fingerprint, layout::Fingerprint());
  EXPECT_EQ(h->file_size, image_.size());
  EXPECT_EQ(h->slot_size, layout::kDefaultSlotSize);
  EXPECT_EQ(h->namespaces_offset, 4096u);
  EXPECT_EQ(h->tenant_gens_offset, 4096u + 32 * 2048);
  EXPECT_EQ(h->tags_offset, h->tenant_gens_offset + h->tenant_gen_count * 8);
  EXPECT_EQ(h->slots_offset % 64, 0u);
  EXPECT_EQ(h->file_size, h->slots_offset + h->bucket_count * 8 * h->slot_size);
  EXPECT_EQ(h->namespace_count, 5u);
  EXPECT_NE(h->hash_seed, 0u);
  EXPECT_STREQ(h->control_socket, options_.control_socket.c_str());
  EXPECT_EQ(ValidateLayout(image_.data(), image_.size()), nullptr);
  EXPECT_EQ(tc_layout_version(), layout::kLayoutVersion);
  EXPECT_STREQ(tc_version(), "0.1.0");
}

// Home slots (cache_layout.h): readers fetch a key's home slot while its tag
// row is on the way, which only pays if the writer puts keys there. At a low
// load almost every key finds its home slot free.
TEST_F(LayoutTest, KeysGoToTheirHomeSlotWhenItIsFree) {
  auto opts = test::FleetOptions(dir_.File("homes"), 64 * 1024);
  auto w = test::OpenSynced(opts);
  constexpr int kKeys = 2000;
  for (int i = 0; i < kKeys; ++i)
    ASSERT_EQ(w->Put(0, test::Uuid(i), EntryData{"t1", {"YACHT1", "https://y.example.com", "crew"}}, 0,
                     w->BeginFill()),
              PutResult::kStored);
  const std::string image = ReadAll(opts.path);
  const auto* h = reinterpret_cast<const FileHeader*>(image.data());
  const auto* tags = reinterpret_cast<const layout::BucketTags*>(image.data() + h->tags_offset);
  tc_cache* c = nullptr;
  tc_ns user = 0;
  ASSERT_EQ(tc_cache_open(opts.path.c_str(), &c), 0);
  ASSERT_EQ(tc_namespace(c, "user", &user), 0);
  int home = 0;
  for (int i = 0; i < kKeys; ++i) {
    const std::string key = test::Uuid(i);
    const uint64_t hash =
        XXH3_64bits_withSeed(key.data(), key.size(), layout::NamespaceSeed(h->hash_seed, 0));
    const auto& row = tags[layout::BucketIndex(hash, h->bucket_count)];
    home += row.tag[layout::HomeSlot(hash)].load() == layout::TagOf(hash) ? 1 : 0;
    tc_value v;
    EXPECT_EQ(tc_cache_get(c, user, key.data(), key.size(), &v), TC_FOUND) << key;
  }
  tc_cache_close(c);
  // 2000 keys in 8192 buckets: about 1% share a bucket and a home slot.
  EXPECT_GE(home, kKeys * 95 / 100);
}

TEST_F(LayoutTest, HashSeedIsRandomPerFile) {
  test::TempDir other;
  auto w = CacheWriter::Open(test::FleetOptions(other.File("cache")));
  const std::string second = ReadAll(other.File("cache"));
  EXPECT_NE(reinterpret_cast<const FileHeader*>(second.data())->hash_seed,
            reinterpret_cast<const FileHeader*>(image_.data())->hash_seed);
}

TEST_F(LayoutTest, RefusesWhatIsNotACacheFileOfThisLayout) {
  EXPECT_EQ(OpenModified([](std::string& s) { s[0] = 'X'; }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) { Header(s)->layout_version = layout::kLayoutVersion + 1; }),
            TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) { Header(s)->fingerprint ^= 1; }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([](std::string& s) { s.resize(s.size() - 64); }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([](std::string& s) { s.resize(100); }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([](std::string& s) { s.clear(); }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) { Header(s)->bucket_count += 1; }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) { Header(s)->slot_size = 100; }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) { Header(s)->namespace_count = 99; }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) { Header(s)->tenant_gen_count = 1000; }), TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([&](std::string& s) {
              std::memset(s.data() + Header(s)->namespaces_offset, 'a', layout::kNameMax);
            }),
            TC_E_LAYOUT);
  EXPECT_EQ(OpenModified([](std::string&) {}), 0);

  tc_cache* c = nullptr;
  errno = 0;
  EXPECT_EQ(tc_cache_open(dir_.File("absent").c_str(), &c), TC_E_IO);
  EXPECT_EQ(errno, ENOENT);
  EXPECT_EQ(tc_cache_open(dir_.path().c_str(), &c), TC_E_LAYOUT);
  EXPECT_EQ(tc_cache_open(nullptr, &c), TC_E_INVALID_ARG);
  EXPECT_STRNE(tc_strerror(TC_E_LAYOUT), tc_strerror(TC_E_IO));
  EXPECT_STREQ(tc_strerror(12345), "unknown status");
}

TEST_F(LayoutTest, WorkersMapTheFileReadOnly) {
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(options_.path.c_str(), &c), 0);
  // A buggy worker writing through the mapping faults instead of corrupting
  // what every other worker reads.
  auto write_through_mapping = [c] {
    const_cast<volatile unsigned char*>(c->current.load()->base)[200] = 1;
    std::exit(0);
  };
#if defined(__SANITIZE_ADDRESS__)
  // AddressSanitizer catches the fault and reports it before dying.
  EXPECT_DEATH(write_through_mapping(), "SEGV on unknown address");
#else
  EXPECT_EXIT(write_through_mapping(), ::testing::KilledBySignal(SIGSEGV), "");
#endif
  tc_cache_close(c);
}

TEST_F(LayoutTest, FilesGetTheConfiguredModeAndTheRecencySegmentIsGroupWritable) {
  struct stat st, lst;
  ASSERT_EQ(stat(options_.path.c_str(), &st), 0);
  ASSERT_EQ(stat((options_.path + ".lock").c_str(), &lst), 0);
  EXPECT_EQ(st.st_mode & 07777, 0640u);
  EXPECT_EQ(lst.st_mode & 07777, 0600u);
  EXPECT_NE(access((options_.path + ".recency").c_str(), F_OK), 0) << "recency is no longer a file";
  shmid_ds ds{};
  ASSERT_EQ(shmctl(writer_->recency_shmid(), IPC_STAT, &ds), 0);
  EXPECT_EQ(ds.shm_perm.mode & 0777, 0660u) << "the group that reads the cache records its hits";
  EXPECT_EQ(ds.shm_perm.uid, geteuid());
  EXPECT_EQ(ds.shm_perm.gid, st.st_gid);
  EXPECT_EQ(ds.shm_segsz, writer_->recency_bytes());
  EXPECT_NE(ds.shm_perm.mode & SHM_DEST, 0u) << "marked for removal: it cannot outlive its last user";
}

TEST_F(LayoutTest, RestartWithTheSameGeometryReusesTheFileAndBumpsTheEpoch) {
  tc_cache* c = nullptr;
  ASSERT_EQ(tc_cache_open(options_.path.c_str(), &c), 0);
  ASSERT_EQ(
      writer_->Put(0, test::Uuid(1), EntryData{test::Uuid(2), {"A", "u", "r"}}, 0, writer_->BeginFill()),
      PutResult::kStored);
  const uint64_t epoch = writer_->epoch();
  writer_.reset();
  auto again = CacheWriter::Open(options_);
  EXPECT_TRUE(again->reused());
  EXPECT_EQ(again->epoch(), epoch + 1);
  EXPECT_EQ(again->stats().entries, 1u);
  tc_info info;
  ASSERT_EQ(tc_cache_info(c, &info), 0);
  EXPECT_EQ(info.synced, 0) << "a restarted daemon starts unsynced";
  again->Heartbeat();
  again->SetSynced(true);
  tc_value v;
  const std::string k = test::Uuid(1);
  EXPECT_EQ(tc_cache_get(c, 0, k.data(), k.size(), &v), TC_MISS)
      << "entries from before the restart are not served";
  tc_cache_close(c);
}

TEST_F(LayoutTest, ChangedGeometryReplacesTheFileAndAnOpenHandleFollowsIt) {
  tc_cache* handle = nullptr;
  ASSERT_EQ(tc_cache_open(options_.path.c_str(), &handle), 0);
  tc_cache* old_view = nullptr;  // the old file alone, to see that it was retired
  {
    const std::string pinned = dir_.File("old-file");
    ASSERT_EQ(link(options_.path.c_str(), pinned.c_str()), 0);
    ASSERT_EQ(tc_cache_open(pinned.c_str(), &old_view), 0);
    unlink(pinned.c_str());
  }
  writer_.reset();
  auto opts = options_;
  opts.capacity = 5000;
  auto w = test::OpenSynced(opts);
  EXPECT_FALSE(w->reused());
  tc_value v;
  const std::string k = test::Uuid(1);
  tc_info info;
  ASSERT_EQ(tc_cache_info(old_view, &info), 0);
  EXPECT_EQ(info.retired, 1) << "readers of the old file are told it was replaced";
  EXPECT_EQ(tc_cache_get(old_view, 0, k.data(), k.size(), &v), TC_E_UNAVAILABLE)
      << "its path holds nothing newer, so that handle stays unavailable";
  tc_cache_close(old_view);
  EXPECT_EQ(tc_cache_get(handle, 0, k.data(), k.size(), &v), TC_MISS)
      << "the read that finds the file retired moves the handle to the new one";
  ASSERT_EQ(tc_cache_info(handle, &info), 0);
  EXPECT_EQ(info.capacity, 5000u);
  EXPECT_EQ(info.retired, 0);
  EXPECT_EQ(info.available, 1);
  tc_cache_close(handle);
}

TEST_F(LayoutTest, ASecondWriterOnTheSamePathIsRefused) {
  try {
    (void)CacheWriter::Open(options_);
    FAIL() << "a second writer opened the file";
  } catch (const CacheError& e) {
    EXPECT_NE(std::string(e.what()).find("another process"), std::string::npos) << e.what();
  }
}

TEST_F(LayoutTest, BadOptionsAreRefusedWithAReason) {
  auto expect_error = [&](const std::function<void(CacheOptions&)>& change, const std::string& want) {
    test::TempDir d;
    auto o = test::FleetOptions(d.File("c"));
    change(o);
    try {
      (void)CacheWriter::Open(o);
      ADD_FAILURE() << "accepted options; wanted: " << want;
    } catch (const CacheError& e) {
      EXPECT_NE(std::string(e.what()).find(want), std::string::npos) << e.what();
    }
  };
  expect_error([](CacheOptions& o) { o.capacity = 0; }, "capacity");
  expect_error([](CacheOptions& o) { o.slot_size = 300; }, "slot size");
  expect_error([](CacheOptions& o) { o.namespaces.clear(); }, "namespaces");
  expect_error([](CacheOptions& o) { o.namespaces[1].name = "user"; }, "defined twice");
  expect_error([](CacheOptions& o) { o.namespaces[0].name = "Bad Name"; }, "must be 1-63");
  expect_error([](CacheOptions& o) { o.namespaces[0].key_kind = 42; }, "key kind");
  expect_error([](CacheOptions& o) { o.namespaces[0].fields.assign(31, "f"); }, "more than 30");
  expect_error([](CacheOptions& o) { o.namespaces[0].fields = {"a", "a"}; }, "twice");
  expect_error([](CacheOptions& o) { o.control_socket = std::string(200, 's'); }, "107 bytes");
  expect_error([](CacheOptions& o) { o.path = "/nonexistent-dir/cache"; }, "No such file");
}

}  // namespace
}  // namespace tenantcache
