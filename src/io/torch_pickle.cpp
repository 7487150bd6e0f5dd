#include "io/torch_pickle.h"

#include <cstring>
#include <deque>
#include <map>

#include "core/error.h"

namespace moepp {

namespace {

// Values live in the unpickler's arena and refer to each other by plain pointers: a
// self-referencing list (APPEND of a list to itself through the memo) or a deeply nested
// tuple costs no leak and no recursive destructor, whatever the stream does.
struct Value {
  enum Kind : uint8_t { none, boolean, integer, floating, str, tuple, list, dict, global, storage, tensor, mark };
  Kind kind = none;
  int32_t depth = 0;  // containers: 1 + the deepest item when it was added
  int64_t i = 0;      // integer, boolean
  std::string s;      // str; global "module.name"
  std::vector<Value*> items;
  std::vector<std::pair<Value*, Value*>> entries;
  TorchTensorRef* t = nullptr;  // global (dtype), storage (dtype, key, numel) and tensor
};
using Ptr = Value*;

// The globals a state dict needs; storage classes carry their element type.
bool allowed_global(const std::string& g, DType* dtype) {
  static const std::map<std::string, DType> storages = {
      {"torch.FloatStorage", DType::f32}, {"torch.DoubleStorage", DType::f64}, {"torch.HalfStorage", DType::f16},
      {"torch.BFloat16Storage", DType::bf16}, {"torch.LongStorage", DType::i64}, {"torch.IntStorage", DType::i32},
      {"torch.ByteStorage", DType::u8}};
  const auto it = storages.find(g);
  if (it != storages.end()) {
    *dtype = it->second;
    return true;
  }
  return g == "collections.OrderedDict" || g == "torch._utils._rebuild_tensor_v2" ||
         g == "torch._utils._rebuild_parameter";
}

class Unpickler {
 public:
  Unpickler(const uint8_t* d, size_t n, std::string src) : d_(d), n_(n), src_(std::move(src)) {
    MOEPP_CHECK(n <= kPickleMaxBytes, src_, ": data.pkl of ", n, " bytes is larger than the ", kPickleMaxBytes,
                " bytes a state dict's pickle may have");
  }

  Ptr run() {
    for (uint64_t ops = 0;; ++ops) {
      const size_t at = pos_;
      check(ops < kPickleMaxOps, at, "more than ", kPickleMaxOps, " opcodes (a state dict needs far fewer)");
      check(stack_.size() < kPickleMaxStack, at, "the stack holds more than ", kPickleMaxStack, " values");
      const uint8_t op = byte();
      switch (op) {
        case 0x80: byte(); break;                    // PROTO
        case 0x95: bytes(8); break;                  // FRAME (protocol 4)
        case '}': push(make(Value::dict)); break;    // EMPTY_DICT
        case ']': push(make(Value::list)); break;    // EMPTY_LIST
        case ')': push(make(Value::tuple)); break;   // EMPTY_TUPLE
        case '(': push(make(Value::mark)); break;    // MARK
        case 'N': push(make(Value::none)); break;    // NONE
        case 0x88: case 0x89: {                      // NEWTRUE / NEWFALSE
          auto v = make(Value::boolean);
          v->i = op == 0x88;
          push(v);
          break;
        }
        case 'K': push_int(int64_t(uint_le(1))); break;  // BININT1
        case 'M': push_int(int64_t(uint_le(2))); break;  // BININT2
        case 'J': push_int(int64_t(int32_t(uint32_t(uint_le(4))))); break;  // BININT
        case 0x8a: {                                 // LONG1
          const size_t len = byte();
          check(len <= 8, at, "LONG1 of ", len, " bytes");
          const uint8_t* p = bytes(len);
          uint64_t v = 0;
          for (size_t k = len; k-- > 0;) v = (v << 8) | p[k];
          if (len > 0 && len < 8 && (p[len - 1] & 0x80)) v |= ~uint64_t(0) << (8 * len);
          push_int(int64_t(v));
          break;
        }
        case 'G': {                                  // BINFLOAT (big-endian)
          bytes(8);  // a state dict holds no floats that matter; the value is kept as a kind only
          push(make(Value::floating));
          break;
        }
        case 'X': push_str(size_t(uint_le(4))); break;  // BINUNICODE
        case 0x8c: push_str(byte()); break;             // SHORT_BINUNICODE
        case 'c': {                                     // GLOBAL "module\nname\n"
          const std::string module = line(), name = line();
          push_global(module + "." + name, at);
          break;
        }
        case 0x93: {                                    // STACK_GLOBAL
          const Ptr name = pop(), module = pop();
          check(name->kind == Value::str && module->kind == Value::str, at, "STACK_GLOBAL of non-strings");
          check(name->s.size() + module->s.size() < 256, at, "STACK_GLOBAL of a ", name->s.size() + module->s.size(),
                "-byte name");
          push_global(module->s + "." + name->s, at);
          break;
        }
        case 'q': memo_put(uint_le(1), at); break;       // BINPUT
        case 'r': memo_put(uint_le(4), at); break;       // LONG_BINPUT
        case 'h': case 'j': {                           // BINGET / LONG_BINGET
          const uint64_t k = uint_le(op == 'h' ? 1 : 4);
          const auto it = memo_.find(k);
          check(it != memo_.end(), at, "memo key ", k, " was never stored");
          push(it->second);
          break;
        }
        case 't': {                                     // TUPLE
          auto v = make(Value::tuple);
          v->items = pop_to_mark(at);
          for (const Ptr x : v->items) deepen(v, x, at);
          push(v);
          break;
        }
        case 0x85: case 0x86: case 0x87: {              // TUPLE1..3
          auto v = make(Value::tuple);
          v->items.resize(size_t(op - 0x84));
          for (size_t k = v->items.size(); k-- > 0;) v->items[k] = pop();
          for (const Ptr x : v->items) deepen(v, x, at);
          push(v);
          break;
        }
        case 'a': {                                     // APPEND
          const Ptr x = pop();
          const Ptr l = list_at(top(at), at);
          deepen(l, x, at);
          l->items.push_back(x);
          break;
        }
        case 'e': {                                     // APPENDS
          auto xs = pop_to_mark(at);
          auto l = list_at(top(at), at);
          for (const Ptr x : xs) deepen(l, x, at);
          l->items.insert(l->items.end(), xs.begin(), xs.end());
          break;
        }
        case 's': {                                     // SETITEM
          const Ptr v = pop(), k = pop();
          const Ptr dct = dict_at(top(at), at);
          deepen(dct, k, at);
          deepen(dct, v, at);
          dct->entries.emplace_back(k, v);
          break;
        }
        case 'u': {                                     // SETITEMS
          auto xs = pop_to_mark(at);
          check(xs.size() % 2 == 0, at, "SETITEMS with an odd number of items");
          auto dct = dict_at(top(at), at);
          for (size_t k = 0; k < xs.size(); k += 2) {
            deepen(dct, xs[k], at);
            deepen(dct, xs[k + 1], at);
            dct->entries.emplace_back(xs[k], xs[k + 1]);
          }
          break;
        }
        case 'Q': {                                     // BINPERSID
          push(persistent(pop(), at));
          break;
        }
        case 'R': {                                     // REDUCE
          const Ptr args = pop(), fn = pop();
          push(reduce(fn, args, at));
          break;
        }
        case 'b': {                                     // BUILD: an OrderedDict's _metadata
          pop();
          check(top(at)->kind == Value::dict || top(at)->kind == Value::tensor, at, "BUILD on an unexpected object");
          break;
        }
        case '.': {                                     // STOP
          check(stack_.size() == 1, at, "STOP with ", stack_.size(), " values on the stack");
          return stack_.back();
        }
        default:
          fail(src_, ": data.pkl byte ", at, ": opcode 0x", hex(op), " is not allowed in a state dict");
      }
    }
  }

 private:
  template <typename... A>
  void check(bool ok, size_t at, const A&... msg) {
    if (!ok) fail(src_, ": data.pkl byte ", at, ": ", msg...);
  }
  static std::string hex(uint8_t b) {
    const char* h = "0123456789abcdef";
    return std::string{h[b >> 4], h[b & 15]};
  }
  uint8_t byte() {
    if (pos_ >= n_) fail(src_, ": data.pkl ends at byte ", n_, " in the middle of the stream (truncated?)");
    return d_[pos_++];
  }
  const uint8_t* bytes(size_t k) {
    if (k > n_ - pos_) fail(src_, ": data.pkl ends at byte ", n_, " in the middle of the stream (truncated?)");
    const uint8_t* p = d_ + pos_;
    pos_ += k;
    return p;
  }
  uint64_t uint_le(size_t k) {
    const uint8_t* p = bytes(k);
    uint64_t v = 0;
    for (size_t j = k; j-- > 0;) v = (v << 8) | p[j];
    return v;
  }
  std::string line() {
    std::string s;
    for (char c; (c = char(byte())) != '\n';) {
      if (s.size() >= 256) fail(src_, ": data.pkl byte ", pos_, ": a GLOBAL name longer than 256 bytes");
      s.push_back(c);
    }
    return s;
  }
  Ptr make(Value::Kind k) {
    if (values_.size() >= kPickleMaxValues)
      fail(src_, ": data.pkl byte ", pos_, ": more than ", kPickleMaxValues, " values (a state dict needs far fewer)");
    values_.emplace_back();
    values_.back().kind = k;
    return &values_.back();
  }
  // Tensor descriptions live apart from the values: most values are small, and a value
  // flood must cost ~100 bytes a value, not the size of a tensor description.
  TorchTensorRef* make_ref() {
    refs_.emplace_back();
    return &refs_.back();
  }
  // A container holding x is one level deeper than x; the limit bounds every walk over values.
  void deepen(Ptr container, Ptr x, size_t at) {
    container->depth = std::max(container->depth, x->depth + 1);
    check(container->depth <= kPickleMaxDepth, at, "values nested deeper than ", kPickleMaxDepth,
          " levels (a state dict needs 4)");
  }
  void memo_put(uint64_t key, size_t at) {
    check(memo_.size() < kPickleMaxValues || memo_.count(key), at, "more than ", kPickleMaxValues, " memo entries");
    memo_[key] = top(at);
  }
  void push(Ptr v) { stack_.push_back(v); }
  void push_int(int64_t i) {
    auto v = make(Value::integer);
    v->i = i;
    push(v);
  }
  void push_str(size_t len) {
    auto v = make(Value::str);
    const uint8_t* p = bytes(len);
    v->s.assign(reinterpret_cast<const char*>(p), len);
    push(v);
  }
  void push_global(const std::string& g, size_t at) {
    DType dt = DType::f32;
    check(allowed_global(g, &dt), at, "global ", g,
          " is not allowed (only what a state dict needs); it was refused, nothing was executed");
    auto v = make(Value::global);
    v->s = g;
    v->t = make_ref();
    v->t->dtype = dt;
    push(v);
  }
  Ptr pop() {
    if (stack_.empty() || stack_.back()->kind == Value::mark)
      fail(src_, ": data.pkl byte ", pos_, ": stack underflow");
    Ptr v = stack_.back();
    stack_.pop_back();
    return v;
  }
  Ptr top(size_t at) {
    check(!stack_.empty(), at, "empty stack");
    return stack_.back();
  }
  std::vector<Ptr> pop_to_mark(size_t at) {
    size_t m = stack_.size();
    while (m > 0 && stack_[m - 1]->kind != Value::mark) --m;
    check(m > 0, at, "no MARK on the stack");
    std::vector<Ptr> xs(stack_.begin() + std::ptrdiff_t(m), stack_.end());
    stack_.resize(m - 1);
    return xs;
  }
  Ptr list_at(Ptr v, size_t at) {
    check(v->kind == Value::list, at, "APPEND to a non-list");
    return v;
  }
  Ptr dict_at(Ptr v, size_t at) {
    check(v->kind == Value::dict, at, "SETITEM on a non-dict");
    return v;
  }
  static std::vector<int64_t> ints(const Ptr& v, bool* ok) {
    std::vector<int64_t> out;
    *ok = v->kind == Value::tuple;
    for (const auto& x : v->items) {
      if (x->kind != Value::integer) *ok = false;
      out.push_back(x->i);
    }
    return out;
  }
  // ('storage', <StorageClass>, key, location, numel)
  Ptr persistent(const Ptr& pid, size_t at) {
    check(pid->kind == Value::tuple && pid->items.size() == 5 && pid->items[0]->kind == Value::str &&
              pid->items[0]->s == "storage" && pid->items[1]->kind == Value::global &&
              pid->items[2]->kind == Value::str && pid->items[4]->kind == Value::integer,
          at, "persistent id is not ('storage', type, key, location, numel)");
    check(pid->items[1]->s.find("Storage") != std::string::npos, at, "persistent id names ", pid->items[1]->s,
          ", not a storage class");
    auto v = make(Value::storage);
    v->t = make_ref();
    v->t->dtype = pid->items[1]->t->dtype;
    v->t->storage_key = pid->items[2]->s;
    v->t->storage_numel = pid->items[4]->i;
    check(v->t->storage_numel >= 0, at, "negative storage size");
    return v;
  }
  Ptr reduce(const Ptr& fn, const Ptr& args, size_t at) {
    check(fn->kind == Value::global && args->kind == Value::tuple, at, "REDUCE of a non-callable");
    if (fn->s == "collections.OrderedDict") {
      check(args->items.empty(), at, "OrderedDict with arguments");
      return make(Value::dict);
    }
    if (fn->s == "torch._utils._rebuild_parameter") {
      check(!args->items.empty() && args->items[0]->kind == Value::tensor, at, "_rebuild_parameter without a tensor");
      return args->items[0];
    }
    if (fn->s == "torch._utils._rebuild_tensor_v2") {
      const auto& a = args->items;
      check(a.size() >= 4 && a[0]->kind == Value::storage && a[1]->kind == Value::integer, at,
            "_rebuild_tensor_v2 arguments are not (storage, offset, size, stride, ...)");
      auto v = make(Value::tensor);
      v->t = make_ref();
      *v->t = *a[0]->t;
      v->t->offset = a[1]->i;
      bool ok1 = false, ok2 = false;
      v->t->shape = ints(a[2], &ok1);
      v->t->stride = ints(a[3], &ok2);
      check(ok1 && ok2 && v->t->shape.size() == v->t->stride.size(), at, "tensor size/stride are not integer tuples of one rank");
      return v;
    }
    fail(src_, ": data.pkl byte ", at, ": REDUCE of ", fn->s, " is not allowed");
  }

  const uint8_t* d_;
  size_t n_, pos_ = 0;
  std::string src_;
  std::deque<Value> values_;  // owns every value; pointers into a deque stay valid
  std::deque<TorchTensorRef> refs_;  // globals, storages and tensors: at most one per value
  std::vector<Ptr> stack_;
  std::map<uint64_t, Ptr> memo_;
};

}  // namespace

std::vector<TorchTensorRef> parse_state_dict_pickle(const uint8_t* data, size_t size, const std::string& source) {
  Unpickler u(data, size, source);
  const Ptr root = u.run();
  MOEPP_CHECK(root->kind == Value::dict, source, ": data.pkl does not hold a dict (not a state dict)");
  std::vector<TorchTensorRef> out;
  for (const auto& [k, v] : root->entries) {
    MOEPP_CHECK(k->kind == Value::str, source, ": a state-dict key is not a string");
    MOEPP_CHECK(v->kind == Value::tensor, source, ": state-dict entry ", k->s, " is not a tensor");
    TorchTensorRef t = *v->t;
    t.name = k->s;
    out.push_back(std::move(t));
  }
  return out;
}

}  // namespace moepp
