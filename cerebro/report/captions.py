"""One-line captions saying how to read each figure of the report, by the figure's file name."""

from __future__ import annotations

import re

__all__ = ["caption"]

_BY_SUFFIX = [
    (r"^drift_attributions$", "Rank correlation of each method's mean map with the previous periodic autopsy: "
                              "near 1 = the model's evidence has settled; dips = it changed what it looks at."),
    (r"^drift_dead_units$", "Mean fraction of dead units over layers at each periodic autopsy: a rise means units "
                            "are dying during training."),
    (r"^gallery_worst\d+$", "One of the worst samples with every method's map over its input (signals: the channels "
                           "as black traces over the |attribution| in red, a time-only layer map as a band behind "
                           "every channel; images: the input, then each method's blended heat map). Is the model "
                           "looking where it should when it fails?"),
    (r"^gallery_worst\d+_", "A worst-case sample (see the gallery table) with this method's map: is the model "
                            "looking where it should when it fails?"),
    (r"^spectral_integrated_gradients_frequency$", "Mean |attribution| over frequency (Hz) for the channels that "
                                                   "matter most, EEG bands shaded: a peak names the rhythm the score "
                                                   "reads; mass near 0 Hz, 50/60 Hz or Nyquist suggests an artefact."),
    (r"^spectral_integrated_gradients_channel_frequency$", "Mean |attribution| per channel and frequency (Hz): which "
                                                           "rhythm on which electrode."),
    (r"^spectral_integrated_gradients_bands$", "Mean |attribution| per frequency band, summed over channels."),
    (r"^spectral_integrated_gradients_topomap_", "Mean |attribution| in this band per electrode on the scalp: "
                                                 "where on the head this rhythm is read."),
    (r"^spectral_integrated_gradients_time_frequency$", "|attribution| over time (window centres, s) and frequency "
                                                        "(Hz), summed over channels: when and at which rhythm."),
    (r"^spectral_integrated_gradients_sample\d+$", "One sample's signed attribution per channel and frequency "
                                                   "(red raises the score, blue lowers it)."),
    (r"_heatmap$", "Mean |attribution| over the samples (channel x time for signals, pixels for images): bright "
                   "cells are the input values the explained score depends on most."),
    (r"_channels?$", "Mean |attribution| per channel (electrode): which input rows the score depends on."),
    (r"_topomap$", "Mean |attribution| per electrode on the scalp (montage positions): where on the head the "
                   "score comes from."),
    (r"_time$", "Mean |attribution| over time (averaged over channels): when in the window the score is "
                "decided; a peak marks the moment the model reads."),
    (r"_features$", "Mean |attribution| per input feature."),
    (r"_drop$", "Mean drop of the explained score when that part of the input is replaced by the baseline: "
                "large drops mark what the model needs."),
    (r"_sample\d+$", "One sample with its map: signals as black traces over the |attribution| (darker red = more "
                     "influence; time-only layer maps are a band behind every channel), images as a blended heat "
                     "map."),
    (r"^predictions_scatter$", "Prediction against label, one point per sample: points on the diagonal are right."),
    (r"^predictions_residuals$", "Histogram of the residuals (prediction - label) over the samples: centred on 0 "
                                 "and narrow is good; a peak off 0 is a bias, a long tail a group of failures."),
    (r"^predictions_confusion$", "Confusion matrix (sample counts): rows are true classes, columns predicted; "
                                 "off-diagonal cells are errors."),
    (r"^predictions_scores$", "Distribution of the explained score over the samples (no labels to compare with)."),
    (r"^gradients$", "Gradient norm of the loss per parameter tensor (log scale): tiny bars vanish, huge ones "
                     "explode."),
    (r"^activations_std$", "Standard deviation of each layer's output: near zero means the layer passes on almost "
                           "no information."),
    (r"^activations_zeros$", "Fraction of exactly-zero outputs per layer: high means dead units (when no layer "
                             "has a zero output the figure says so in one sentence)."),
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
