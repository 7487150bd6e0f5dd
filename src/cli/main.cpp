// moepp: train, evaluate and run MoE++ language models. `moepp <command> --help` for each.
#include <cstdio>

#include "cli/commands.h"
#include "core/error.h"

int main(int argc, char** argv) {
  CLI::App app{
      "moepp - an engine for MoE++ language models (mixture of experts with zero-computation experts)\n"
      "Typical use: moepp prepare -> moepp train -> moepp eval / generate"};
  app.require_subcommand(1);
  // CLI11's own errors (a missing option, a value a check refused) in moepp's shape: one
  // line, "error: COMMAND: ...", so that scripts see every failure the same way.
  app.failure_message([](const CLI::App* a, const CLI::Error& e) {
    const auto used = a->get_subcommands();
    return "error: " + (used.empty() ? std::string() : used.front()->get_name() + ": ") + e.what() + "\n";
  });
  app.set_help_all_flag("--help-all", "Help for every command");
  app.set_version_flag("--version", moepp::cli::version_text(), "Version, commit, GEMM provider and CPU features");
  moepp::cli::add_prepare(app);
  moepp::cli::add_train(app);
  moepp::cli::add_eval(app);
  moepp::cli::add_generate(app);
  moepp::cli::add_logits(app);
  moepp::cli::add_grad(app);
  moepp::cli::add_info(app);
  moepp::cli::add_compare(app);
  moepp::cli::add_convert(app);
  moepp::cli::add_experiment(app);
  moepp::cli::add_analyze(app);
  moepp::cli::add_tokenize(app);
  moepp::cli::add_plot(app);
  moepp::cli::add_serve(app);
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    return app.exit(e);
  } catch (const moepp::Error& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "error: %s\n", e.what());
    return 1;
  }
  return 0;
}
