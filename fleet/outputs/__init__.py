"""What a run leaves on disk: files written atomically, never through a symlink, under a folder
lock (`files`), and its PNG plots on matplotlib Figures of their own, without pyplot (`plots`).
"""

from fleet.outputs.files import (
    RUN_FILES,
    RUN_FOLDERS,
    RoundsCsv,
    check_output_dir,
    folder_lock,
    prepare_output_dir,
    read_model,
    remove_tree,
    write_csv,
    write_json,
    write_model,
    write_text,
)
from fleet.outputs.plots import (
    plot_accuracy,
    plot_accuracy_bands,
    plot_accuracy_time,
    plot_bytes,
    plot_comparison,
    plot_seed_comparison,
    plot_staleness,
    plot_timeline,
    plot_timeline_rounds,
    plot_tradeoff,
    save_figure,
    subplots,
)

__all__ = [
    "RUN_FILES",
    "RUN_FOLDERS",
    "RoundsCsv",
    "check_output_dir",
    "folder_lock",
    "plot_accuracy",
    "plot_accuracy_bands",
    "plot_accuracy_time",
    "plot_bytes",
    "plot_comparison",
    "plot_seed_comparison",
    "plot_staleness",
    "plot_timeline",
    "plot_timeline_rounds",
    "plot_tradeoff",
    "prepare_output_dir",
    "read_model",
    "remove_tree",
    "save_figure",
    "subplots",
    "write_csv",
    "write_json",
    "write_model",
    "write_text",
]
