#include "study/gnuplot.h"

#include <cstdio>
#include <cstdlib>
#include <sstream>

#include "core/error.h"
#include "io/atomic_file.h"

namespace moepp {

bool gnuplot_available() {
  static const bool found = std::system("command -v gnuplot >/dev/null 2>&1") == 0;
  return found;
}

std::string gnuplot_header(const std::string& name, int width, int height) {
  std::ostringstream s;
  s << "set terminal pngcairo size " << width << "," << height << " noenhanced font 'sans,10'\n"
    << "set output '" << name << ".png'\n"
    << "set datafile separator '\\t'\n"
    << "set grid ytics\n";
  return s.str();
}

std::string gnuplot_text(const std::string& text) {
  std::string out;
  for (size_t i = 0; i < text.size(); ++i) {
    if (text.compare(i, 3, "\xE2\x96\x81") == 0) {
      out += '_';
      i += 2;
    } else if (text[i] == '"' || text[i] == '\\') {
      out += '\\';
      out += text[i];
    } else if (text[i] == '\t' || text[i] == '\n') {
      out += ' ';
    } else {
      out += text[i];
    }
  }
  return out;
}

void draw_plot(const std::string& dir, const std::string& name, const std::string& tsv, const std::string& script,
               PlotResult& r) {
  MOEPP_CHECK(dir.find('\'') == std::string::npos, "plots: folder name with a quote: ", dir);
  make_dirs(dir);
  if (!tsv.empty()) write_file_atomic(dir + "/" + name + ".tsv", tsv);
  write_file_atomic(dir + "/" + name + ".gp", script);
  r.written.push_back(dir + "/" + name + ".gp");
  if (!gnuplot_available()) return;
  const std::string cmd = "cd '" + dir + "' && gnuplot '" + name + ".gp' 2>> gnuplot.log";
  if (std::system(cmd.c_str()) == 0) r.pngs.push_back(dir + "/" + name + ".png");
  else std::fprintf(stderr, "plots: gnuplot failed on %s/%s.gp (see %s/gnuplot.log)\n", dir.c_str(), name.c_str(), dir.c_str());
}

}  // namespace moepp
