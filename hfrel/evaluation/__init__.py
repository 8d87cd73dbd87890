"""Measure explanations the way the paper did: segmentation, localisation and perturbation tests.

    from hfrel import evaluation

    data = evaluation.FolderDataset("my_data")  # images/, masks/, labels.csv
    report = evaluation.evaluate(model, processor, data, method=["transformer_attribution", "rollout"])
    evaluation.write_report(report, "out")  # report.json, report.md, perturbation.png

The metric functions work on any batch of maps and masks, and the perturbation test on any callable
that returns logits; docs/evaluation.md states every protocol exactly as implemented.
"""

from hfrel._images import model_view
from hfrel.evaluation._data import (
    EvaluationData,
    FolderDataset,
    ImagenetSegmentation,
    Sample,
    SceneData,
    Skipped,
    open_dataset,
    read_mask,
)
from hfrel.evaluation._metrics import (
    LocalisationScores,
    average_precision,
    foreground,
    localisation_scores,
    map_correlation,
    otsu_threshold,
    pointing_game,
    prepare,
    rank_accuracy,
    relevance_mass,
    segmentation_average_precision,
)
from hfrel.evaluation._perturbation import STEPS, normaliser, perturbation_auc, perturbation_hits, removed_counts
from hfrel.evaluation._report import markdown_table, perturbation_figure, write_report
from hfrel.evaluation._runner import evaluate

__all__ = [
    "STEPS",
    "EvaluationData",
    "FolderDataset",
    "ImagenetSegmentation",
    "LocalisationScores",
    "Sample",
    "SceneData",
    "Skipped",
    "average_precision",
    "evaluate",
    "foreground",
    "localisation_scores",
    "map_correlation",
    "markdown_table",
    "model_view",
    "normaliser",
    "open_dataset",
    "otsu_threshold",
    "perturbation_auc",
    "perturbation_figure",
    "perturbation_hits",
    "pointing_game",
    "prepare",
    "rank_accuracy",
    "read_mask",
    "relevance_mass",
    "removed_counts",
    "segmentation_average_precision",
    "write_report",
]
