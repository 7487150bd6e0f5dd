// Detokenizer: the text of a sequence of token ids that grows one id at a time, equal at
// every length to the tokenizer's decode of all the ids, at a cost per id that does not
// grow with the sequence. Decoding all the ids again after each one made a generated
// token cost O(length): a server's step spent milliseconds on it with 16 sequences of a
// few hundred tokens, serially, while the decoder's other threads waited.
//
// Each new id decodes only a window: the last few ids already settled plus those after
// them. SentencePiece decodes piece by piece (a run of byte pieces as one UTF-8 string)
// and drops the leading space of the first piece that yields text, so the window's text
// minus the text of its settled ids is exactly what the new ids add to the whole. A
// window settles once its text ends in a whole character; a trailing U+FFFD (a character
// whose bytes are still coming as byte pieces) keeps it open. Anything that breaks the
// window's premise (its settled part decodes to nothing, or the window's text does not
// start with it) falls back to decoding everything, so the text is never wrong, only
// slower. Owns its ids; borrows the tokenizer, which must outlive it.
#pragma once
#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace moepp {

class Detokenizer {
 public:
  Detokenizer(const Tokenizer& tok, std::vector<int32_t> ids);  // decodes `ids` whole

  // Appends one id. Returns how many leading bytes of text() this left as they were (the
  // rest may have changed, not only grown: a byte piece can complete a character that
  // showed as U+FFFD).
  size_t push(int32_t id);

  const std::string& text() const { return text_; }  // == tok.decode(ids())
  const std::vector<int32_t>& ids() const { return ids_; }

 private:
  size_t decode_all();  // the fallback: text_ from every id; returns the unchanged prefix
  void settle();        // all of text_ is final; the next window starts at the last ids

  const Tokenizer* tok_;
  std::vector<int32_t> ids_;
  std::string text_;
  // text_[0, settled_) is final: no later id changes it. The window starts at
  // ids_[window_]; its settled ids (those up to the last settle) decode to window_text_.
  size_t settled_ = 0, window_ = 0;
  std::string window_text_;
};

}  // namespace moepp
