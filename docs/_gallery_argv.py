"""Command-line arguments of the gallery examples while the documentation is built.

sphinx-gallery runs each example in the build's process with ``sys.argv`` reset to
``[script] + reset_argv(...)``; the two examples whose sizes are options get their small
ones here (see ``docs/conf.py``). A module, not a function of conf.py, so that Sphinx can
pickle the configuration.
"""
from pathlib import Path

GALLERY_ARGV = {
    "demo.py": ["--quick"],
    "text_classification.py": ["--tfidf", "--n-docs", "2000"],
}


def reset_argv(gallery_conf, script_vars):
    return list(GALLERY_ARGV.get(Path(script_vars["src_file"]).name, []))
