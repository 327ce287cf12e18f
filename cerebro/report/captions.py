"""One-line captions saying how to read each figure of the report, by the figure's file name."""

from __future__ import annotations

import re

__all__ = ["caption"]

_BY_SUFFIX = [
    (r"^drift_attributions$", "Rank correlation of each method's mean map with the previous periodic autopsy: "
                              "near 1 = the model's evidence has settled; dips = it changed what it looks at."),
    (r"^drift_dead_units$", "Mean fraction of dead units over layers at each periodic autopsy: a rise means units "
                            "are dying during training."),
    (r"^gallery_worst\d+_", "A worst-case sample (see the gallery table) with this method's map: is the model "
                            "looking where it should when it fails?"),
    (r"_heatmap$", "Mean |attribution| over the samples: bright cells are the input values the explained score "
                   "depends on most."),
    (r"_channels?$", "Mean |attribution| per channel (electrode): which input rows the score depends on."),
    (r"_topomap$", "Mean |attribution| per electrode on the scalp (montage positions): where on the head the "
                   "score comes from."),
    (r"_time$", "Mean |attribution| over time: when in the window the score is decided."),
    (r"_features$", "Mean |attribution| per input feature."),
    (r"_drop$", "Mean drop of the explained score when that part of the input is replaced by the baseline: "
                "large drops mark what the model needs."),
    (r"_sample\d+$", "One sample with its map (absolute values; brighter = more influence on the score)."),
    (r"^predictions_scatter$", "Prediction against label, one point per sample: points on the diagonal are right."),
    (r"^predictions_residuals$", "Residual (prediction - label) against label: a slope means predictions are "
                                 "pulled towards the mean."),
    (r"^predictions_confusion$", "Confusion matrix: rows are true classes, columns predicted; off-diagonal cells "
                                 "are errors."),
    (r"^predictions_scores$", "Distribution of the explained score over the samples (no labels to compare with)."),
    (r"^gradients$", "Gradient norm of the loss per parameter tensor (log scale): tiny bars vanish, huge ones "
                     "explode."),
    (r"^activations_std$", "Standard deviation of each layer's output: near zero means the layer passes on almost "
                           "no information."),
    (r"^activations_zeros$", "Fraction of exactly-zero outputs per layer: high means dead units."),
    (r"^failure_modes_by_bin$", "Mean error per bin of the label: where along the target range the model fails."),
    (r"^failure_modes_by_class$", "Error rate per true class."),
    (r"^failure_modes_worst$", "Error of the worst samples (dataset index on the axis)."),
    (r"^failure_modes_by_", "Mean error per value of a metadata field: which groups of samples fail."),
    (r"^sanity_checks_randomization$", "Rank correlation of each method's maps with its original maps as layers "
                                       "are randomized from the output down: a curve that stays high means the "
                                       "method does not depend on the model (Adebayo et al. 2018)."),
]


def caption(stem: str) -> str:
    """How to read the figure ``figures/<stem>.png``."""
    for pattern, text in _BY_SUFFIX:
        if re.search(pattern, stem):
            return text
    return ""
