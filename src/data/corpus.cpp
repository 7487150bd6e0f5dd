#include "data/corpus.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <climits>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fstream>
#include <sstream>

#include "core/error.h"
#include "data/data_folder.h"
#include "data/shards.h"
#include "data/tokenizer.h"
#include "io/atomic_file.h"
#include "io/digest.h"

namespace moepp {

void check_utf8(const std::string& s, const std::string& source) {
  size_t i = 0;
  while (i < s.size()) {
    const unsigned char c = static_cast<unsigned char>(s[i]);
    int len = c < 0x80 ? 1 : (c >> 5) == 0x6 ? 2 : (c >> 4) == 0xe ? 3 : (c >> 3) == 0x1e ? 4 : 0;
    MOEPP_CHECK(len > 0 && i + size_t(len) <= s.size(), source, ": invalid UTF-8 at byte ", i);
    for (int k = 1; k < len; ++k)
      MOEPP_CHECK((static_cast<unsigned char>(s[i + size_t(k)]) >> 6) == 0x2, source, ": invalid UTF-8 at byte ", i);
    i += size_t(len);
  }
}

namespace {

bool all_digits(const std::string& s) { return !s.empty() && s.find_first_not_of("0123456789") == std::string::npos; }

}  // namespace

bool prepare_owns_file_name(const std::string& name) {
  for (const std::string out : {"tokenizer.model", "train.bin", "val.bin", "data.json"}) {
    if (name == out) return true;
    // write_file_atomic's temporary: "<name>.tmp-<pid>"
    if (name.rfind(out + ".tmp-", 0) == 0 && all_digits(name.substr(out.size() + 5))) return true;
  }
  return name == "tokenizer.tmp.model" || name == "tokenizer.tmp.vocab";
}

namespace {

std::string errno_text() { return std::strerror(errno); }

struct Entry {
  std::string name;
  bool regular = false;  // a regular file, not followed through a link
};

// The entries of a folder but "." and "..", each marked whether it is a regular file.
std::vector<Entry> list_folder(const std::string& dir) {
  std::vector<Entry> out;
  for (const std::string& name : list_dir(dir)) {
    struct stat st;
    out.push_back({name, ::lstat((dir + "/" + name).c_str(), &st) == 0 && S_ISREG(st.st_mode)});
  }
  return out;
}

// The first entry of dir that prepare did not write, or "" when there is none.
std::string foreign_entry(const std::string& dir) {
  for (const auto& e : list_folder(dir))
    if (!e.regular || !prepare_owns_file_name(e.name)) return e.name;
  return "";
}

// Removes dir when it holds only files prepare writes; returns false (and leaves it as it
// is) when it holds anything else.
bool remove_prepare_folder(const std::string& dir) {
  if (!foreign_entry(dir).empty()) return false;
  for (const auto& e : list_folder(dir))
    MOEPP_CHECK(::unlink((dir + "/" + e.name).c_str()) == 0 || errno == ENOENT, dir, "/", e.name,
                ": cannot remove: ", errno_text());
  MOEPP_CHECK(::rmdir(dir.c_str()) == 0 || errno == ENOENT, dir, ": cannot remove: ", errno_text());
  return true;
}

// The process id in "<base>.tmp-<pid>.<n>" or "<base>.old-<pid>.<n>" (".<n>" optional),
// or -1 when `name` is not such a folder of base's.
long leftover_pid(const std::string& name, const std::string& base) {
  for (const std::string tag : {".tmp-", ".old-"}) {
    const std::string prefix = base + tag;
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    std::string rest = name.substr(prefix.size());
    const size_t dot = rest.find('.');
    if (dot != std::string::npos) {
      if (!all_digits(rest.substr(dot + 1))) return -1;
      rest = rest.substr(0, dot);
    }
    if (!all_digits(rest) || rest.size() > 9) return -1;
    return std::stol(rest);
  }
  return -1;
}

// Cleans up after earlier prepares into parent/base that died (their process is gone):
// their temporary and set-aside folders are removed, except that when OUT itself is
// missing (a crash between rename-aside and rename-in) a complete set-aside OUT is put
// back first. A folder holding anything prepare did not write is left alone. Returns
// whether OUT was put back.
bool clean_dead_leftovers(const std::string& parent, const std::string& base, bool out_exists) {
  bool restored = false;
  for (const auto& e : list_folder(parent)) {
    const long pid = leftover_pid(e.name, base);
    if (pid <= 0 || pid == long(::getpid()) || process_exists(pid)) continue;
    struct stat st;
    const std::string path = parent + "/" + e.name;
    if (::lstat(path.c_str(), &st) != 0 || !S_ISDIR(st.st_mode) || !foreign_entry(path).empty()) continue;
    const bool aside = e.name.compare(base.size(), 5, ".old-") == 0;
    if (aside && !out_exists && !restored && ::rename(path.c_str(), (parent + "/" + base).c_str()) == 0) {
      restored = true;
      continue;
    }
    remove_prepare_folder(path);
  }
  return restored;
}

std::string real_path(const std::string& path) {
  char buf[PATH_MAX];
  MOEPP_CHECK(::realpath(path.c_str(), buf), path, ": cannot resolve the path: ", errno_text());
  return buf;
}

// --out resolved: an absolute path with links resolved, split into parent and base.
struct OutFolder {
  std::string path, parent, base;
  bool exists = false;
};

OutFolder resolve_out(const std::string& given) {
  MOEPP_CHECK(!given.empty(), "prepare: --out is empty");
  OutFolder o;
  struct stat st;
  if (::stat(given.c_str(), &st) == 0) {  // follows a link to a folder: its target is replaced
    MOEPP_CHECK(S_ISDIR(st.st_mode), "prepare: --out ", given, " exists and is not a folder");
    o.path = real_path(given);
    o.exists = true;
  } else {
    MOEPP_CHECK(errno == ENOENT, "prepare: --out ", given, ": ", errno_text());
    std::string p = given;
    while (p.size() > 1 && p.back() == '/') p.pop_back();
    const size_t slash = p.rfind('/');
    const std::string parent = slash == std::string::npos ? "." : slash == 0 ? "/" : p.substr(0, slash);
    const std::string base = slash == std::string::npos ? p : p.substr(slash + 1);
    make_dirs(parent);
    const std::string real_parent = real_path(parent);
    o.path = (real_parent == "/" ? "" : real_parent) + "/" + base;
  }
  MOEPP_CHECK(o.path != "/", "prepare: --out ", given, " is the root folder");
  const size_t slash = o.path.rfind('/');
  o.parent = slash == 0 ? "/" : o.path.substr(0, slash);
  o.base = o.path.substr(slash + 1);
  // OUT is renamed and its old self removed: never the folder this process works in, nor
  // a mount point (which cannot be renamed), checked now rather than after the training.
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd))
    MOEPP_CHECK(o.path != cwd && std::string(cwd).rfind(o.path + "/", 0) != 0, "prepare: --out ", given,
                " is (or holds) the current folder; give prepare a folder of its own");
  if (o.exists) {
    struct stat parent_st;
    MOEPP_CHECK(::stat(o.parent.c_str(), &parent_st) == 0 && parent_st.st_dev == st.st_dev, "prepare: --out ", given,
                " is a mount point, which prepare cannot replace as a whole; give it a folder inside");
  }
  return o;
}

// Input files must be regular files (a device or a pipe is not a corpus), readable,
// not blank and UTF-8.
void check_input(const std::string& f) {
  struct stat st;
  MOEPP_CHECK(::stat(f.c_str(), &st) == 0, f, ": cannot open input file: ", errno_text());
  MOEPP_CHECK(S_ISREG(st.st_mode), f, ": the input is not a regular file");
  std::ifstream in(f, std::ios::binary);
  MOEPP_CHECK(in, f, ": cannot open input file: ", errno_text());
  std::ostringstream ss;
  ss << in.rdbuf();
  MOEPP_CHECK(!in.bad(), f, ": read error");
  const std::string text = ss.str();
  MOEPP_CHECK(text.find_first_not_of(" \t\r\n") != std::string::npos, f, ": the corpus file is empty");
  check_utf8(text, f);
}

// Writes tokenizer.model, train.bin, val.bin and data.json into dir (a fresh folder).
PrepareResult write_outputs(const PrepareOptions& opt, const std::string& dir) {
  const std::string model = dir + "/tokenizer.model";
  if (!opt.tokenizer_model.empty())
    copy_file_atomic(opt.tokenizer_model, model);
  else
    Tokenizer::train(opt.inputs, model, opt.vocab_size);
  const Tokenizer tok = [&] {
    try {
      return Tokenizer(model);
    } catch (const Error& e) {  // the file changed since it was checked
      fail(opt.tokenizer_model.empty() ? model : opt.tokenizer_model, ": not a SentencePiece model: ", e.what());
    }
  }();
  std::vector<int32_t> tokens;
  for (const auto& f : opt.inputs) {
    std::ifstream in(f, std::ios::binary);
    MOEPP_CHECK(in, f, ": cannot open input file: ", errno_text());
    std::string line;
    while (std::getline(in, line)) {
      if (line.find_first_not_of(" \t\r") == std::string::npos) continue;
      const auto ids = tok.encode(line + "\n");
      tokens.insert(tokens.end(), ids.begin(), ids.end());
    }
    MOEPP_CHECK(!in.bad(), f, ": read error");
    tokens.push_back(tok.eos_id() >= 0 ? tok.eos_id() : 0);
  }
  const size_t n_val = std::max<size_t>(1, size_t(double(tokens.size()) * opt.val_fraction));
  MOEPP_CHECK(tokens.size() > n_val + 1, "prepare: the corpus is too small (", tokens.size(), " tokens)");
  const std::vector<int32_t> train(tokens.begin(), tokens.end() - std::ptrdiff_t(n_val));
  const std::vector<int32_t> val(tokens.end() - std::ptrdiff_t(n_val), tokens.end());
  write_token_shard(dir + "/train.bin", train);
  write_token_shard(dir + "/val.bin", val);
  write_data_manifest(dir, DataManifest{file_stamp(model), tok.vocab_size(), train.size(), val.size()});
  return PrepareResult{train.size(), val.size(), tok.vocab_size()};
}

// Puts the complete folder tmp in out's place. After an exchange tmp holds the previous
// set, which the caller removes; with rename-aside it is `aside`.
void commit(const std::string& tmp, const OutFolder& out, const std::string& aside) {
  if (::rename(tmp.c_str(), out.path.c_str()) == 0) return;  // no OUT, or an empty one
  if (errno != EEXIST && errno != ENOTEMPTY)
    fail("prepare: cannot move ", tmp, " to ", out.path, ": ", errno_text());
  if (::renameat2(AT_FDCWD, tmp.c_str(), AT_FDCWD, out.path.c_str(), RENAME_EXCHANGE) == 0) return;
  if (errno != EINVAL && errno != ENOSYS)
    fail("prepare: cannot exchange ", tmp, " with ", out.path, ": ", errno_text());
  // No atomic exchange here: for a moment there is no OUT at all (a reader gets "no such
  // file", never a mix). A crash in that moment leaves both sets complete beside it.
  MOEPP_CHECK(::rename(out.path.c_str(), aside.c_str()) == 0, "prepare: cannot move ", out.path, " aside to ",
              aside, ": ", errno_text());
  if (::rename(tmp.c_str(), out.path.c_str()) != 0) {
    const std::string why = errno_text();
    ::rename(aside.c_str(), out.path.c_str());
    fail("prepare: cannot move ", tmp, " to ", out.path, ": ", why);
  }
}

}  // namespace

PrepareResult prepare_corpus(const PrepareOptions& opt) {
  // Everything that can be checked is checked before anything is created.
  MOEPP_CHECK(!opt.inputs.empty(), "prepare: no --input files");
  MOEPP_CHECK(opt.val_fraction > 0 && opt.val_fraction < 0.5, "prepare: --val-fraction ", opt.val_fraction,
              " must be in (0, 0.5)");
  if (opt.tokenizer_model.empty())
    MOEPP_CHECK(opt.vocab_size > 259, "prepare: --vocab-size ", opt.vocab_size,
                " is too small: byte fallback needs 259 pieces plus one per distinct character");
  for (const auto& f : opt.inputs) check_input(f);
  if (!opt.tokenizer_model.empty()) {
    try {
      Tokenizer probe(opt.tokenizer_model);
    } catch (const Error& e) {
      fail("prepare: --tokenizer ", opt.tokenizer_model, " is not a usable SentencePiece model: ", e.what());
    }
  }
  OutFolder out = resolve_out(opt.out_dir);
  if (clean_dead_leftovers(out.parent, out.base, out.exists)) out.exists = true;
  if (out.exists) {
    const std::string other = foreign_entry(out.path);
    MOEPP_CHECK(other.empty(), "prepare: --out ", opt.out_dir, " holds '", other,
                "', which prepare did not write; prepare replaces the folder as a whole: move it out or "
                "choose another --out");
  }

  static std::atomic<unsigned> counter{0};
  const std::string tag = std::to_string(::getpid()) + "." + std::to_string(counter++);
  const std::string tmp = out.parent + "/" + out.base + ".tmp-" + tag;
  const std::string aside = out.parent + "/" + out.base + ".old-" + tag;
  // An existing tmp of this name is a dead process's that had this process id.
  if (::mkdir(tmp.c_str(), 0755) != 0)
    MOEPP_CHECK(errno == EEXIST && remove_prepare_folder(tmp) && ::mkdir(tmp.c_str(), 0755) == 0,
                "prepare: cannot create ", tmp, ": ", errno_text());
  PrepareResult result;
  try {
    result = write_outputs(opt, tmp);
    sync_dir(tmp);
    commit(tmp, out, aside);
  } catch (...) {
    try {
      remove_prepare_folder(tmp);
    } catch (const Error&) {  // the first error is the one to report; a dead tmp goes next time
    }
    throw;
  }
  sync_dir(out.parent);
  // The previous set, if any: at tmp after an exchange, at aside after rename-aside.
  for (const std::string& old : {tmp, aside}) {
    struct stat st;
    if (::lstat(old.c_str(), &st) != 0) continue;
    if (!remove_prepare_folder(old))
      std::fprintf(stderr, "prepare: kept the previous %s as %s: it holds '%s', which prepare did not write\n",
                   out.path.c_str(), old.c_str(), foreign_entry(old).c_str());
  }
  return result;
}

}  // namespace moepp
