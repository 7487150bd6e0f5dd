// Drawing with gnuplot (Debian's gnuplot-nox), shared by every plot moepp makes. A plot is
// written as its data (NAME.tsv, or data files the script names) and its script (NAME.gp)
// next to the PNG, so a figure can be redrawn or restyled without rerunning anything;
// without gnuplot the data and scripts are still written and the caller is told no PNG
// was made.
#pragma once
#include <string>
#include <vector>

namespace moepp {

// What a plotting call wrote: the .gp scripts, and the PNGs drawn (empty without gnuplot).
struct PlotResult {
  std::vector<std::string> written;
  std::vector<std::string> pngs;
};

bool gnuplot_available();

// The script's first lines: a PNG terminal of this size writing NAME.png, tab-separated
// data, a light grid.
std::string gnuplot_header(const std::string& name, int width, int height);

// Text as a gnuplot string body inside double quotes: SentencePiece's word mark shown as
// '_', quotes and backslashes escaped, tabs and newlines as spaces.
std::string gnuplot_text(const std::string& text);

// Writes NAME.tsv (unless `tsv` is empty: the script reads other files) and NAME.gp into
// dir and draws NAME.png when gnuplot is there.
void draw_plot(const std::string& dir, const std::string& name, const std::string& tsv, const std::string& script,
               PlotResult& r);

}  // namespace moepp
