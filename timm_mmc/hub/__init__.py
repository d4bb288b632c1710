"""Release timm-mmc weights the way timm users expect them: Hub repos with safetensors, timm's config and a card.

One module per responsibility:

* :mod:`~timm_mmc.hub.common`: the release folder's layout, :class:`HubError`, reading its files;
* :mod:`~timm_mmc.hub.release`: export from a training run and its evaluation report, with its self-check;
* :mod:`~timm_mmc.hub.card` (+ :mod:`~timm_mmc.hub.card_eval`, :mod:`~timm_mmc.hub.paper`): the model card from
  the template and prose in ``timm_mmc/cards/``;
* :mod:`~timm_mmc.hub.modelindex`: the model-index's fixed metric vocabulary;
* :mod:`~timm_mmc.hub.robustbench`: ``results/robustbench.json``;
* :mod:`~timm_mmc.hub.plot`: ``results/robust_accuracy.png`` (through :mod:`timm_mmc.plot`);
* :mod:`~timm_mmc.hub.table`: the README's results table;
* :mod:`~timm_mmc.hub.curve`: a run's learning curve, for ``docs/recipes.md``;
* :mod:`~timm_mmc.hub.runs`: runs in one table (what each changed, time, accuracy), for ``docs/recipes.md``;
* :mod:`~timm_mmc.hub.push` and :mod:`~timm_mmc.hub.cache`: the Hub upload and the local HF cache;
* :mod:`~timm_mmc.hub.cli`: ``python -m timm_mmc.hub export|card|push|table|curve|runs|cache``.

The evaluation report is read only through :mod:`timm_mmc.report`.
"""
from .cache import build_hf_cache
from .card import render_card, write_card
from .cli import main
from .common import (CARD_FILE, CONFIG_FILE, EVAL_FILE, PICKLE_SUFFIXES, PLOT_FILE, ROBUSTBENCH_FILE, WEIGHTS_FILE,
                     HubError)
from .curve import compare_curves, learning_curve
from .modelindex import eval_results
from .plot import write_plot
from .push import check_release, push, release_files
from .release import export, read_run, write_side_files
from .robustbench import model_info, write_robustbench
from .runs import runs_table
from .table import RESULTS_COLUMNS, results_table

__all__ = ['HubError', 'export', 'read_run', 'render_card', 'write_card', 'write_plot', 'write_robustbench',
           'write_side_files', 'model_info', 'eval_results', 'push', 'check_release', 'release_files',
           'build_hf_cache', 'results_table', 'learning_curve', 'compare_curves', 'runs_table', 'RESULTS_COLUMNS',
           'main', 'WEIGHTS_FILE', 'CONFIG_FILE', 'CARD_FILE', 'EVAL_FILE', 'PLOT_FILE', 'ROBUSTBENCH_FILE',
           'PICKLE_SUFFIXES']
